//! `tunstack echo` on a real TUN device, driven by ping, nc and socat from the host side
//! of the link: ICMP echo (plain and fragmented), TCP and UDP echo, RST for closed ports.
//! Each test runs in its own network namespace (tests/common), so tests run in parallel
//! and never touch the machine's real network. Needs root.

mod common;

use common::{
    ECHO_PORT, Netns, STACK_V4, STACK_V6, TempDir, assert_same_bytes, describe, start_stack,
};
use std::fs::File;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- ICMP

/// Pings `address` `count` times with `size` payload bytes; every one must be answered.
fn assert_ping_answered(netns: &Netns, family: &str, address: &str, size: usize) {
    let (count, size_arg) = ("3", size.to_string());
    let args = [
        family, "-n", "-c", count, "-i", "0.2", "-w", "10", "-s", &size_arg, address,
    ];
    let output = netns.run(Duration::from_secs(20), "ping", &args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let all_answered = stdout.contains(&format!("{count} packets transmitted, {count} received"));
    assert!(
        output.status.success() && all_answered,
        "ping {} did not get {count} answers:\n{}",
        args.join(" "),
        describe(&output)
    );
    let reply = format!("{} bytes from {address}", size + 8);
    assert!(
        stdout.contains(&reply),
        "no reply of full size ({reply:?}):\n{stdout}"
    );
}

#[test]
fn ping_v4_is_answered() {
    let Some((netns, stack)) = start_stack("ping4", &[]) else {
        return;
    };
    assert_ping_answered(&netns, "-4", STACK_V4, 56);
    stack.assert_no_panic();
}

#[test]
fn ping_v6_is_answered() {
    let Some((netns, stack)) = start_stack("ping6", &[]) else {
        return;
    };
    assert_ping_answered(&netns, "-6", STACK_V6, 56);
    stack.assert_no_panic();
}

#[test]
fn fragmented_ping_v4_is_answered() {
    let Some((netns, stack)) = start_stack("ping4-frag", &[]) else {
        return;
    };
    assert_ping_answered(&netns, "-4", STACK_V4, 4000);
    stack.assert_no_panic();
}

#[test]
fn fragmented_ping_v6_is_answered() {
    let Some((netns, stack)) = start_stack("ping6-frag", &[]) else {
        return;
    };
    assert_ping_answered(&netns, "-6", STACK_V6, 4000);
    stack.assert_no_panic();
}

// ---------------------------------------------------------------- TCP echo

/// `nc` sending `input` to the echo port and writing what comes back to `output`.
/// -N: shut down our sending side at end of input; -w: give up when idle.
fn spawn_nc(netns: &Netns, address: &str, input: &File, output: &File) -> Child {
    netns
        .command_bounded(
            Duration::from_secs(90),
            "nc",
            &["-N", "-w", "10", address, ECHO_PORT],
        )
        .stdin(input.try_clone().unwrap())
        .stdout(output.try_clone().unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start nc")
}

fn tcp_echo_round_trip(test: &str, address: &str, len: u64) {
    let Some((netns, stack)) = start_stack(test, &[]) else {
        return;
    };
    let dir = TempDir::new(test);
    let sent = dir.random_file("sent", len);
    let received = dir.file("received");
    let started = Instant::now();
    let nc = spawn_nc(
        &netns,
        address,
        &File::open(&sent).unwrap(),
        &File::create(&received).unwrap(),
    );
    let output = nc.wait_with_output().unwrap();
    eprintln!("{test}: {len} bytes echoed in {:?}", started.elapsed());
    assert!(
        output.status.success(),
        "nc to {address} failed:\n{}",
        describe(&output)
    );
    assert_same_bytes(&sent, &received, &format!("TCP echo via {address}"));
    stack.assert_no_panic();
}

#[test]
fn tcp_echo_one_mebibyte_v4() {
    tcp_echo_round_trip("tcp-1mib-v4", STACK_V4, 1 << 20);
}

#[test]
fn tcp_echo_one_mebibyte_v6() {
    tcp_echo_round_trip("tcp-1mib-v6", STACK_V6, 1 << 20);
}

#[test]
fn tcp_echo_fifty_concurrent_clients() {
    let test = "tcp-50-clients";
    let Some((netns, stack)) = start_stack(test, &[]) else {
        return;
    };
    let dir = TempDir::new(test);
    let clients: Vec<_> = (0..50u64)
        .map(|i| {
            let address = if i % 2 == 0 { STACK_V4 } else { STACK_V6 };
            let sent = dir.random_file(&format!("sent-{i}"), 20_000 + i * 997);
            let received = dir.file(&format!("received-{i}"));
            let input = File::open(&sent).unwrap();
            let nc = spawn_nc(&netns, address, &input, &File::create(&received).unwrap());
            (i, address, sent, received, nc)
        })
        .collect();
    let mut failures = Vec::new();
    for (i, address, sent, received, nc) in clients {
        let output = nc.wait_with_output().unwrap();
        if !output.status.success() {
            failures.push(format!(
                "client {i} ({address}): nc failed: {}",
                describe(&output)
            ));
            continue;
        }
        let (sent_bytes, received_bytes) = (
            std::fs::read(&sent).unwrap(),
            std::fs::read(&received).unwrap(),
        );
        if sent_bytes != received_bytes {
            failures.push(format!(
                "client {i} ({address}): sent {} bytes, got back {} bytes{}",
                sent_bytes.len(),
                received_bytes.len(),
                if received_bytes.len() == sent_bytes.len() {
                    " (different content)"
                } else {
                    ""
                }
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 50 clients failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    stack.assert_no_panic();
}

// ---------------------------------------------------------------- UDP echo

/// Sends `payload` as one datagram with socat and returns what came back.
fn udp_round_trip(
    netns: &Netns,
    dir: &TempDir,
    target: &str,
    payload: &[u8],
    tag: &str,
) -> Vec<u8> {
    let sent = dir.file(&format!("udp-sent-{tag}"));
    let received = dir.file(&format!("udp-received-{tag}"));
    std::fs::write(&sent, payload).unwrap();
    // -t: after sending, wait this long for the answer; -b: read the file as one datagram.
    let args = ["-t", "1", "-b", "65536", "-", target];
    let output = netns
        .command_bounded(Duration::from_secs(10), "socat", &args)
        .stdin(File::open(&sent).unwrap())
        .stdout(File::create(&received).unwrap())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "socat {} failed:\n{}",
        args.join(" "),
        describe(&output)
    );
    std::fs::read(&received).unwrap()
}

fn udp_echo(test: &str, target: &str) {
    let Some((netns, stack)) = start_stack(test, &[]) else {
        return;
    };
    let dir = TempDir::new(test);
    for size in [1u64, 512, 1400] {
        let tag = size.to_string();
        let payload = std::fs::read(dir.random_file(&format!("payload-{size}"), size)).unwrap();
        // UDP may lose a datagram; on a local TUN it should not, so allow one retry only.
        let mut echoed = udp_round_trip(&netns, &dir, target, &payload, &tag);
        if echoed.is_empty() {
            eprintln!("{test}: no answer to a {size}-byte datagram; retrying once");
            echoed = udp_round_trip(&netns, &dir, target, &payload, &tag);
        }
        assert_eq!(
            echoed.len(),
            payload.len(),
            "{size}-byte datagram to {target}: wrong echo length"
        );
        assert!(
            echoed == payload,
            "{size}-byte datagram to {target}: echoed bytes differ"
        );
    }
    stack.assert_no_panic();
}

#[test]
fn udp_echo_v4() {
    udp_echo("udp-v4", &format!("UDP4:{STACK_V4}:{ECHO_PORT}"));
}

#[test]
fn udp_echo_v6() {
    udp_echo("udp-v6", &format!("UDP6:[{STACK_V6}]:{ECHO_PORT}"));
}

// ---------------------------------------------------------------- RST, signals, errors

fn closed_port_is_refused(test: &str, address: &str) {
    let Some((netns, stack)) = start_stack(test, &[]) else {
        return;
    };
    let started = Instant::now();
    let output = netns.run(
        Duration::from_secs(10),
        "nc",
        &["-z", "-v", "-w", "3", address, "9"],
    );
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "nc -z {address} 9 succeeded:\n{}",
        describe(&output)
    );
    assert!(
        stderr.contains("refused") && elapsed < Duration::from_secs(2),
        "port 9 should be refused at once (RST), took {elapsed:?}:\n{}",
        describe(&output)
    );
    stack.assert_no_panic();
}

#[test]
fn closed_port_gets_rst_v4() {
    closed_port_is_refused("rst-v4", STACK_V4);
}

#[test]
fn closed_port_gets_rst_v6() {
    closed_port_is_refused("rst-v6", STACK_V6);
}
