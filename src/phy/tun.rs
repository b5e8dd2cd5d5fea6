//! The TUN device as a smoltcp `Device` with `Medium::Ip`.
//! Opening attaches to the persistent device `scripts/setup.sh` made; every way that can fail
//! becomes one sentence that says what to do. Reads and writes are non-blocking.
//!
//! Two ways to open it: plain (tun-tap, `IFF_NO_PI`: one MTU-sized packet per read or write)
//! and with offloads (tun-rs, `IFF_VNET_HDR` + `TUNSETOFFLOAD`: a virtio-net header in front
//! of each packet, and TCP segments up to 64 KiB both ways — see [`super::vnet`]). tun-tap
//! cannot set `IFF_VNET_HDR`, which must be asked for when attaching.

use super::META_PARTIAL_CHECKSUM;
use super::coalesce::Coalescer;
use super::vnet::{self, RxChecksum};
use crate::error::Error;
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use std::ffi::CString;
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, RawFd};
use tun_tap::{Iface, Mode};

/// Largest IP packet a TUN can carry.
const MAX_PACKET: usize = 65535;
/// Room for a packet read: an IPv6 super-packet may be 40 bytes over `MAX_PACKET`.
const RX_ROOM: usize = MAX_PACKET + 64;

/// The open file behind a [`TunDevice`].
enum Io {
    /// tun-tap: bare IP packets.
    Plain(Iface),
    /// tun-rs with `IFF_VNET_HDR`: each packet behind a virtio-net header.
    Offload(tun_rs::SyncDevice),
}

impl Io {
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Io::Plain(iface) => iface.recv(buf),
            Io::Offload(dev) => dev.recv(buf),
        }
    }

    fn send(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Io::Plain(iface) => iface.send(buf),
            Io::Offload(dev) => dev.send(buf),
        }
    }

    fn fd(&self) -> RawFd {
        match self {
            Io::Plain(iface) => iface.as_raw_fd(),
            Io::Offload(dev) => dev.as_raw_fd(),
        }
    }

    /// Bytes in front of each packet.
    fn header_len(&self) -> usize {
        match self {
            Io::Plain(_) => 0,
            Io::Offload(_) => vnet::HEADER_LEN,
        }
    }
}

/// Counters of the offload path.
#[derive(Debug, Default, Clone, Copy)]
pub struct OffloadStats {
    /// TCP super-packets read (one segment longer than the MTU).
    pub rx_super: u64,
    /// Inbound packets made on this host with their checksum left partial.
    pub rx_partial: u64,
    /// Inbound packets whose partial checksum was completed here.
    pub rx_completed: u64,
    /// Frames refused (see [`vnet::complete_inbound`]).
    pub rx_refused: u64,
    /// TCP segments longer than the MSS written for the kernel to take whole.
    pub tx_super: u64,
    /// IPv6 segments that left inside one of those (see [`super::coalesce`]).
    pub tx_joined: u64,
}

/// An open TUN device.
pub struct TunDevice {
    io: Io,
    name: String,
    mtu: usize,
    offload: Option<OffloadStats>,
    /// Offload path only: IPv6 segments waiting to leave as one super-packet.
    coalesce: Option<Coalescer>,
    rx_buf: Vec<u8>,
    tx_buf: Vec<u8>,
    error: Option<io::Error>,
    tx_errors: u64,
}

