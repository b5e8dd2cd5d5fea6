//! The stack: one smoltcp `Interface`, the socket slab, the flow table, the timer queue and
//! the ready list. It reads no clock and owns no device: every call takes `now`, and
//! [`Stack::poll`] borrows the device, like smoltcp's own `Interface::poll`.

mod cookie;
mod device;
mod egress;
mod entry;
mod fragmentation;
mod fragmenter;
mod guard;
mod handshake;
mod icmp;
mod icmp_limit;
mod ingress;
mod inject;
mod lifecycle;
mod pmtu;
mod reassembly;
mod route;
mod sack;
mod table;
mod tail;
mod verdict;
mod zero_window;

pub use guard::GuardRule;
pub use table::{SocketInfo, SocketKind};
pub use verdict::{IcmpError, Verdict};

pub(crate) use entry::{Entry, EntryKind, ErrorCause, Listener, Phase, TcpEntry, UdpEntry};

use crate::config::StackConfig;
use crate::error::{Error, Result};
use crate::flow::{FlowTable, SocketId};
use crate::stats::Stats;
use slab::Slab;
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{Checksum, Device};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{HardwareAddress, IpAddress, IpListenEndpoint};
use std::cell::{RefCell, RefMut};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;

/// Sees every packet the stack reads and writes: the packet trace and the pcap writer.
pub trait PacketObserver {
    /// A packet read from the device, with what the stack decided about it.
    fn inbound(&mut self, now: Instant, packet: &[u8], verdict: &Verdict);
    /// A packet the stack wrote to the device.
    fn outbound(&mut self, now: Instant, packet: &[u8]);
}

/// Counters plus the optional observer: what every packet in or out passes through.
pub(crate) struct Meter {
    pub stats: Stats,
    pub observer: Option<Box<dyn PacketObserver>>,
    /// The device computes TCP checksums (offloads): smoltcp leaves them zero.
    pub device_tcp_checksum: bool,
}

impl Meter {
    pub fn outbound(&mut self, now: Instant, packet: &mut [u8]) {
        self.stats.tx_packets += 1;
        self.stats.tx_bytes += packet.len() as u64;
        if let Some(observer) = self.observer.as_mut() {
            if self.device_tcp_checksum {
                // Show what the peer gets, not the zero the device will replace.
                crate::phy::vnet::fill_transport_checksum(packet);
            }
            observer.outbound(now, packet);
        }
    }
}

/// Ingress packets handled per [`Stack::poll`] before egress gets its turn.
const INGRESS_BUDGET: usize = 256;

pub(crate) struct Inner {
    pub iface: Interface,
    pub sockets: Slab<Entry>,
    pub flows: FlowTable,
    pub timers: BinaryHeap<Reverse<(Instant, SocketId)>>,
    pub dirty: Vec<SocketId>,
    /// Egress's working list, kept between polls so that it does not allocate.
    pub due: Vec<SocketId>,
    pub ready: VecDeque<SocketId>,
    pub meter: Meter,
    pub config: StackConfig,
    /// The packet being read was made on this host with its transport checksum left
    /// partial (see [`crate::phy::META_PARTIAL_CHECKSUM`]): not to be verified.
    pub partial_checksum: bool,
    /// The small socket set the interface sees: only the sockets a packet concerns.
    pub scratch: SocketSet<'static>,
    /// Path MTUs lowered by ICMP messages, per destination ([`pmtu`]).
    pub path_mtus: pmtu::PathMtus,
    /// IP fragment trains (both families) waiting for their last piece.
    pub reassembler: reassembly::Reassembler,
    /// Packets built outside smoltcp (IPv6 fragments of a big echo reply or datagram),
    /// sent at egress before any socket's.
    pub raw_tx: VecDeque<Vec<u8>>,
    /// UDP sockets whose `send_to` found no room: made ready after egress sent something.
    pub udp_blocked: Vec<SocketId>,
    /// The `now` of the latest poll: the birth time of sockets made between polls.
    pub now: Instant,
    /// Makes and checks SYN cookies.
    pub cookies: cookie::CookieJar,
    /// When the last SYN cookie went out: ACKs are checked for cookies only soon after.
    pub cookies_sent_at: Option<Instant>,
    /// Scratch copy of an inbound segment whose ACK number is rewritten (cookie connections).
    pub rewrite: Vec<u8>,
    /// Scratch for the packets [`icmp`] builds: ICMP answers, IPv6 without extension headers.
    pub ip_scratch: Vec<u8>,
    /// The ICMP error rate limit.
    pub icmp_limit: icmp_limit::IcmpLimiter,
    rng: u64,
}

