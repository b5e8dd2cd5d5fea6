//! Cases 3, 5, 8, 11: floods — SYN flood beside a streaming session, incomplete fragment
//! trains, ping -f with large and fragmented pings, UDP flood beside TCP.

use crate::common::{Capture, ECHO_PORT, Netns, STACK_V4, STACK_V6, TempDir, describe, poll_until};
use crate::hostile::clients::{Stream, probe};
use crate::hostile::{
    ACCEPT_BACKLOG, Crafter, Report, RssWatch, SLACK_KIB, SYN_BACKLOG, TCP_BUFFER_KIB,
    assert_survived, exclusive_load, from_stack, numbers, run_script, script_line, stack_pid,
    start, wait_for_rx,
};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- 3: SYN flood

#[test]
fn syn_flood_spares_a_streaming_session_and_new_connections() {
    let test = "syn-flood";
    let Some((netns, mut stack)) = start(test, &[]) else {
        return;
    };
    let _load = exclusive_load();
    let memory = RssWatch::start(stack_pid(&netns));
    let before = Report::query(&netns);
    let stream = Stream::start(&netns, STACK_V4, 16 * 1024, Duration::from_millis(10));
    // Four spoofed in-namespace sources, hping3 counting up its source port per SYN.
    let floods: Vec<Child> = (100..104)
        .map(|host| {
            let source = format!("192.168.69.{host}");
            let args = [
                "-q", "-S", "-p", ECHO_PORT, "-a", &source, "-i", "u100", "-c", "25000", STACK_V4,
            ];
            netns
                .command_bounded(Duration::from_secs(60), "hping3", &args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("cannot start hping3")
        })
        .collect();
    let flood_started = Instant::now();
    let mut during = Vec::new();
    let mut floods_left = floods;
    while !floods_left.is_empty() {
        during.push(probe(&netns, STACK_V4, during.len()));
        floods_left.retain_mut(|child| child.try_wait().ok().flatten().is_none());
    }
    let flood_time = flood_started.elapsed();
    let after_flood = probe(&netns, STACK_V4, during.len());
    let streamed = stream.finish("session streaming through the SYN flood");
    let report = Report::query(&netns);

    let failed: Vec<&String> = during.iter().filter_map(|p| p.as_ref().err()).collect();
    let slowest = during.iter().filter_map(|p| p.as_ref().ok()).max();
    eprintln!(
        "{test}: flood {flood_time:?}; SYNs read by the stack {}, syn-queue-evicted +{}; \
         {} probes during it, {} failed, slowest {slowest:?}; probe right after: {after_flood:?}; \
         streamed {streamed} bytes intact",
        report.rx_packets - before.rx_packets,
        report.drop_count("syn-queue-evicted") - before.drop_count("syn-queue-evicted"),
        during.len(),
        failed.len(),
    );
    memory.assert_growth_below(
        (SYN_BACKLOG + ACCEPT_BACKLOG + 8) * 2 * TCP_BUFFER_KIB + SLACK_KIB,
        test,
    );
    assert!(
        failed.is_empty(),
        "{} of {} connections during the flood failed:\n{}",
        failed.len(),
        during.len(),
        failed
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    match after_flood {
        Ok(took) => assert!(
            took <= Duration::from_secs(1),
            "the first connection after the flood took {took:?} (limit 1 s)"
        ),
        Err(reason) => panic!("the first connection after the flood failed: {reason}"),
    }
    assert_survived(&netns, &mut stack, test);
}

// ---------------------------------------------------------------- 5: fragments

/// ping with `size` payload bytes, `count` times; true if every one was answered.
fn ping_ok(netns: &Netns, family: &str, address: &str, size: usize, count: usize) -> bool {
    let (size, count) = (size.to_string(), count.to_string());
    let args = [
        family, "-n", "-q", "-c", &count, "-i", "0.05", "-W", "1", "-s", &size, address,
    ];
    let output = netns.run(Duration::from_secs(30), "ping", &args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    output.status.success() && stdout.contains(&format!("{count} received"))
}

/// Fragmented UDP echo (3000-byte datagrams) and a fragmented ping both work.
fn reassembly_works(netns: &Netns) -> Result<(), String> {
    let line = script_line(
        netns,
        Duration::from_secs(30),
        "peers.py",
        &["udp-echo", STACK_V4, ECHO_PORT, "5", "3000"],
    );
    let counts = numbers(&line);
    if counts.get("echoed") != Some(&5) {
        return Err(format!("fragmented UDP echo: {line}"));
    }
    if !ping_ok(netns, "-4", STACK_V4, 4000, 3) {
        return Err("ping -s 4000 was not answered".into());
    }
    Ok(())
}

#[test]
fn fragment_floods_leave_memory_bounded_and_reassembly_working() {
    let test = "fragments";
    let Some((netns, mut stack)) = start(test, &[]) else {
        return;
    };
    // A queue long enough that the kernel hands the stack every fragment we write.
    netns.run_ok(
        Duration::from_secs(5),
        "ip",
        &["link", "set", "tun0", "txqueuelen", "20000"],
    );
    let _load = exclusive_load();
    let memory = RssWatch::start(stack_pid(&netns));
    let lone = Report::query(&netns);
    run_script(
        &netns,
        Duration::from_secs(30),
        "craft.py",
        &["fragments", "tun0", "1"],
    );
    wait_for_rx(&netns, &lone, 1, Duration::from_secs(3));
    if let Err(reason) = reassembly_works(&netns) {
        panic!("after a lone first fragment: {reason}");
    }

    let before = Report::query(&netns);
    let trains = 10_000;
    run_script(
        &netns,
        Duration::from_secs(60),
        "craft.py",
        &["fragments", "tun0", &trains.to_string()],
    );
    let after = wait_for_rx(&netns, &before, trains, Duration::from_secs(20));
    let flooded = Instant::now();
    let read = after.rx_packets - before.rx_packets;
    let immediately = reassembly_works(&netns);
    let mut recovered = immediately.clone();
    let reassembly_timeout = Duration::from_secs(10);
    poll_until(reassembly_timeout + Duration::from_secs(5), || {
        recovered = reassembly_works(&netns);
        recovered.is_ok()
    });
    eprintln!(
        "{test}: {trains} incomplete trains written, {read} read by the stack; reassembly right \
         after: {immediately:?}; working again after {:?}: {recovered:?}; drops {:?}",
        flooded.elapsed(),
        after.drop_changes(&before)
    );
    assert_eq!(read, trains, "the stack did not read every fragment");
    memory.assert_growth_below(8 * 1024, test);
    if let Err(reason) = recovered {
        panic!(
            "valid fragmented datagrams still fail {:?} after {trains} incomplete trains: {reason}",
            flooded.elapsed()
        );
    }
    assert_survived(&netns, &mut stack, test);
}

// ---------------------------------------------------------------- 8: ICMP

#[test]
fn ping_flood_large_pings_and_bad_checksum_pings() {
    let test = "icmp";
    let Some((netns, mut stack)) = start(test, &[]) else {
        return;
    };
    let _load = exclusive_load();
    for (family, address) in [("-4", STACK_V4), ("-6", STACK_V6)] {
        let started = Instant::now();
        let args = [family, "-n", "-q", "-f", "-c", "10000", "-W", "1", address];
        let output = netns.run(Duration::from_secs(120), "ping", &args);
        let stdout = String::from_utf8_lossy(&output.stdout);
        eprintln!(
            "{test}: ping {family} -f -c 10000 in {:?}: {}",
            started.elapsed(),
            stdout
                .lines()
                .filter(|l| l.contains("packets"))
                .collect::<String>()
        );
        assert!(
            output.status.success() && stdout.contains("10000 received, 0% packet loss"),
            "ping -f {address} lost packets:\n{}",
            describe(&output)
        );
    }
    let pings = [
        ("-4", STACK_V4, 1472),
        ("-4", STACK_V4, 4000),
        ("-4", STACK_V4, 65000),
        ("-6", STACK_V6, 1452),
        ("-6", STACK_V6, 4000),
        ("-6", STACK_V6, 65000),
    ];
    for (family, address, size) in pings {
        assert!(
            ping_ok(&netns, family, address, size, 3),
            "ping {family} -s {size} {address} was not answered every time"
        );
    }
    let dir = TempDir::new(test);
    let capture = Capture::start(&netns, "any", &dir.file("icmp.pcap"));
    let before = Report::query(&netns);
    let mut crafter = Crafter::start(&netns);
    crafter.send("icmp-checksum");
    crafter.send("icmp6-checksum");
    let after = wait_for_rx(&netns, &before, 2, Duration::from_secs(3));
    drop(crafter);
    let replies = from_stack(&netns, capture, "icmp or icmp6");
    assert!(
        replies.is_empty(),
        "bad-checksum echo requests were answered:\n{}",
        replies.join("\n")
    );
    assert_eq!(
        after.drop_count("bad-checksum") - before.drop_count("bad-checksum"),
        2,
        "bad-checksum pings not counted:\n{}",
        after.text
    );
    assert_survived(&netns, &mut stack, test);
}

// ---------------------------------------------------------------- 11: UDP flood

#[test]
fn udp_flood_beside_a_tcp_session_is_bounded_and_counted() {
    let test = "udp-flood";
    let Some((netns, mut stack)) = start(test, &[]) else {
        return;
    };
    let _load = exclusive_load();
    let memory = RssWatch::start(stack_pid(&netns));
    // UDP alone first: every datagram the stack reads is echoed or counted.
    let mut accounts = Vec::new();
    for size in ["1472", "16"] {
        let before = Report::query(&netns);
        let args = ["udp-flood", STACK_V4, ECHO_PORT, "1", size];
        let line = script_line(&netns, Duration::from_secs(30), "peers.py", &args);
        let after = Report::query(&netns);
        let (read, written) = (
            after.rx_packets - before.rx_packets,
            after.tx_packets - before.tx_packets,
        );
        let full = after.drop_count("udp-buffer-full") - before.drop_count("udp-buffer-full");
        accounts.push(format!(
            "{size}-byte flood: {line}; stack read {read}, echoed {written}, udp-buffer-full {full}"
        ));
        assert_eq!(
            read,
            written + full,
            "{size}-byte UDP flood: the stack read {read} datagrams but echoed {written} and \
             counted {full} as udp-buffer-full ({line})"
        );
    }
    // Then the flood beside a streaming TCP session.
    let before = Report::query(&netns);
    let stream = Stream::start(&netns, STACK_V4, 16 * 1024, Duration::from_millis(10));
    let args = ["udp-flood", STACK_V4, ECHO_PORT, "4", "1472"];
    let line = script_line(&netns, Duration::from_secs(30), "peers.py", &args);
    let streamed = stream.finish("TCP session beside the UDP flood");
    let after = Report::query(&netns);
    let counts = numbers(&line);
    let full = after.drop_count("udp-buffer-full") - before.drop_count("udp-buffer-full");
    eprintln!(
        "{test}: {}\nbeside TCP: {line}; udp-buffer-full +{full}; TCP streamed {streamed} bytes intact",
        accounts.join("\n")
    );
    assert!(
        counts["received"] == counts["sent"] || full > 0,
        "datagrams went missing ({line}) but udp-buffer-full did not rise"
    );
    assert_eq!(counts["wrong"], 0, "corrupted UDP echoes: {line}");
    memory.assert_growth_below(4 * 1024, test);
    assert_survived(&netns, &mut stack, test);
}