impl TunDevice {
    /// Attaches to the existing TUN device `name`. `mtu` overrides the device's own MTU.
    /// With `offload`, TCP segments cross the device up to 64 KiB at a time (falls back to
    /// plain, with a warning, if the kernel refuses).
    pub fn open(name: &str, mtu: Option<usize>, offload: bool) -> Result<TunDevice, Error> {
        if !std::path::Path::new("/dev/net/tun").exists() {
            return Err(Error::Device(
                "/dev/net/tun does not exist: load the tun module (`sudo modprobe tun`), then run `sudo scripts/setup.sh`".into(),
            ));
        }
        if interface_index(name) == 0 {
            return Err(Error::Device(format!(
                "TUN device {name} does not exist: create it with `sudo scripts/setup.sh` (or pick another with --tun)"
            )));
        }
        let io = if offload { open_offload(name)? } else { None };
        let io = match io {
            Some(io) => io,
            None => Io::Plain(open_plain(name)?),
        };
        let mtu = match mtu {
            Some(mtu) => mtu,
            None => interface_mtu(name).unwrap_or(1500),
        };
        let offload = matches!(io, Io::Offload(_)).then(OffloadStats::default);
        log::info!(
            "tun: attached to {name} (mtu {mtu}, {})",
            match offload {
                Some(_) => "offloads on: TCP segments up to 64 KiB cross the device whole",
                None => "offloads off: one packet per read and write",
            }
        );
        let header = io.header_len();
        Ok(TunDevice {
            io,
            name: name.to_string(),
            mtu: mtu.min(MAX_PACKET),
            coalesce: None,
            offload,
            rx_buf: vec![0; header + RX_ROOM],
            tx_buf: vec![0; header + MAX_PACKET],
            error: None,
            tx_errors: 0,
        })
    }

    /// The file descriptor to wait on for readability.
    pub fn fd(&self) -> RawFd {
        self.io.fd()
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The offload counters, if the device was opened with offloads.
    pub fn offload_stats(&self) -> Option<OffloadStats> {
        self.offload
    }

    /// From now on (offload path only), holds back IPv6 TCP segments to write them as one
    /// super-packet ([`super::coalesce`]). Only for a loop that calls [`TunDevice::flush`]
    /// after each round of sending: until then the segments are not on the wire.
    /// `runtime::run` does both.
    pub fn join_ipv6_segments(&mut self) {
        if self.offload.is_some() && self.coalesce.is_none() {
            self.coalesce = Some(Coalescer::new(self.io.header_len()));
        }
    }

    /// Writes what waits to leave as one super-packet (IPv6 segments sent in this turn).
    /// Call after each round of sending, before waiting.
    pub fn flush(&mut self) {
        if let (Some(coalesce), Some(stats)) = (self.coalesce.as_mut(), self.offload.as_mut()) {
            write_joined(&self.io, coalesce, stats, &mut self.tx_errors);
        }
    }

    /// A read error other than "no packet now" (the device was deleted, ...), once.
    pub fn take_error(&mut self) -> Option<Error> {
        self.error.take().map(|e| {
            Error::Device(format!(
                "reading TUN device {} failed ({e}): was it deleted? run `sudo scripts/setup.sh` and restart",
                self.name
            ))
        })
    }

    /// Writes that failed since the device was opened.
    pub fn tx_errors(&self) -> u64 {
        self.tx_errors
    }
}

/// Attaches with tun-tap, and clears the offloads a previous offload run left on the
/// device (they outlive the file: the kernel would go on sending super-packets).
fn open_plain(name: &str) -> Result<Iface, Error> {
    let iface = Iface::without_packet_info(name, Mode::Tun).map_err(|e| open_error(name, &e))?;
    iface
        .set_non_blocking()
        .map_err(|e| Error::Device(format!("cannot make {name} non-blocking: {e}")))?;
    clear_offloads(iface.as_raw_fd())
        .map_err(|e| Error::Device(format!("cannot clear the offloads of {name}: {e}")))?;
    Ok(iface)
}

/// Attaches with tun-rs and `IFF_VNET_HDR`, then asks for TCP offloads only (checksum and
/// TSO for both families: no UDP GSO, which would need splitting here). `None` if the kernel
/// refuses the offloads (the caller falls back to plain).
fn open_offload(name: &str) -> Result<Option<Io>, Error> {
    let dev = tun_rs::DeviceBuilder::new()
        .name(name)
        .offload(true)
        .build_sync();
    let dev = match dev {
        Ok(dev) => dev,
        Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
            log::warn!("tun: {name} refused IFF_VNET_HDR ({err}); offloads off");
            return Ok(None);
        }
        Err(err) => return Err(open_error(name, &err)),
    };
    let tcp = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
    if let Err(err) = set_offloads(dev.as_raw_fd(), tcp) {
        log::warn!("tun: {name} refused TCP offloads ({err}); offloads off");
        return Ok(None);
    }
    dev.set_nonblocking(true)
        .map_err(|e| Error::Device(format!("cannot make {name} non-blocking: {e}")))?;
    Ok(Some(Io::Offload(dev)))
}

