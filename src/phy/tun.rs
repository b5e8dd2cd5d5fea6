//! The TUN device as a smoltcp `Device` with `Medium::Ip`.
//! Opening attaches to the persistent device `scripts/setup.sh` made, without privilege when
//! it is the caller's ([`open`]); every way that can fail becomes one sentence that says
//! what to do. Reads and writes are non-blocking.
//!
//! Two ways to open it: plain (tun-tap, `IFF_NO_PI`: one MTU-sized packet per read or write)
//! and with offloads (tun-rs, `IFF_VNET_HDR` + `TUNSETOFFLOAD`: a virtio-net header in front
//! of each packet, and TCP segments up to 64 KiB both ways — see [`super::vnet`]). tun-tap
//! cannot set `IFF_VNET_HDR`, which must be asked for when attaching.

use super::META_PARTIAL_CHECKSUM;
use super::coalesce::Coalescer;
use super::vnet::{self, RxChecksum};
use crate::config::{MAX_MTU, MIN_MTU_IPV4};
use crate::error::Error;
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, RawFd};
use tun_tap::Iface;

mod open;

pub use open::clear_offloads;

/// Largest IP packet a TUN can carry: the kernel's ceiling for a TUN's MTU.
const MAX_PACKET: usize = MAX_MTU;
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
    /// Attaches to the existing TUN device `name`. `mtu` overrides the device's own MTU
    /// (68 to 65535). With `offload`, TCP segments cross the device up to 64 KiB at a time
    /// (falls back to plain, with a warning, if the kernel refuses). Needs no privilege
    /// when the device belongs to the caller.
    pub fn open(name: &str, mtu: Option<usize>, offload: bool) -> Result<TunDevice, Error> {
        if let Some(mtu) = mtu
            && !(MIN_MTU_IPV4..=MAX_MTU).contains(&mtu)
        {
            return Err(Error::InvalidConfig(format!(
                "mtu {mtu} for {name} is outside {MIN_MTU_IPV4}..={MAX_MTU}"
            )));
        }
        open::check_device(name)?;
        let io = match offload {
            true => open::open_offload(name)?.map(Io::Offload),
            false => None,
        };
        let io = match io {
            Some(io) => io,
            None => Io::Plain(open::open_plain(name)?),
        };
        open::ensure_up(name);
        let mtu = link_mtu(name, mtu);
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
            mtu,
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
                "reading TUN device {} failed ({e}): was it deleted? run `{}` and restart",
                self.name,
                open::setup_command(&self.name)
            ))
        })
    }

    /// Writes that failed since the device was opened.
    pub fn tx_errors(&self) -> u64 {
        self.tx_errors
    }
}

/// The MTU to use on `name`: `wanted`, else the device's own (the kernel keeps a TUN's
/// within 68..=65535), else 1500 with a warning. A `wanted` above the device's is allowed
/// (the kernel takes longer packets from a TUN) but said, since the kernel still sends
/// packets only up to its own MTU.
fn link_mtu(name: &str, wanted: Option<usize>) -> usize {
    let device = open::interface_mtu(name);
    match (wanted, device) {
        (Some(wanted), Ok(own)) if wanted > own => {
            log::info!(
                "tun: mtu {wanted} is above {name}'s own {own}: the stack sends packets up to \
                 {wanted} bytes, the kernel only up to {own}"
            );
            wanted
        }
        (Some(wanted), _) => wanted,
        (None, Ok(own)) => own.clamp(MIN_MTU_IPV4, MAX_MTU),
        (None, Err(err)) => {
            log::warn!("tun: cannot read the MTU of {name} ({err}); using 1500");
            1500
        }
    }
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
