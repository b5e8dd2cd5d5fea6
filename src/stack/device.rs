//! The devices the interface sees: a one-packet device for ingress (the packet we already
//! read, plus the transmit token it came with) and a transmit-only tap for egress. Both
//! route every outbound packet through the meter: counters, trace, pcap.

use super::Meter;
use smoltcp::phy::{self, Device, DeviceCapabilities};
use smoltcp::time::Instant;

/// A device that yields exactly one packet, already read, and the transmit token it came
/// with (for the interface's immediate replies: RST, ICMP echo reply, port unreachable).
pub(super) struct OnePacket<'p, T> {
    pub packet: &'p [u8],
    pub tx: Option<T>,
    pub caps: DeviceCapabilities,
}

pub(super) struct PacketRx<'p>(&'p [u8]);

impl phy::RxToken for PacketRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl<'p, T: phy::TxToken> Device for OnePacket<'p, T> {
    type RxToken<'a>
        = PacketRx<'p>
    where
        Self: 'a;
    type TxToken<'a>
        = T
    where
        Self: 'a;

    fn receive(&mut self, _now: Instant) -> Option<(PacketRx<'p>, T)> {
        let tx = self.tx.take()?;
        Some((PacketRx(self.packet), tx))
    }

    fn transmit(&mut self, _now: Instant) -> Option<T> {
        None
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.caps.clone()
    }
}

/// A transmit token that counts (and shows the observer) what it sends.
pub(super) struct TapTx<'m, T> {
    pub inner: T,
    pub meter: &'m mut Meter,
    pub now: Instant,
}

impl<T: phy::TxToken> phy::TxToken for TapTx<'_, T> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let TapTx { inner, meter, now } = self;
        inner.consume(len, |buf| {
            let result = f(buf);
            meter.outbound(now, buf);
            result
        })
    }
}

/// The real device as the interface sees it during egress: transmit only, and every packet
/// goes through the meter (counters, trace, pcap).
pub(super) struct Tap<'d, 'm, D> {
    pub device: &'d mut D,
    pub meter: &'m mut Meter,
}

impl<D: Device> Device for Tap<'_, '_, D> {
    type RxToken<'a>
        = D::RxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = TapTx<'a, D::TxToken<'a>>
    where
        Self: 'a;

    fn receive(&mut self, _now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        None
    }

    fn transmit(&mut self, now: Instant) -> Option<Self::TxToken<'_>> {
        let inner = self.device.transmit(now)?;
        Some(TapTx {
            inner,
            meter: self.meter,
            now,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.device.capabilities()
    }
}