/// Turns off the offloads an earlier offload run left on the TUN device `fd` is attached
/// to: without this the kernel goes on handing it packets with partial checksums.
pub fn clear_offloads(fd: RawFd) -> io::Result<()> {
    set_offloads(fd, 0)
}

/// `TUNSETOFFLOAD`: which offloads the kernel may use towards this device (device-wide).
fn set_offloads(fd: RawFd, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value; `fd` is an open TUN file.
    let rc = unsafe { libc::ioctl(fd, libc::TUNSETOFFLOAD, flags as libc::c_ulong) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn open_error(name: &str, err: &io::Error) -> Error {
    let advice = match err.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => format!(
            "permission denied opening TUN device {name}: run `sudo scripts/setup.sh` (it makes {name} yours) and check that /dev/net/tun is readable and writable by you"
        ),
        Some(libc::EBUSY) => {
            format!("TUN device {name} is busy: another program (another tunstack?) has it open")
        }
        Some(libc::EINVAL) => format!(
            "{name} exists but is not a TUN device without packet info: recreate it with `sudo scripts/teardown.sh && sudo scripts/setup.sh`"
        ),
        _ => format!("cannot open TUN device {name} ({err}): run `sudo scripts/setup.sh`"),
    };
    Error::Device(advice)
}

/// The interface index of `name` in this network namespace, 0 if there is none.
fn interface_index(name: &str) -> u32 {
    let Ok(cname) = CString::new(name) else {
        return 0;
    };
    // SAFETY: `cname` is a valid NUL-terminated string that outlives the call.
    unsafe { libc::if_nametoindex(cname.as_ptr()) }
}

/// The MTU the kernel has for `name`, read with SIOCGIFMTU.
fn interface_mtu(name: &str) -> Option<usize> {
    // SAFETY: plain socket(2); the fd is closed below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if sock < 0 {
        return None;
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *dst = src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq with a NUL-terminated name; SIOCGIFMTU fills ifru_mtu.
    let rc = unsafe { libc::ioctl(sock, libc::SIOCGIFMTU, &mut req) };
    // SAFETY: `sock` is our own open fd.
    unsafe { libc::close(sock) };
    if rc != 0 {
        return None;
    }
    // SAFETY: after a successful SIOCGIFMTU the union holds the MTU.
    Some(unsafe { req.ifr_ifru.ifru_mtu } as usize)
}

/// A packet read from the TUN, and whether its transport checksum is partial.
pub struct TunRx<'a>(&'a [u8], bool);

/// A slot to write one packet to the TUN.
pub struct TunTx<'a> {
    io: &'a Io,
    buf: &'a mut Vec<u8>,
    errors: &'a mut u64,
    offload: Option<&'a mut OffloadStats>,
    coalesce: Option<&'a mut Coalescer>,
    /// The MSS smoltcp asks the device to cut this segment at, if it is longer.
    mss: Option<u16>,
}

impl phy::RxToken for TunRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }

    fn meta(&self) -> phy::PacketMeta {
        let mut meta = phy::PacketMeta::default();
        if self.1 {
            meta.id = META_PARTIAL_CHECKSUM;
        }
        meta
    }
}

