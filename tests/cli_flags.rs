//! What a new user hears from `tunstack` about a flag it cannot work with: every bad value
//! of every flag of `echo`, `connect` and `ss` is refused before the TUN is opened (so
//! without root), with exit status 2 (a usage error, from clap) or 1, and a message that
//! names the flag and the valid range, never a panic. The last tests need a real TUN: what
//! only the device can tell (its MTU, a destination off every subnet).

mod common;

use common::{Netns, STACK_V4, STACK_V6, Stack, describe, require_root, start_stack};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Runs the binary with `args` (no TUN is touched when a flag is refused).
fn tunstack(args: &[&str]) -> Output {
    Command::new(Stack::binary())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("cannot run tunstack")
}

/// Asserts that `args` fail with `code` and a stderr that has every one of `words`.
fn assert_refused(args: &[&str], code: i32, words: &[&str]) {
    let output = tunstack(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(code),
        "tunstack {args:?} should exit {code}:\n{}",
        describe(&output)
    );
    assert!(
        !stderr.contains("panicked"),
        "tunstack {args:?} panicked:\n{stderr}"
    );
    for word in words {
        assert!(
            stderr.contains(word),
            "tunstack {args:?}: the message does not say {word:?}:\n{stderr}"
        );
    }
}

/// `echo`, then `connect HOST PORT`, each with the stack flags `flags`.
fn for_both_commands(flags: &[&str], code: i32, words: &[&str]) {
    let mut echo = vec!["echo"];
    echo.extend_from_slice(flags);
    assert_refused(&echo, code, words);
    let mut connect = vec!["connect"];
    connect.extend_from_slice(flags);
    connect.extend_from_slice(&["192.168.69.1", "5000"]);
    assert_refused(&connect, code, words);
}

#[test]
fn mtu_outside_68_to_65535_is_a_usage_error_naming_the_range() {
    for mtu in [
        "0", "19", "20", "59", "67", "65536", "70000", "-1", "1e3", "abc",
    ] {
        for_both_commands(&["--mtu", mtu], 2, &["--mtu", "68..=65535", "IPv6 1280"]);
    }
}

#[test]
fn mtu_below_1280_with_an_ipv6_address_is_refused() {
    for_both_commands(
        &["--mtu", "1000", "--addr", "fd69::2/64"],
        1,
        &["--mtu 1000", "1280", "fd69::2/64"],
    );
}

#[test]
fn tcp_buffer_and_memory_below_what_works_are_refused_with_the_range() {
    for bytes in ["0", "10", "4095", "1073741825", "-4096"] {
        for_both_commands(
            &["--tcp-buffer", bytes],
            2,
            &["--tcp-buffer", "4096..=1073741824"],
        );
    }
    for bytes in ["0", "8191", "-1"] {
        for_both_commands(&["--tcp-memory", bytes], 2, &["--tcp-memory", "8192"]);
    }
}

#[test]
fn seconds_must_be_finite_and_within_1_ms_to_a_day() {
    for secs in ["0", "-1", "NaN", "inf", "-inf", "86401", "1e300", "soon"] {
        for_both_commands(
            &["--tcp-timeout", secs],
            2,
            &["--tcp-timeout", "0.001..=86400"],
        );
        assert_refused(
            &["connect", "-w", secs, "192.168.69.1", "5000"],
            2,
            &["--wait", "0.001..=86400"],
        );
    }
}

#[test]
fn polling_microseconds_are_at_most_a_second() {
    for flag in ["--busy-poll-us", "--rhythm-lead-us"] {
        for micros in ["1000001", "18446744073709551615", "-1"] {
            for_both_commands(&[flag, micros], 2, &[flag, "0..=1000000"]);
        }
    }
}

#[test]
fn ports_and_backlog_zero_are_usage_errors() {
    for port in ["0", "65536", "-7"] {
        assert_refused(&["echo", "--port", port], 2, &["--port", "1..=65535"]);
        assert_refused(
            &["connect", "192.168.69.1", port],
            2,
            &["<PORT>", "1..=65535"],
        );
    }
    for backlog in ["0", "65536", "-1"] {
        assert_refused(
            &["echo", "--backlog", backlog],
            2,
            &["--backlog", "1..=65535"],
        );
    }
}

#[test]
fn the_stacks_addresses_must_be_unicast_hosts_and_at_most_eight() {
    let bad = [
        ("0.0.0.0/0", "unspecified"),
        ("192.168.69.2/0", "/0"),
        ("224.0.0.1/24", "multicast"),
        ("ff02::1/64", "multicast"),
        ("127.0.0.1/8", "loopback"),
        ("192.168.69.255/24", "broadcast"),
        ("192.168.69.2/33", "not an address with a prefix"),
        ("192.168.69.2", "not an address with a prefix"),
    ];
    for (cidr, why) in bad {
        for_both_commands(&["--addr", cidr], 2, &["--addr", why]);
    }
    let nine: Vec<String> = (1..=9).map(|i| format!("10.0.0.{i}/24")).collect();
    let mut flags = Vec::new();
    for cidr in &nine {
        flags.extend_from_slice(&["--addr", cidr.as_str()]);
    }
    for_both_commands(&flags, 1, &["9 addresses", "1 to 8"]);
    for_both_commands(
        &["--addr", "10.0.0.1/24", "--addr", "10.0.0.1/16"],
        1,
        &["10.0.0.1", "twice"],
    );
}

