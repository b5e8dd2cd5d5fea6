//! The pcap writer: every packet in and out, as raw IP (`LINKTYPE_RAW`), through smoltcp's
//! `PcapSink`, flushed per packet so a reader on a FIFO (live Wireshark) sees it at once.
//! A write error stops the capture with one warning; it never stops the stack.

use crate::stack::{PacketObserver, Verdict};
use smoltcp::phy::{PcapLinkType, PcapSink};
use smoltcp::time::Instant;
use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Which clock stamps the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcapClock {
    /// Wall-clock time (UTC), so Wireshark shows real dates. The default.
    Wall,
    /// The stack's own `now` (seconds since it started; virtual in tests).
    Stack,
}

/// A [`PacketObserver`] that writes a pcap capture of every packet.
///
/// ```no_run
/// use tunstack::{Stack, StackConfig, phy::MemoryLink, pcap::PcapObserver};
/// use tunstack::smoltcp::time::Instant;
///
/// let (mut device, _peer) = MemoryLink::pair(1500);
/// let stack = Stack::new(StackConfig::default(), &mut device, Instant::ZERO);
/// // For a live view: `mkfifo /tmp/t.pcap; wireshark -k -i /tmp/t.pcap`.
/// let pcap = PcapObserver::create("/tmp/t.pcap")?;
/// stack.set_observer(Box::new(pcap));
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct PcapObserver {
    /// `None` once a write failed.
    sink: Option<GuardedSink>,
    clock: PcapClock,
    name: String,
}

impl PcapObserver {
    /// Creates (or truncates) the file at `path` and writes the pcap header. On a FIFO this
    /// blocks until a reader opens the other end, like `tcpdump -w`.
    pub fn create(path: impl AsRef<Path>) -> io::Result<PcapObserver> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        PcapObserver::new(BufWriter::new(file), path.display().to_string())
    }

    /// Writes the pcap header to `writer`; records follow as packets pass. `name` says what
    /// the writer is in the warning if writing fails.
    pub fn new(writer: impl Write + 'static, name: impl Into<String>) -> io::Result<PcapObserver> {
        let mut sink = GuardedSink {
            writer: Box::new(writer),
            error: None,
        };
        sink.global_header(PcapLinkType::Ip);
        PcapSink::flush(&mut sink);
        if let Some(err) = sink.error.take() {
            return Err(err);
        }
        Ok(PcapObserver {
            sink: Some(sink),
            clock: PcapClock::Wall,
            name: name.into(),
        })
    }

    /// Stamps records with `clock` instead of wall-clock time.
    pub fn with_clock(mut self, clock: PcapClock) -> PcapObserver {
        self.clock = clock;
        self
    }

    /// False once a write failed and the capture stopped.
    pub fn is_writing(&self) -> bool {
        self.sink.is_some()
    }

    fn record(&mut self, now: Instant, packet: &[u8]) {
        let Some(sink) = self.sink.as_mut() else {
            return;
        };
        let stamp = match self.clock {
            PcapClock::Wall => wall_clock(),
            PcapClock::Stack => now,
        };
        // smoltcp's packet header `unwrap`s the length into a u32; no IP packet is that long.
        if u32::try_from(packet.len()).is_err() {
            return;
        }
        sink.packet(stamp, packet);
        if let Some(err) = sink.error.take() {
            log::warn!("pcap: writing {} failed: {err}; capture stopped", self.name);
            self.sink = None;
        }
    }
}

impl PacketObserver for PcapObserver {
    fn inbound(&mut self, now: Instant, packet: &[u8], _verdict: &Verdict) {
        self.record(now, packet);
    }

    fn outbound(&mut self, now: Instant, packet: &[u8]) {
        self.record(now, packet);
    }
}

/// The time since the Unix epoch as a smoltcp `Instant` (what pcap records carry).
fn wall_clock() -> Instant {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Instant::from_micros(i64::try_from(since_epoch.as_micros()).unwrap_or(i64::MAX))
}

/// A `PcapSink` that keeps the first I/O error instead of panicking like smoltcp's blanket
/// `impl PcapSink for W: Write` does. Nothing more is written after an error.
struct GuardedSink {
    writer: Box<dyn Write>,
    error: Option<io::Error>,
}

impl PcapSink for GuardedSink {
    fn write(&mut self, data: &[u8]) {
        if self.error.is_none()
            && let Err(err) = Write::write_all(&mut self.writer, data)
        {
            self.error = Some(err);
        }
    }

    fn flush(&mut self) {
        if self.error.is_none()
            && let Err(err) = Write::flush(&mut self.writer)
        {
            self.error = Some(err);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// A writer that keeps bytes in memory and can be told to fail.
    #[derive(Clone, Default)]
    struct Shared {
        bytes: Rc<RefCell<Vec<u8>>>,
        broken: Rc<RefCell<bool>>,
    }

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if *self.broken.borrow() {
                return Err(io::Error::from(io::ErrorKind::BrokenPipe));
            }
            self.bytes.borrow_mut().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn u32_at(bytes: &[u8], at: usize) -> u32 {
        let word: [u8; 4] = bytes[at..at + 4].try_into().unwrap();
        u32::from_ne_bytes(word)
    }

    #[test]
    fn header_and_records_are_libpcap_raw_ip() {
        let shared = Shared::default();
        let mut pcap = PcapObserver::new(shared.clone(), "memory")
            .unwrap()
            .with_clock(PcapClock::Stack);
        pcap.outbound(Instant::from_micros(1_500_001), &[0x45, 1, 2]);
        let bytes = shared.bytes.borrow().clone();
        assert_eq!(bytes.len(), 24 + 16 + 3);
        assert_eq!(u32_at(&bytes, 0), 0xa1b2_c3d4);
        assert_eq!(u32_at(&bytes, 20), 101, "LINKTYPE_RAW");
        assert_eq!(u32_at(&bytes, 24), 1, "seconds");
        assert_eq!(u32_at(&bytes, 28), 500_001, "microseconds");
        assert_eq!(u32_at(&bytes, 32), 3, "captured length");
        assert_eq!(u32_at(&bytes, 36), 3, "original length");
        assert_eq!(&bytes[40..], &[0x45, 1, 2]);
    }

    #[test]
    fn wall_clock_stamps_are_recent() {
        let shared = Shared::default();
        let mut pcap = PcapObserver::new(shared.clone(), "memory").unwrap();
        pcap.outbound(Instant::ZERO, &[0x60]);
        let seconds = u32_at(&shared.bytes.borrow(), 24);
        assert!(seconds > 1_600_000_000, "not a wall-clock time: {seconds}");
    }

    #[test]
    fn a_write_error_stops_the_capture_without_panicking() {
        let shared = Shared::default();
        let mut pcap = PcapObserver::new(shared.clone(), "memory").unwrap();
        *shared.broken.borrow_mut() = true;
        pcap.outbound(Instant::ZERO, &[0x45; 20]);
        assert!(!pcap.is_writing());
        *shared.broken.borrow_mut() = false;
        pcap.outbound(Instant::ZERO, &[0x45; 20]);
        assert_eq!(shared.bytes.borrow().len(), 24, "nothing after the error");
    }

    #[test]
    fn a_failing_header_is_an_error() {
        let shared = Shared::default();
        *shared.broken.borrow_mut() = true;
        assert!(PcapObserver::new(shared, "memory").is_err());
    }
}
