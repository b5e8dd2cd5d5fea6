//! Loss on the in-memory link, in virtual time: the echo still comes back byte-identical
//! through 10% drop (and through drop + corruption), and the injected faults are counted.

use tunstack::app::EchoServer;
use tunstack::phy::{FaultConfig, FaultyDevice, MemoryLink};
use tunstack::smoltcp::time::{Duration, Instant};
use tunstack::smoltcp::wire::IpCidr;
use tunstack::stats::DropReason;
use tunstack::{Stack, StackConfig, TcpStream};

fn echo_through_faults(
    faults: FaultConfig,
    len: usize,
) -> (FaultyDevice<MemoryLink>, Stack, Duration) {
    echo_through_faults_with(StackConfig::default(), faults, len)
}

fn echo_through_faults_with(
    server_config: StackConfig,
    faults: FaultConfig,
    len: usize,
) -> (FaultyDevice<MemoryLink>, Stack, Duration) {
    let (server_link, mut client_link) = MemoryLink::pair(1500);
    let mut server_dev = FaultyDevice::new(server_link, faults);
    let mut now = Instant::ZERO;
    let server = Stack::new(server_config, &mut server_dev, now);
    let client_config = StackConfig {
        addresses: vec!["192.168.69.1/24".parse::<IpCidr>().unwrap()],
        ..StackConfig::default()
    };
    let client = Stack::new(client_config, &mut client_link, now);
    let mut echo = EchoServer::bind(&server, "[::]:7".parse().unwrap(), 8).unwrap();
    let stream = TcpStream::connect(&client, "192.168.69.2:7".parse().unwrap()).unwrap();
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    let (mut sent, mut got) = (0, Vec::with_capacity(len));
    let mut buf = vec![0; 65536];
    let mut ready = Vec::new();
    for _ in 0..2_000_000 {
        server.poll(now, &mut server_dev);
        client.poll(now, &mut client_link);
        ready.clear();
        server.take_ready(&mut ready);
        echo.on_ready(&ready);
        ready.clear();
        client.take_ready(&mut ready); // the loop below looks at the one stream anyway
        if stream.is_connected() && sent < len {
            sent += stream.write(&data[sent..]).unwrap_or(0);
        }
        while let Ok(n @ 1..) = stream.read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        if got.len() >= len {
            assert!(got == data, "echo differs under faults {faults:?}");
            return (server_dev, server, now - Instant::ZERO);
        }
        let next = [server.poll_delay(now), client.poll_delay(now)]
            .into_iter()
            .flatten()
            .min();
        now += next
            .unwrap_or(Duration::from_millis(1))
            .min(Duration::from_millis(200));
    }
    panic!("only {} of {len} bytes echoed under {faults:?}", got.len());
}

#[test]
fn one_mebibyte_survives_ten_percent_drop() {
    let faults = FaultConfig {
        drop_pct: 10,
        seed: 1,
        ..FaultConfig::default()
    };
    let (device, server, took) = echo_through_faults(faults, 1 << 20);
    let injected = device.stats();
    assert!(
        injected.rx_dropped > 50 && injected.tx_dropped > 50,
        "{injected:?}"
    );
    let retransmits = server.stats().tcp_retransmits;
    assert!(retransmits > 0, "lost segments must have been sent again");
    eprintln!("1 MiB through 10% drop: {took} virtual, {injected:?}, {retransmits} retransmitted");
    // Both ends send, so every ACK carries data and smoltcp alone never counts a duplicate
    // ACK: each loss waited out the timeout (194 s virtual). The SACK blocks start fast
    // retransmits instead (20 s).
    let recoveries = server.stats().sack_recoveries;
    assert!(recoveries > 10, "{recoveries} SACK recoveries");
    assert!(
        took < Duration::from_secs(60),
        "1 MiB through 10% drop took {took} (virtual)"
    );
}

#[test]
fn corruption_is_caught_by_checksums_and_repaired_by_retransmission() {
    let faults = FaultConfig {
        drop_pct: 5,
        corrupt_pct: 1,
        duplicate_pct: 1,
        seed: 7,
    };
    let (device, server, _) = echo_through_faults(faults, 256 * 1024);
    let injected = device.stats();
    assert!(
        injected.rx_corrupted > 0 && injected.rx_duplicated > 0,
        "{injected:?}"
    );
    let stats = server.stats();
    let caught = stats.drops_for(DropReason::BadChecksum)
        + stats.drops_for(DropReason::Malformed)
        + stats.drops_for(DropReason::NotForUs)
        + stats.drops_for(DropReason::BadSource);
    assert!(
        caught > 0,
        "corrupted packets must be dropped, not delivered: {stats}"
    );
}

#[test]
fn a_syn_cookie_connection_survives_drop_corruption_and_duplication() {
    let faults = FaultConfig {
        drop_pct: 10,
        corrupt_pct: 1,
        duplicate_pct: 1,
        seed: 3,
    };
    let server_config = StackConfig {
        syn_backlog: 0, // no half-open socket: the handshake is by cookie
        ..StackConfig::default()
    };
    let (device, server, took) = echo_through_faults_with(server_config, faults, 512 * 1024);
    let stats = server.stats();
    assert_eq!(stats.syn_cookies_accepted, 1, "{stats}");
    assert_eq!(stats.tcp_established, 1, "{stats}");
    eprintln!(
        "512 KiB by cookie through faults: {took} virtual, {:?}",
        device.stats()
    );
}