impl phy::TxToken for TunTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let header = self.io.header_len();
        let len = len.min(self.buf.len() - header);
        let frame = &mut self.buf[..header + len];
        let result = f(&mut frame[header..]);
        if let Some(stats) = self.offload {
            if let Some(coalesce) = self.coalesce {
                // Keep the order: what waits leaves before anything that cannot join it.
                let joined = self.mss.is_none() && coalesce.push(&frame[header..]);
                if joined {
                    return result;
                }
                write_joined(self.io, coalesce, stats, self.errors);
                if self.mss.is_none() && coalesce.push(&frame[header..]) {
                    return result;
                }
            }
            let vnet = vnet::outbound_header(&mut frame[header..], self.mss);
            if vnet.gso_size != 0 {
                stats.tx_super += 1;
            }
            // The frame has room for the header by construction.
            let _ = vnet.encode(frame);
        }
        write_frame(self.io, frame, self.errors);
        result
    }

    fn set_meta(&mut self, meta: phy::PacketMeta) {
        self.mss = meta.segmentation_offload_size.map(|m| m.get());
    }
}

/// Writes one frame (device header included); a failure is counted and logged.
fn write_frame(io: &Io, frame: &[u8], errors: &mut u64) {
    if let Err(err) = io.send(frame) {
        *errors += 1;
        log::warn!("tun: write of {} bytes failed: {err}", frame.len());
    }
}

/// Writes the super-packet `coalesce` holds, if any.
fn write_joined(io: &Io, coalesce: &mut Coalescer, stats: &mut OffloadStats, errors: &mut u64) {
    let Some((frame, segment_size)) = coalesce.take() else {
        return;
    };
    let header = io.header_len();
    let vnet = vnet::outbound_header(&mut frame[header..], segment_size);
    if vnet.gso_size != 0 {
        stats.tx_super += 1;
        let payload = frame.len() - usize::from(vnet.hdr_len) - header;
        stats.tx_joined += payload.div_ceil(usize::from(vnet.gso_size)) as u64;
    }
    let _ = vnet.encode(frame);
    write_frame(io, frame, errors);
}

impl Device for TunDevice {
    type RxToken<'a> = TunRx<'a>;
    type TxToken<'a> = TunTx<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(TunRx<'_>, TunTx<'_>)> {
        let (packet, partial) = loop {
            let len = match self.io.recv(&mut self.rx_buf) {
                Ok(len) => len,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return None,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => return None,
                Err(err) => {
                    self.error = Some(err);
                    return None;
                }
            };
            log::trace!("tun: rx {len} bytes");
            let Some(stats) = self.offload.as_mut() else {
                break (0..len, false);
            };
            match vnet::read_inbound(&mut self.rx_buf[..len]) {
                Ok(inbound) => {
                    stats.rx_super += u64::from(inbound.super_packet);
                    let partial = match inbound.checksum {
                        RxChecksum::AsSent => false,
                        RxChecksum::Partial => {
                            stats.rx_partial += 1;
                            true
                        }
                        RxChecksum::Completed => {
                            stats.rx_completed += 1;
                            false
                        }
                    };
                    break (vnet::HEADER_LEN..len, partial);
                }
                Err(why) => {
                    stats.rx_refused += 1;
                    log::warn!("tun: frame of {len} bytes refused: {why}");
                }
            }
        };
        let TunDevice {
            io,
            rx_buf,
            tx_buf,
            tx_errors,
            offload,
            coalesce,
            ..
        } = self;
        Some((
            TunRx(&rx_buf[packet], partial),
            TunTx {
                io,
                buf: tx_buf,
                errors: tx_errors,
                offload: offload.as_mut(),
                coalesce: coalesce.as_mut(),
                mss: None,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TunTx<'_>> {
        Some(TunTx {
            io: &self.io,
            buf: &mut self.tx_buf,
            errors: &mut self.tx_errors,
            offload: self.offload.as_mut(),
            coalesce: self.coalesce.as_mut(),
            mss: None,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        if self.offload.is_some() {
            // The kernel computes (and never needs to verify) TCP checksums and takes
            // segments up to a whole IP packet: smoltcp may send that much at once. Not over
            // IPv6: smoltcp 0.14 drops an IPv6 packet longer than the MTU even when it asked
            // the device to segment it (its IPv6 dispatch never looks at that request), so
            // IPv6 segments stay MSS-sized on the way out (super-packets still come in).
            caps.checksum.tcp = phy::Checksum::None;
            caps.segmentation.tcpv4 = NonZeroUsize::new(MAX_PACKET);
        }
        caps
    }
}
