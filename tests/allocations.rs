//! "No allocation per packet": once connections are up and buffers warm, echoing TCP
//! segments, UDP datagrams and pings allocates nothing — in the stack, the socket layer and
//! the echo app. A counting global allocator measures every allocation the test thread
//! makes while the stacks poll; the in-memory link reuses its packet buffers.

mod sim;

use sim::{CLIENT4, Pair, SERVER4, addr};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use tunstack::phy::MemoryLink;
use tunstack::smoltcp::time::{Duration, Instant};
use tunstack::{Stack, StackConfig, TcpStream, UdpSocket};

struct Counting;

thread_local! {
    /// Allocations made by this thread while counting is on (`None`: not counting).
    static COUNT: Cell<Option<usize>> = const { Cell::new(None) };
}

fn note_allocation() {
    // `try_with`: the allocator can run while thread-locals are torn down.
    let _ = COUNT.try_with(|count| {
        if let Some(n) = count.get() {
            count.set(Some(n + 1));
        }
    });
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f`, returning what it returns and how many allocations this thread made in it.
fn counted<R>(f: impl FnOnce() -> R) -> (R, usize) {
    COUNT.with(|count| count.set(Some(0)));
    let result = f();
    let n = COUNT.with(|count| count.replace(None)).unwrap_or(0);
    (result, n)
}

const ROUNDS: usize = 1000;
const WARM_UP: usize = 1000;

/// One TCP round trip of `out` through the echo server; returns the allocations made while
/// the stacks and the app ran.
fn tcp_round_trip(pair: &mut Pair, stream: &TcpStream, out: &[u8], back: &mut [u8]) -> usize {
    assert_eq!(stream.write(out).unwrap(), out.len());
    let mut got = 0;
    let mut allocations = 0;
    for _ in 0..1000 {
        allocations += counted(|| {
            pair.step();
            pair.client.ready.clear();
            pair.advance(Duration::from_millis(1));
        })
        .1;
        while let Ok(n) = stream.read(&mut back[got..]) {
            if n == 0 {
                break;
            }
            got += n;
        }
        if got == out.len() {
            assert_eq!(&back[..got], out, "echo came back changed");
            return allocations;
        }
    }
    panic!("no echo of {} bytes after 1000 steps", out.len());
}

#[test]
fn tcp_echo_allocates_nothing_per_segment() {
    let mut pair = Pair::with_echo(16);
    let stream = TcpStream::connect(&pair.client.stack, addr(SERVER4, 7)).unwrap();
    pair.run_until("connected", 1000, |_| stream.is_connected());
    let mut back = vec![0; 2000];
    let mut total = 0;
    for round in 0..WARM_UP + ROUNDS {
        // Sizes from 1 byte to more than one segment, so every path runs in the warm-up.
        let out: Vec<u8> = (0..1 + round * 7 % 1800)
            .map(|i| (i + round) as u8)
            .collect();
        let allocations = tcp_round_trip(&mut pair, &stream, &out, &mut back);
        if round >= WARM_UP {
            total += allocations;
        }
        // The timer queue's stale entries are pruned: it does not grow with traffic.
        let stack = &pair.server.stack;
        assert!(
            stack.timer_entries() <= 2 * stack.socket_count() + 64,
            "{} timer entries for {} sockets after {round} round trips",
            stack.timer_entries(),
            stack.socket_count()
        );
    }
    assert_eq!(
        total, 0,
        "{total} allocations in {ROUNDS} TCP echo round trips after warm-up"
    );
}

#[test]
fn udp_echo_allocates_nothing_per_datagram() {
    let mut pair = Pair::with_echo(16);
    let client = UdpSocket::bind(&pair.client.stack, addr(CLIENT4, 0)).unwrap();
    let server = addr(SERVER4, 7);
    let mut back = vec![0; 2000];
    let mut total = 0;
    for round in 0..WARM_UP + ROUNDS {
        let out: Vec<u8> = (0..1 + round * 13 % 1400)
            .map(|i| (i ^ round) as u8)
            .collect();
        client.send_to(&out, server).unwrap();
        let mut answer = None;
        for _ in 0..100 {
            total += counted(|| {
                pair.step();
                pair.client.ready.clear();
            })
            .1 * usize::from(round >= WARM_UP);
            if let Ok(got) = client.recv_from(&mut back) {
                answer = Some(got);
                break;
            }
        }
        let (n, from) = answer.expect("no UDP echo");
        assert_eq!(from, server);
        assert_eq!(&back[..n], &out[..], "echo came back changed");
    }
    assert_eq!(
        total, 0,
        "{total} allocations in {ROUNDS} UDP echo round trips after warm-up"
    );
}

/// An ICMP echo request from 192.168.69.1 to 192.168.69.2 with `payload`.
fn echo_request(seq: u16, payload: &[u8]) -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ipv4([192, 168, 69, 1], [192, 168, 69, 2], 64)
        .icmpv4_echo_request(0x77, seq);
    // Room for the reply too: the link reuses the buffers it receives.
    let mut packet = Vec::with_capacity(1500);
    builder.write(&mut packet, payload).unwrap();
    packet
}

#[test]
fn ping_allocates_nothing_per_echo() {
    let (mut link, peer) = MemoryLink::pair(1500);
    let now = Instant::ZERO;
    let stack = Stack::new(StackConfig::default(), &mut link, now);
    let mut total = 0;
    for round in 0..WARM_UP + ROUNDS {
        let payload: Vec<u8> = (0..1 + round * 11 % 1400).map(|i| i as u8).collect();
        peer.send_raw(echo_request(round as u16, &payload));
        let now = now + Duration::from_millis(round as u64);
        let allocations = counted(|| stack.poll(now, &mut link)).1;
        if round >= WARM_UP {
            total += allocations;
        }
        let reply = peer.recv_raw().expect("no echo reply");
        let ip = etherparse::SlicedPacket::from_ip(&reply).expect("reply does not parse");
        match ip.transport {
            Some(etherparse::TransportSlice::Icmpv4(icmp)) => {
                assert_eq!(icmp.payload(), &payload[..], "echo came back changed")
            }
            other => panic!("expected an ICMP echo reply, got {other:?}"),
        }
    }
    assert_eq!(
        total, 0,
        "{total} allocations in {ROUNDS} pings after warm-up"
    );
}

/// A UDP datagram over IPv6 from `src` to `dport`, with room for the answer, behind one
/// extension header given as its type followed by its bytes after the Next Header field.
fn datagram(src: [u8; 16], dport: u16, extensions: &[u8]) -> Vec<u8> {
    let mut plain = Vec::new();
    etherparse::PacketBuilder::ipv6(
        src,
        [0xfd, 0x69, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
        64,
    )
    .udp(40000, dport)
    .write(&mut plain, b"x")
    .unwrap();
    let mut packet = Vec::with_capacity(1500);
    packet.extend_from_slice(&plain[..40]);
    if let Some(&first) = extensions.first() {
        packet[6] = first;
        packet.extend_from_slice(&[17]);
        packet.extend_from_slice(&extensions[1..]);
    }
    packet.extend_from_slice(&plain[40..]);
    let len = (packet.len() - 40) as u16;
    packet[4..6].copy_from_slice(&len.to_be_bytes());
    packet
}

#[test]
fn icmp_errors_their_rate_limit_and_extension_headers_allocate_nothing() {
    let (mut link, peer) = MemoryLink::pair(1500);
    let stack = Stack::new(StackConfig::default(), &mut link, Instant::ZERO);
    let mut echo = tunstack::app::EchoServer::bind(&stack, addr("::", 7), 8).unwrap();
    let mut ready = Vec::with_capacity(64);
    let host = |last: u8| [0xfd, 0x69, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, last];
    // Destination Options (60) with a PadN: taken out before smoltcp sees the datagram.
    let options = [60, 0, 1, 4, 0, 0, 0, 0];
    let (mut total, mut answers) = (0, 0);
    for round in 0..WARM_UP + ROUNDS {
        // Errors to ever new hosts go out (one a millisecond); to one host, most are limited.
        peer.send_raw(datagram(host(round as u8), 9, &[]));
        peer.send_raw(datagram(host(0), 9, &[]));
        peer.send_raw(datagram(host(0), 7, &options));
        let now = Instant::from_millis(round as i64);
        let allocations = counted(|| {
            stack.poll(now, &mut link);
            stack.take_ready(&mut ready);
            echo.on_ready(&ready);
            ready.clear();
            stack.poll(now, &mut link);
        })
        .1;
        if round >= WARM_UP {
            total += allocations;
        }
        while peer.recv_raw().is_some() {
            answers += 1;
        }
    }
    let stats = stack.stats();
    assert!(stats.icmp_rate_limited >= ROUNDS as u64, "{stats}");
    assert!(
        answers >= 2 * (WARM_UP + ROUNDS) - 10,
        "echoes and errors: {answers}"
    );
    assert_eq!(
        total, 0,
        "{total} allocations in {ROUNDS} rounds of ICMP errors and extension headers"
    );
}