/// A userspace TCP/UDP/ICMP stack. Cheap to clone: clones share one stack.
///
/// ```
/// use tunstack::{Stack, StackConfig, TcpListener, phy::MemoryLink};
/// use smoltcp::time::Instant;
///
/// let (mut device, _peer) = MemoryLink::pair(1500);
/// let stack = Stack::new(StackConfig::default(), &mut device, Instant::ZERO);
/// let listener = TcpListener::bind(&stack, "0.0.0.0:7".parse().unwrap(), 16).unwrap();
/// assert!(listener.accept().is_err()); // WouldBlock: nobody connected yet
/// stack.poll(Instant::ZERO, &mut device);
/// ```
#[derive(Clone)]
pub struct Stack {
    inner: Rc<RefCell<Inner>>,
}

impl Stack {
    /// Like [`Stack::new`], after checking `config` ([`StackConfig::validate`]) and the
    /// device's MTU: for a configuration that comes from outside (flags, a file).
    pub fn try_new<D: Device>(config: StackConfig, device: &mut D, now: Instant) -> Result<Stack> {
        config.validate()?;
        let mtu = device.capabilities().max_transmission_unit;
        crate::config::check_mtu(mtu, &config.addresses)?;
        Ok(Stack::new(config, device, now))
    }

    /// Creates a stack with `config`'s addresses on a device like `device`. `config` is
    /// taken as it is: one out of its limits may make smoltcp panic later (an MTU with no
    /// room for headers): use [`Stack::try_new`] unless it is known to be valid.
    pub fn new<D: Device>(config: StackConfig, device: &mut D, now: Instant) -> Stack {
        let mut iface_config = Config::new(HardwareAddress::Ip);
        iface_config.random_seed = config.random_seed;
        // Classification verifies every checksum of every (whole, reassembled) packet before
        // the interface sees it; smoltcp need not do it again, only compute them on send —
        // unless the device computes them (TCP, with offloads).
        let mut caps = device.capabilities();
        let sums = &mut caps.checksum;
        for sum in [
            &mut sums.ipv4,
            &mut sums.udp,
            &mut sums.tcp,
            &mut sums.icmpv4,
            &mut sums.icmpv6,
        ] {
            *sum = if sum.tx() {
                Checksum::Tx
            } else {
                Checksum::None
            };
        }
        let device_tcp_checksum = !caps.checksum.tcp.tx();
        let mut iface = Interface::new(iface_config, &mut device::CapsOnly(caps), now);
        iface.update_ip_addrs(|addrs| {
            for cidr in &config.addresses {
                if addrs.push(*cidr).is_err() {
                    log::warn!("stack: more than 8 addresses, {cidr} ignored");
                }
            }
        });
        iface.set_reassembly_timeout(config.reassembly_timeout);
        let rng = config.random_seed | 1;
        let inner = Inner {
            iface,
            sockets: Slab::new(),
            flows: FlowTable::default(),
            timers: BinaryHeap::new(),
            dirty: Vec::new(),
            due: Vec::new(),
            ready: VecDeque::new(),
            meter: Meter {
                stats: Stats::default(),
                observer: None,
                device_tcp_checksum,
            },
            partial_checksum: false,
            scratch: SocketSet::new(Vec::new()),
            path_mtus: pmtu::PathMtus::default(),
            reassembler: reassembly::Reassembler::new(config.reassembly_timeout),
            raw_tx: VecDeque::new(),
            udp_blocked: Vec::new(),
            now,
            cookies: cookie::CookieJar::new(config.random_seed),
            cookies_sent_at: None,
            rewrite: Vec::new(),
            ip_scratch: Vec::new(),
            icmp_limit: icmp_limit::IcmpLimiter::new(&config, now),
            rng,
            config,
        };
        Stack {
            inner: Rc::new(RefCell::new(inner)),
        }
    }