#[test]
fn connect_needs_a_host_to_connect_to() {
    for host in ["0.0.0.0", "::", "224.0.0.1", "not-an-ip"] {
        assert_refused(&["connect", host, "5000"], 2, &["<HOST>"]);
    }
}

#[test]
fn seed_and_fault_percentages_are_range_checked() {
    for_both_commands(&["--seed", "-1"], 2, &["--seed", "18446744073709551615"]);
    for flag in ["--drop", "--corrupt", "--duplicate"] {
        for_both_commands(&[flag, "101"], 2, &[flag, "0..=100"]);
    }
}

#[test]
fn tun_names_the_kernel_refuses_are_usage_errors() {
    for name in ["", "a/b", "has space", "a:b", "sixteen-chars-xx", "..", "."] {
        for_both_commands(
            &["--tun", name],
            2,
            &["--tun", "not a network interface name"],
        );
        assert_refused(
            &["ss", "--tun", name],
            2,
            &["--tun", "not a network interface name"],
        );
    }
}

#[test]
fn a_missing_device_names_the_setup_command_for_that_name() {
    if !std::path::Path::new("/dev/net/tun").exists() {
        common::skip(
            "a_missing_device_names_the_setup_command_for_that_name",
            "no /dev/net/tun",
        );
        return;
    }
    for_both_commands(
        &["--tun", "tunnothere"],
        1,
        &[
            "tunnothere does not exist",
            "sudo scripts/setup.sh --tun tunnothere",
        ],
    );
}

#[test]
fn a_device_that_is_not_a_tun_is_called_so() {
    if !std::path::Path::new("/dev/net/tun").exists() {
        common::skip("a_device_that_is_not_a_tun_is_called_so", "no /dev/net/tun");
        return;
    }
    let output = tunstack(&["echo", "--tun", "lo"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(stderr.contains("lo is not a TUN device"), "{stderr}");
    assert!(stderr.contains("sudo scripts/setup.sh"), "{stderr}");
    assert!(!stderr.contains("teardown"), "{stderr}");
}

// ---- on a real TUN (root, in a namespace) ----

#[test]
fn mtu_below_1280_leaves_the_default_ipv6_address_out_with_a_warning() {
    let Some((netns, stack)) = start_stack("mtu-1000", &["--mtu", "1000"]) else {
        return;
    };
    let warning = stack.wait_for_line("IPv6 is off", Duration::from_secs(1));
    assert!(warning.is_ok(), "no warning:\n{}", stack.stderr());
    assert!(stack.stderr().contains("--mtu 1000 is below 1280"));
    let limit = Duration::from_secs(10);
    netns.run_ok(limit, "ping", &["-c", "1", "-W", "5", STACK_V4]);
    let v6 = netns.run(limit, "ping", &["-6", "-c", "1", "-W", "1", STACK_V6]);
    assert!(
        !v6.status.success(),
        "fd69::2 answered though IPv6 is off:\n{}",
        describe(&v6)
    );
    stack.assert_no_panic();
}

#[test]
fn the_devices_own_mtu_below_1280_turns_ipv6_off_too() {
    let test = "device-mtu-1000";
    if !require_root(test) {
        return;
    }
    let netns = Netns::with_setup(test, &["--mtu", "1000"]);
    let stack = Stack::start(&netns, &[]);
    let warning = stack.wait_for_line("IPv6 is off", Duration::from_secs(1));
    assert!(warning.is_ok(), "no warning:\n{}", stack.stderr());
    assert!(stack.stderr().contains("the MTU of tun0 (1000)"));
    netns.run_ok(
        Duration::from_secs(10),
        "ping",
        &["-c", "1", "-W", "5", STACK_V4],
    );
}

#[test]
fn connect_off_every_subnet_fails_at_once_with_network_unreachable() {
    let test = "connect-unreachable";
    if !require_root(test) {
        return;
    }
    let netns = Netns::new(test);
    for host in ["10.1.1.1", "fd70::1"] {
        // -w 30: a timeout would take 30 s and the command is killed after 20 s.
        let output = netns.run(
            Duration::from_secs(20),
            Stack::binary(),
            &["connect", "-w", "30", host, "5000"],
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{host}:\n{}",
            describe(&output)
        );
        assert!(
            stderr.contains("network unreachable") && stderr.contains(host),
            "{host}:\n{}",
            describe(&output)
        );
        assert!(!stderr.contains("timed out"), "{}", describe(&output));
    }
}
