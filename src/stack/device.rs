//! The devices the interface sees: a one-packet device for ingress (the packet we already
//! read, plus the transmit token it came with) and a transmit-only tap for egress. Both
//! route every outbound packet through the meter: counters, trace, pcap — after shifting
//! the sequence number of a SYN-cookie connection's segments to what the peer knows. A sink
//! collects what a socket sends before it is on the wire (a cookie connection's SYN-ACK).

use super::Meter;
use super::entry::Sent;
use crate::packet::{SeqField, shift_tcp, tcp_ack_window, tcp_extent};
use smoltcp::phy::{self, Device, DeviceCapabilities};
use smoltcp::time::Instant;
use std::collections::VecDeque;

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

/// A transmit token that counts (and shows the observer) what it sends. A non-zero
/// `seq_offset` (a SYN-cookie connection's) is taken off the TCP sequence number first.
/// With a `path_mtu` lower than the link's (`stack::pmtu`), a TCP segment too big for it
/// is cut: by the device when it segments, else here, the pieces after the first going
/// to `pending` (sent before anything else of the socket).
pub(super) struct TapTx<'m, T> {
    pub inner: T,
    pub meter: &'m mut Meter,
    pub now: Instant,
    pub seq_offset: u32,
    /// What the lent TCP socket has sent: to count retransmissions, and its last ACK.
    pub sent: Option<&'m mut Sent>,
    /// The lent socket's path MTU, when an ICMP message lowered it.
    pub path: Option<PathCut<'m>>,
    /// The metadata smoltcp set, handed on at `consume` (the cut may change it).
    pub meta: Option<phy::PacketMeta>,
}

/// How a flow's segments are cut to its path MTU.
pub(super) struct PathCut<'m> {
    pub mtu: usize,
    /// The device segments a TCP super-packet itself (TUN offloads).
    pub device_segments: bool,
    /// Where the pieces after the first wait.
    pub pending: &'m mut VecDeque<Vec<u8>>,
}

impl<'m, T> TapTx<'m, T> {
    /// A token that only counts and shows what it sends.
    pub fn counting(inner: T, meter: &'m mut Meter, now: Instant) -> TapTx<'m, T> {
        TapTx {
            inner,
            meter,
            now,
            seq_offset: 0,
            sent: None,
            path: None,
            meta: None,
        }
    }
}

/// What a lent socket's outbound segment does to its records, before it is sent.
fn record(
    buf: &mut [u8],
    seq_offset: u32,
    sent: Option<&mut Sent>,
    meter: &mut Meter,
    now: Instant,
) {
    if seq_offset != 0 {
        shift_tcp(buf, SeqField::Seq, seq_offset.wrapping_neg());
    }
    let Some(sent) = sent else {
        return;
    };
    if let Some((seq, len @ 1..)) = tcp_extent(buf) {
        let end = seq.wrapping_add(len);
        match sent.snd_max {
            // Sequence numbers wrap: compare by signed distance.
            Some(h) if (end.wrapping_sub(h) as i32) <= 0 => meter.stats.tcp_retransmits += 1,
            _ => {
                sent.snd_max = Some(end);
                sent.progress_at = Some(now);
            }
        }
    }
    if let Some((ack, window)) = tcp_ack_window(buf) {
        sent.ack = Some((ack, window == 0));
    }
}

impl<T: phy::TxToken> phy::TxToken for TapTx<'_, T> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let TapTx {
            mut inner,
            meter,
            now,
            seq_offset,
            sent,
            path,
            meta,
        } = self;
        let Some(path) = path.filter(|p| len > p.mtu) else {
            if let Some(meta) = meta {
                inner.set_meta(meta);
            }
            return inner.consume(len, |buf| {
                let result = f(buf);
                record(buf, seq_offset, sent, meter, now);
                meter.outbound(now, buf);
                result
            });
        };
        // Too big for the path: made aside first, then cut.
        let mut segment = vec![0; len];
        let result = f(&mut segment);
        record(&mut segment, seq_offset, sent, meter, now);
        let pieces = match path.device_segments {
            true => None,
            false => super::pmtu::split_segment(&segment, path.mtu),
        };
        let mut meta = meta.unwrap_or_default();
        let Some(mut pieces) = pieces else {
            if path.device_segments {
                let headers = super::pmtu::tcp_headers_len(&segment).unwrap_or(len);
                meta.segmentation_offload_size =
                    std::num::NonZeroU16::new(path.mtu.saturating_sub(headers) as u16);
            }
            inner.set_meta(meta);
            inner.consume(len, |buf| {
                buf.copy_from_slice(&segment);
                meter.outbound(now, buf);
            });
            return result;
        };
        let first = pieces.remove(0);
        inner.set_meta(meta);
        inner.consume(first.len(), |buf| {
            buf.copy_from_slice(&first);
            meter.outbound(now, buf);
        });
        path.pending.extend(pieces);
        result
    }

    fn set_meta(&mut self, meta: phy::PacketMeta) {
        self.meta = Some(meta);
    }
}