    pub(crate) fn inner(&self) -> RefMut<'_, Inner> {
        self.inner.borrow_mut()
    }

    /// Reads packets from `device` and hands each to the socket its socket pair names, then
    /// transmits what sockets have queued and what their timers ask for. Returns true if
    /// anything happened (sockets may be ready: see [`Stack::take_ready`]).
    pub fn poll<D: Device>(&self, now: Instant, device: &mut D) -> bool {
        let received = self.receive(now, device);
        let sent = self.transmit(now, device);
        received || sent
    }

    /// The first half of [`Stack::poll`]: reads what the device has (bounded) and hands
    /// it to the sockets. Returns whether anything came in. An app that runs between
    /// this and [`Stack::transmit`] gets its replies into the same segments as the ACKs.
    pub fn receive<D: Device>(&self, now: Instant, device: &mut D) -> bool {
        let mut inner = self.inner();
        inner.now = now;
        entry::set_clock(now);
        inner.ingress(now, device, INGRESS_BUDGET) > 0
    }

    /// The second half of [`Stack::poll`]: sends what sockets have queued and what
    /// timers are due. Returns whether anything went out.
    pub fn transmit<D: Device>(&self, now: Instant, device: &mut D) -> bool {
        let mut inner = self.inner();
        inner.now = now;
        entry::set_clock(now);
        inner.egress(now, device)
    }

    /// How long the caller may wait before the next [`Stack::poll`] if no packet arrives.
    /// `Some(ZERO)` means poll again now; `None` means only a packet can wake the stack.
    pub fn poll_delay(&self, now: Instant) -> Option<Duration> {
        self.inner().poll_delay(now)
    }

    /// Moves the ids of sockets whose readiness may have changed into `out`. Handles have
    /// an [`id`](crate::TcpStream::id) to match them; a spurious id is harmless.
    pub fn take_ready(&self, out: &mut Vec<SocketId>) {
        let mut inner = self.inner();
        let Inner { ready, sockets, .. } = &mut *inner;
        out.extend(ready.drain(..).inspect(|id| {
            if let Some(entry) = sockets.get_mut(id.0) {
                entry.ready = false;
            }
        }));
    }

    /// A copy of the stack's counters.
    pub fn stats(&self) -> Stats {
        self.inner().meter.stats.clone()
    }

    /// Installs the observer that sees every packet in and out (trace, pcap).
    pub fn set_observer(&self, observer: Box<dyn PacketObserver>) {
        self.inner().meter.observer = Some(observer);
    }

    /// Number of sockets of every kind the stack holds (listeners, data sockets, UDP).
    pub fn socket_count(&self) -> usize {
        self.inner().sockets.len()
    }

    /// Entries in the timer queue, stale ones included; kept within a small multiple of
    /// [`Stack::socket_count`].
    pub fn timer_entries(&self) -> usize {
        self.inner().timers.len()
    }

    /// Starts a graceful shutdown: listeners stop taking SYNs and every TCP connection
    /// sends FIN once its queued data is out (RST if it holds data nobody read). Keep
    /// polling until [`Stack::is_quiet`], then [`Stack::abort_all`] what is left.
    pub fn close_all(&self) {
        self.inner().close_all();
    }

    /// Ends the shutdown that [`Stack::close_all`] began: every TCP connection not closed
    /// yet is reset (RST at the next [`Stack::transmit`]). Returns how many were.
    pub fn abort_all(&self) -> usize {
        self.inner().abort_all()
    }

    /// True when no TCP connection still has a FIN (or data before it) to deliver.
    pub fn is_quiet(&self) -> bool {
        self.inner().is_quiet()
    }
}

