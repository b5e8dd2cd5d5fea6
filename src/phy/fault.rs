//! Fault injection middleware: wraps any device and drops, corrupts or duplicates packets
//! at set percentages, from a seeded generator so a run can be repeated exactly. smoltcp's
//! own `FaultInjector` has no duplicate and no access to the wrapped device, so this one.

use crate::error::Error;
use crate::runtime::WaitableDevice;
use smoltcp::phy::{self, Device, DeviceCapabilities};
use smoltcp::time::Instant;
use std::os::fd::RawFd;

/// What to inject, in percent of packets (0–100).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultConfig {
    /// Packets dropped, each way.
    pub drop_pct: u8,
    /// Packets with one byte flipped, each way.
    pub corrupt_pct: u8,
    /// Inbound packets delivered twice.
    pub duplicate_pct: u8,
    /// Seed of the generator.
    pub seed: u64,
}

impl FaultConfig {
    /// True when no fault is configured.
    pub fn is_none(&self) -> bool {
        self.drop_pct == 0 && self.corrupt_pct == 0 && self.duplicate_pct == 0
    }
}

/// Counts of what was injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct FaultStats {
    pub rx_dropped: u64,
    pub rx_corrupted: u64,
    pub rx_duplicated: u64,
    pub tx_dropped: u64,
    pub tx_corrupted: u64,
}

/// A device with faults.
pub struct FaultyDevice<D> {
    inner: D,
    config: FaultConfig,
    rng: u64,
    stats: FaultStats,
    rx_buf: Vec<u8>,
    /// The last delivered packet is to be delivered once more.
    replay: bool,
}

impl<D: Device> FaultyDevice<D> {
    /// Wraps `inner`.
    pub fn new(inner: D, config: FaultConfig) -> FaultyDevice<D> {
        FaultyDevice {
            inner,
            config,
            rng: config.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            stats: FaultStats::default(),
            rx_buf: Vec::new(),
            replay: false,
        }
    }

    /// What was injected so far.
    pub fn stats(&self) -> FaultStats {
        self.stats
    }

    fn next(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    fn chance(&mut self, pct: u8) -> bool {
        pct > 0 && self.next() % 100 < u64::from(pct)
    }

    /// Pulls inbound packets until one survives; it is left in `rx_buf`.
    fn pull(&mut self, now: Instant) -> bool {
        if self.replay {
            self.replay = false;
            self.stats.rx_duplicated += 1;
            return true;
        }
        for _ in 0..64 {
            let Some((rx, tx)) = self.inner.receive(now) else {
                return false;
            };
            drop(tx);
            let buf = &mut self.rx_buf;
            phy::RxToken::consume(rx, |packet| {
                buf.clear();
                buf.extend_from_slice(packet);
            });
            if self.chance(self.config.drop_pct) {
                self.stats.rx_dropped += 1;
                continue;
            }
            if self.chance(self.config.corrupt_pct) && !self.rx_buf.is_empty() {
                let at = (self.next() as usize) % self.rx_buf.len();
                self.rx_buf[at] ^= 1 << (self.next() % 8);
                self.stats.rx_corrupted += 1;
            }
            self.replay = self.chance(self.config.duplicate_pct);
            return true;
        }
        false
    }
}

/// A surviving inbound packet.
pub struct FaultRx<'a>(&'a [u8]);

impl phy::RxToken for FaultRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

/// An outbound slot that may drop or corrupt what is written into it.
pub struct FaultTx<T> {
    inner: T,
    drop: bool,
    corrupt_at: Option<(usize, u8)>,
}

impl<T: phy::TxToken> phy::TxToken for FaultTx<T> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        if self.drop {
            return f(&mut vec![0; len]);
        }
        let corrupt_at = self.corrupt_at;
        self.inner.consume(len, |buf| {
            let result = f(buf);
            if let Some((at, bit)) = corrupt_at
                && !buf.is_empty()
            {
                let at = at % buf.len();
                buf[at] ^= 1 << bit;
            }
            result
        })
    }

    fn set_meta(&mut self, meta: phy::PacketMeta) {
        self.inner.set_meta(meta);
    }
}

impl<D: Device> Device for FaultyDevice<D> {
    type RxToken<'a>
        = FaultRx<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = FaultTx<D::TxToken<'a>>
    where
        Self: 'a;

    fn receive(&mut self, now: Instant) -> Option<(FaultRx<'_>, Self::TxToken<'_>)> {
        if !self.pull(now) {
            return None;
        }
        let (drop, corrupt_at) = self.transmit_fate();
        let FaultyDevice { inner, rx_buf, .. } = self;
        let inner = inner.transmit(now)?;
        let tx = FaultTx {
            inner,
            drop,
            corrupt_at,
        };
        Some((FaultRx(rx_buf), tx))
    }

    fn transmit(&mut self, now: Instant) -> Option<Self::TxToken<'_>> {
        let (drop, corrupt_at) = self.transmit_fate();
        let inner = self.inner.transmit(now)?;
        Some(FaultTx {
            inner,
            drop,
            corrupt_at,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.inner.capabilities()
    }
}

impl<D: Device> FaultyDevice<D> {
    /// Decides the fate of the next outbound packet: (drop, corrupt at byte/bit).
    fn transmit_fate(&mut self) -> (bool, Option<(usize, u8)>) {
        if self.chance(self.config.drop_pct) {
            self.stats.tx_dropped += 1;
            return (true, None);
        }
        if self.chance(self.config.corrupt_pct) {
            self.stats.tx_corrupted += 1;
            return (false, Some((self.next() as usize, (self.next() % 8) as u8)));
        }
        (false, None)
    }
}

impl<D: WaitableDevice> WaitableDevice for FaultyDevice<D> {
    fn fd(&self) -> RawFd {
        self.inner.fd()
    }

    fn take_error(&mut self) -> Option<Error> {
        self.inner.take_error()
    }

    fn report(&self) -> Option<String> {
        let s = self.stats;
        Some(format!(
            "faults injected: rx dropped {} corrupted {} duplicated {}, tx dropped {} corrupted {}",
            s.rx_dropped, s.rx_corrupted, s.rx_duplicated, s.tx_dropped, s.tx_corrupted
        ))
    }

    fn hold_back(&mut self) {
        self.inner.hold_back()
    }

    fn flush(&mut self) {
        self.inner.flush()
    }
}