/// The real device as the interface sees it during egress: transmit only, and every packet
/// goes through the meter (counters, trace, pcap).
pub(super) struct Tap<'d, 'm, D> {
    pub device: &'d mut D,
    pub meter: &'m mut Meter,
    /// What the lent socket has sent, if it is a TCP socket.
    pub sent: Option<&'m mut Sent>,
    /// The lent socket's [`TcpEntry::seq_offset`](super::TcpEntry::seq_offset), or 0.
    pub seq_offset: u32,
    /// The lent socket's path MTU, if lower than the link's, and where cut pieces wait.
    pub path: Option<(usize, &'m mut VecDeque<Vec<u8>>)>,
}

impl<D: Device> Tap<'_, '_, D> {
    /// Sends the pieces of a segment cut to the path MTU that still wait. False if the
    /// device stopped taking packets first.
    pub fn send_pending(&mut self, now: Instant) -> bool {
        let Some((_, pending)) = self.path.as_mut() else {
            return true;
        };
        while let Some(piece) = pending.pop_front() {
            let Some(token) = self.device.transmit(now) else {
                pending.push_front(piece);
                return false;
            };
            let tap = TapTx::counting(token, &mut *self.meter, now);
            phy::TxToken::consume(tap, piece.len(), |buf| buf.copy_from_slice(&piece));
        }
        true
    }
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
        let device_segments = self.device.capabilities().segmentation.tcpv4.is_some();
        let inner = self.device.transmit(now)?;
        let path = self.path.as_mut().map(|(mtu, pending)| PathCut {
            mtu: *mtu,
            device_segments,
            pending,
        });
        Some(TapTx {
            inner,
            meter: self.meter,
            now,
            seq_offset: self.seq_offset,
            sent: self.sent.as_deref_mut(),
            path,
            meta: None,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.device.capabilities()
    }
}

/// A transmit-only device that keeps every packet instead of sending it.
pub(super) struct Sink {
    pub packets: Vec<Vec<u8>>,
    pub caps: DeviceCapabilities,
}

pub(super) struct SinkTx<'s>(pub &'s mut Vec<Vec<u8>>);

impl phy::TxToken for SinkTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = vec![0; len];
        let result = f(&mut packet);
        self.0.push(packet);
        result
    }
}

impl Device for Sink {
    type RxToken<'a>
        = PacketRx<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = SinkTx<'a>
    where
        Self: 'a;

    fn receive(&mut self, _now: Instant) -> Option<(PacketRx<'_>, SinkTx<'_>)> {
        None
    }

    fn transmit(&mut self, _now: Instant) -> Option<SinkTx<'_>> {
        Some(SinkTx(&mut self.packets))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.caps.clone()
    }
}

/// A device that only reports capabilities: what the interface is created with.
pub(super) struct CapsOnly(pub DeviceCapabilities);

impl Device for CapsOnly {
    type RxToken<'a> = PacketRx<'a>;
    type TxToken<'a> = NoTx;

    fn receive(&mut self, _now: Instant) -> Option<(PacketRx<'_>, NoTx)> {
        None
    }

    fn transmit(&mut self, _now: Instant) -> Option<NoTx> {
        None
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.0.clone()
    }
}

/// A transmit token that is never handed out.
pub(super) struct NoTx;

impl phy::TxToken for NoTx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        f(&mut vec![0; len])
    }
}
