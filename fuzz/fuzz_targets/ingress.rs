//! libFuzzer target: arbitrary bytes, cut into packets, through the whole receive path —
//! reassembly, classification, the flow table, smoltcp, the echo app and the packet trace.
//! Run with `scripts/fuzz.sh`. No input may panic; the stack must stay consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tunstack::app::EchoServer;
use tunstack::phy::MemoryLink;
use tunstack::smoltcp::time::{Duration, Instant};
use tunstack::trace::{Observers, Tracer};
use tunstack::{Stack, StackConfig};

/// At most this many packets per input.
const MAX_PACKETS: usize = 32;

fuzz_target!(|data: &[u8]| {
    let (mut device, wire) = MemoryLink::pair(1500);
    let mut now = Instant::ZERO;
    let stack = Stack::new(StackConfig::default(), &mut device, now);
    let (tracer, _lines) = Tracer::capture();
    stack.set_observer(Box::new(Observers(vec![Box::new(tracer)])));
    let Ok(mut echo) = EchoServer::bind(&stack, "[::]:7".parse().expect("address"), 8) else {
        return;
    };
    let mut ready = Vec::new();
    let mut rest = data;
    for _ in 0..MAX_PACKETS {
        // Each packet: a 2-byte length, then that many bytes (whatever is left if fewer).
        let Some((len, tail)) = rest.split_first_chunk::<2>() else {
            break;
        };
        let len = usize::from(u16::from_be_bytes(*len)) % 2048;
        let (packet, tail) = tail.split_at(len.min(tail.len()));
        rest = tail;
        wire.send_raw(packet.to_vec());
        stack.poll(now, &mut device);
        ready.clear();
        stack.take_ready(&mut ready);
        echo.on_ready(&ready);
        now += Duration::from_millis(u64::from(packet.first().copied().unwrap_or(0)));
        while wire.recv_raw().is_some() {}
    }
    // Timers of whatever state the packets left behind must run without trouble too.
    for _ in 0..8 {
        now += Duration::from_secs(5);
        stack.poll(now, &mut device);
        while wire.recv_raw().is_some() {}
    }
    let _ = stack.socket_table();
    let _ = stack.stats().to_string();
});
