//! `tunstack connect` — the stack as a client — against real servers on the host side of
//! the TUN (`nc -l`, `socat`), in a private namespace: 1 MiB byte-identical both ways over
//! IPv4 and IPv6, a UDP exchange with sendto/recvfrom, and a prompt "connection refused"
//! for TCP (RST) and UDP (ICMP port unreachable).

mod common;

use common::{Netns, Stack, TempDir, assert_same_bytes, describe, poll_until, require_root};
use std::fs::File;
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

/// Waits until something in `netns` listens on TCP (`udp` false) or UDP `port`.
fn wait_listening(netns: &Netns, port: u16, udp: bool) {
    let flags = if udp { "-uln" } else { "-tln" };
    let listening = poll_until(Duration::from_secs(10), || {
        let out = netns.run(Duration::from_secs(5), "ss", &[flags]);
        String::from_utf8_lossy(&out.stdout).contains(&format!(":{port} "))
    });
    assert!(listening, "nothing listens on port {port} in the namespace");
}

/// Runs `tunstack connect` with `args`, stdin from `input`, stdout into `output`.
fn connect(netns: &Netns, args: &[&str], input: &Path, output: &Path) -> Output {
    let mut full = vec!["connect"];
    full.extend_from_slice(args);
    netns
        .command_bounded(Duration::from_secs(60), Stack::binary(), &full)
        .stdin(File::open(input).unwrap())
        .stdout(File::create(output).unwrap())
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

/// Runs `tunstack connect args`, which must exit 1 saying "connection refused" (and not
/// panic); returns how long it took.
fn assert_refused(netns: &Netns, args: &[&str], input: &Path, output: &Path) -> Duration {
    let started = Instant::now();
    let client = connect(netns, args, input, output);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&client.stderr);
    assert_eq!(
        client.status.code(),
        Some(1),
        "exit status:\n{}",
        describe(&client)
    );
    assert!(
        stderr.contains("connection refused"),
        "stderr must say why:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    took
}

/// A host-side server process with stdin from `input` and stdout into `output`.
fn serve(netns: &Netns, program: &str, args: &[&str], input: &Path, output: &Path) -> Child {
    netns
        .command_bounded(Duration::from_secs(60), program, args)
        .stdin(File::open(input).unwrap())
        .stdout(File::create(output).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn connect_exchanges_a_mebibyte_both_ways_with_nc_listen_over_v4_and_v6() {
    if !require_root("connect-nc") {
        return;
    }
    let netns = Netns::new("connect-nc");
    let dir = TempDir::new("connect-nc");
    for (host, port) in [("192.168.69.1", 5000u16), ("fd69::1", 5001)] {
        let to_stack = dir.random_file(&format!("down-{port}"), 1 << 20);
        let to_host = dir.random_file(&format!("up-{port}"), 1 << 20);
        let (got_stack, got_host) = (
            dir.file(&format!("got-down-{port}")),
            dir.file(&format!("got-up-{port}")),
        );
        let port_arg = port.to_string();
        let server = serve(
            &netns,
            "nc",
            &["-N", "-l", host, &port_arg],
            &to_stack,
            &got_host,
        );
        wait_listening(&netns, port, false);
        let client = connect(&netns, &[host, &port_arg], &to_host, &got_stack);
        assert!(
            client.status.success(),
            "tunstack connect {host}:{port} failed:\n{}",
            describe(&client)
        );
        let server = server.wait_with_output().unwrap();
        assert!(
            server.status.success(),
            "nc -l failed:\n{}",
            describe(&server)
        );
        assert_same_bytes(&to_stack, &got_stack, &format!("nc -> stack over {host}"));
        assert_same_bytes(&to_host, &got_host, &format!("stack -> nc over {host}"));
    }
}

#[test]
fn connect_gets_its_mebibyte_echoed_by_socat_over_v4_and_v6() {
    if !require_root("connect-socat") {
        return;
    }
    let netns = Netns::new("connect-socat");
    let dir = TempDir::new("connect-socat");
    let empty = dir.file("empty");
    File::create(&empty).unwrap();
    for (listen, host, port) in [
        (
            "TCP4-LISTEN:5100,bind=192.168.69.1,reuseaddr",
            "192.168.69.1",
            5100u16,
        ),
        ("TCP6-LISTEN:5101,bind=[fd69::1],reuseaddr", "fd69::1", 5101),
    ] {
        let data = dir.random_file(&format!("data-{port}"), 1 << 20);
        let echoed = dir.file(&format!("echoed-{port}"));
        let server = serve(
            &netns,
            "socat",
            &[listen, "EXEC:cat"],
            &empty,
            &dir.file("socat-out"),
        );
        wait_listening(&netns, port, false);
        let client = connect(&netns, &[host, &port.to_string()], &data, &echoed);
        assert!(
            client.status.success(),
            "tunstack connect {host}:{port} failed:\n{}",
            describe(&client)
        );
        assert_same_bytes(&data, &echoed, &format!("socat echo over {host}"));
        let server = server.wait_with_output().unwrap();
        assert!(
            server.status.success(),
            "socat failed:\n{}",
            describe(&server)
        );
    }
}

#[test]
fn udp_connect_sends_to_and_receives_from_a_host_side_echo() {
    if !require_root("connect-udp") {
        return;
    }
    let netns = Netns::new("connect-udp");
    let dir = TempDir::new("connect-udp");
    let empty = dir.file("empty");
    File::create(&empty).unwrap();
    for (listen, host, port) in [
        (
            "UDP4-RECVFROM:5353,bind=192.168.69.1,fork",
            "192.168.69.1",
            5353u16,
        ),
        ("UDP6-RECVFROM:5354,bind=[fd69::1],fork", "fd69::1", 5354),
    ] {
        let mut server = serve(
            &netns,
            "socat",
            &[listen, "EXEC:cat"],
            &empty,
            &dir.file("out"),
        );
        wait_listening(&netns, port, true);
        let input = dir.file(&format!("in-{port}"));
        std::fs::write(&input, format!("a datagram for {host}\n")).unwrap();
        let output = dir.file(&format!("got-{port}"));
        let client = connect(
            &netns,
            &["-u", "-w", "2", host, &port.to_string()],
            &input,
            &output,
        );
        assert!(
            client.status.success(),
            "tunstack connect -u failed:\n{}",
            describe(&client)
        );
        assert_same_bytes(&input, &output, &format!("udp echo over {host}"));
        let _ = server.kill();
        let _ = server.wait();
    }
}

#[test]
fn connect_to_a_closed_port_reports_refused_promptly() {
    if !require_root("connect-refused") {
        return;
    }
    let netns = Netns::new("connect-refused");
    let dir = TempDir::new("connect-refused");
    let empty = dir.file("empty");
    File::create(&empty).unwrap();
    for host in ["192.168.69.1", "fd69::1"] {
        let took = assert_refused(&netns, &[host, "9"], &empty, &dir.file("out"));
        assert!(took < Duration::from_secs(2), "refusal took {took:?}");
    }
}

#[test]
fn udp_connect_to_a_closed_port_reports_refused_promptly() {
    if !require_root("connect-udp-refused") {
        return;
    }
    let netns = Netns::new("connect-udp-refused");
    let dir = TempDir::new("connect-udp-refused");
    let input = dir.file("in");
    std::fs::write(&input, "anyone there?\n").unwrap();
    for host in ["192.168.69.1", "fd69::1"] {
        // -w 30: only the host's port unreachable can end it this soon.
        let args = ["-u", "-w", "30", host, "9"];
        let took = assert_refused(&netns, &args, &input, &dir.file("out"));
        assert!(
            took < Duration::from_secs(5),
            "refusal took {took:?}: the port unreachable did not end it"
        );
    }
}