impl Inner {
    /// A pseudo-random number for port choice (xorshift64*; not for cryptography).
    pub fn random(&mut self) -> u32 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }

    /// Adds a socket to the slab.
    pub fn insert(&mut self, kind: EntryKind) -> SocketId {
        SocketId(self.sockets.insert(Entry::new(kind)))
    }

    /// Queues a socket for egress in this poll.
    pub fn mark_dirty(&mut self, id: SocketId) {
        if let Some(entry) = self.sockets.get_mut(id.0)
            && !entry.dirty
        {
            entry.dirty = true;
            self.dirty.push(id);
        }
    }

    /// Tells the app this socket's readiness may have changed.
    pub fn mark_ready(&mut self, id: SocketId) {
        if let Some(entry) = self.sockets.get_mut(id.0)
            && !entry.ready
        {
            entry.ready = true;
            self.ready.push_back(id);
        }
    }

    /// The stack address to use as source towards `remote`.
    pub fn source_for(&self, remote: IpAddress) -> Result<IpAddress> {
        self.iface.get_source_address(&remote).ok_or_else(|| {
            Error::Unaddressable(format!("no address of the stack can reach {remote}"))
        })
    }

    /// Sends a UDP datagram over IPv6 that is too big for the link as IP fragments (smoltcp
    /// drops IPv6 packets over the MTU). Returns false if it fits and smoltcp can send it;
    /// `WouldBlock` while datagrams sent before it still wait in the socket (they leave
    /// first) or the queue of packets for the device is full.
    pub fn send_udp_v6_fragmented(
        &mut self,
        id: SocketId,
        local: IpListenEndpoint,
        remote: SocketAddr,
        payload: &[u8],
    ) -> Result<bool> {
        let SocketAddr::V6(remote) = remote else {
            return Ok(false);
        };
        if payload.len() + 48 <= self.config.mtu {
            return Ok(false);
        }
        let src = match local.addr {
            Some(IpAddress::Ipv6(addr)) => addr,
            _ => match self.source_for(IpAddress::Ipv6(*remote.ip()))? {
                IpAddress::Ipv6(addr) => addr,
                IpAddress::Ipv4(_) => return Ok(false),
            },
        };
        let earlier = match self.sockets.get(id.0).map(|e| &e.kind) {
            Some(EntryKind::Udp(udp)) => udp.socket.as_ref().map_or(0, |s| s.send_queue()),
            _ => 0,
        };
        if earlier > 0 || self.raw_tx.len() >= egress::RAW_TX_LIMIT {
            return Err(Error::WouldBlock);
        }
        let fragment_id = self.reassembler.fragment_id();
        let fragments = reassembly::udp_v6_fragments(
            (src, local.port),
            (*remote.ip(), remote.port()),
            payload,
            self.config.mtu,
            fragment_id,
        )
        .ok_or_else(|| {
            Error::Unaddressable(format!(
                "datagram of {} bytes is too large for IPv6",
                payload.len()
            ))
        })?;
        // One datagram may overfill the queue by its own fragments, never be cut short.
        self.raw_tx.extend(fragments);
        Ok(true)
    }

    /// A UDP socket's `send_to` returned `WouldBlock`: its owner is told (made ready) once
    /// egress has sent something, so that it tries again.
    pub fn note_udp_send_blocked(&mut self, id: SocketId) {
        if !self.udp_blocked.contains(&id) {
            self.udp_blocked.push(id);
        }
    }

    /// Whether `addr` is one of the stack's addresses.
    pub fn is_local(&self, addr: IpAddress) -> bool {
        self.iface.has_ip_addr(addr)
    }

    fn poll_delay(&mut self, now: Instant) -> Option<Duration> {
        if !self.dirty.is_empty() || !self.ready.is_empty() || !self.raw_tx.is_empty() {
            return Some(Duration::ZERO);
        }
        let mut next = self.iface.poll_at(now, &self.scratch);
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            let live = self
                .sockets
                .get(id.0)
                .is_some_and(|e| e.deadline == Some(at));
            if live {
                next = Some(next.map_or(at, |n| n.min(at)));
                break;
            }
            self.timers.pop();
        }
        next.map(|at| if at > now { at - now } else { Duration::ZERO })
    }
}
