//! scripts/setup.sh and scripts/teardown.sh on real TUN devices, each test in its own
//! network namespace. Needs root (see tests/common); no stack process involved
//! (scripts/run.sh, which starts one, is tested in tests/owner_tun.rs).

mod common;

use common::{HOST_V4, HOST_V6, Netns, TUN, describe, repo_path, require_root};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

fn script(name: &str) -> String {
    repo_path(&format!("scripts/{name}")).display().to_string()
}

/// `ip -d addr show dev NAME` inside the namespace; None if the device does not exist.
fn device_details(netns: &Netns, device: &str) -> Option<String> {
    let output = netns.run(LIMIT, "ip", &["-d", "addr", "show", "dev", device]);
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Global addresses ("IP/PREFIX") of one family on `device`.
fn global_addresses(netns: &Netns, family: &str, device: &str) -> Vec<String> {
    let output = netns.run_ok(
        LIMIT,
        "ip",
        &[
            "-o", family, "addr", "show", "dev", device, "scope", "global",
        ],
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.lines()
        .filter_map(|line| line.split_whitespace().nth(3).map(String::from))
        .collect()
}

fn assert_configured(netns: &Netns, device: &str, v4: &str, v6: &str, mtu: &str) {
    let details = device_details(netns, device)
        .unwrap_or_else(|| panic!("{device} does not exist in {}", netns.name()));
    assert!(
        details.contains(" tun type tun "),
        "{device} is not a TUN device:\n{details}"
    );
    assert!(
        details.contains(" persist on "),
        "{device} is not persistent:\n{details}"
    );
    assert!(
        details.contains(" pi off "),
        "{device} carries packet info headers:\n{details}"
    );
    assert!(
        details.contains(&format!(" mtu {mtu} ")),
        "{device} MTU is not {mtu}:\n{details}"
    );
    let flags = details.lines().next().unwrap_or_default();
    assert!(flags.contains(",UP"), "{device} is not up:\n{details}");
    assert_eq!(
        global_addresses(netns, "-4", device),
        [v4],
        "IPv4 addresses of {device}"
    );
    assert_eq!(
        global_addresses(netns, "-6", device),
        [v6],
        "IPv6 addresses of {device}"
    );
    let v6_line = details
        .lines()
        .find(|line| line.contains(&format!("inet6 {v6}")))
        .unwrap();
    assert!(
        v6_line.contains("nodad"),
        "{v6} should be nodad (no DAD delay):\n{details}"
    );
}

#[test]
fn setup_creates_the_device_and_is_idempotent() {
    if !require_root("setup_creates_the_device_and_is_idempotent") {
        return;
    }
    let netns = Netns::bare("setup-idempotent");
    assert!(
        device_details(&netns, TUN).is_none(),
        "a fresh namespace already has {TUN}"
    );

    netns.run_ok(LIMIT, &script("setup.sh"), &[]);
    assert_configured(&netns, TUN, HOST_V4, HOST_V6, "1500");

    let again = netns.run_ok(LIMIT, &script("setup.sh"), &["--no-next-step"]);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(
        stdout.contains("already exists"),
        "second run should reuse {TUN}:\n{}",
        describe(&again)
    );
    assert!(
        !stdout.contains("start the stack with"),
        "--no-next-step still prints the hint:\n{}",
        describe(&again)
    );
    assert_configured(&netns, TUN, HOST_V4, HOST_V6, "1500");
}

#[test]
fn setup_below_1280_leaves_ipv6_out_and_can_go_back() {
    if !require_root("setup_below_1280_leaves_ipv6_out_and_can_go_back") {
        return;
    }
    let netns = Netns::bare("setup-small-mtu");
    for _ in 0..2 {
        let output = netns.run_ok(LIMIT, &script("setup.sh"), &["--mtu", "1000"]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("below 1280") && stderr.contains("no IPv6 address"),
            "{}",
            describe(&output)
        );
        assert_eq!(global_addresses(&netns, "-4", TUN), [HOST_V4]);
        assert!(global_addresses(&netns, "-6", TUN).is_empty());
    }
    netns.run_ok(LIMIT, &script("setup.sh"), &[]);
    assert_configured(&netns, TUN, HOST_V4, HOST_V6, "1500");
}

#[test]
fn setup_repairs_addresses_and_mtu() {
    if !require_root("setup_repairs_addresses_and_mtu") {
        return;
    }
    let netns = Netns::with_setup("setup-repairs", &[]);
    netns.run_ok(LIMIT, "ip", &["addr", "add", "10.99.0.1/16", "dev", TUN]);
    netns.run_ok(LIMIT, "ip", &["-6", "addr", "del", HOST_V6, "dev", TUN]);
    netns.run_ok(
        LIMIT,
        "ip",
        &["-6", "addr", "add", "fd70::9/64", "dev", TUN, "nodad"],
    );
    netns.run_ok(LIMIT, "ip", &["link", "set", TUN, "mtu", "9000", "down"]);

    netns.run_ok(LIMIT, &script("setup.sh"), &[]);
    assert_configured(&netns, TUN, HOST_V4, HOST_V6, "1500");
}

#[test]
fn setup_takes_name_addresses_and_mtu_from_flags_and_environment() {
    if !require_root("setup_takes_name_addresses_and_mtu_from_flags_and_environment") {
        return;
    }
    let netns = Netns::bare("setup-flags");
    let flags = [
        "--tun",
        "tunflag",
        "--addr4",
        "10.7.0.1/24",
        "--addr6",
        "fd07::1/64",
        "--mtu",
        "1400",
    ];
    netns.run_ok(LIMIT, &script("setup.sh"), &flags);
    assert_configured(&netns, "tunflag", "10.7.0.1/24", "fd07::1/64", "1400");

    let env_args = [
        "TUN=tunenv",
        "HOST_ADDR4=10.8.0.1/24",
        "HOST_ADDR6=fd08::1/64",
        "MTU=1280",
    ];
    let mut args: Vec<&str> = env_args.to_vec();
    let setup = script("setup.sh");
    args.push(&setup);
    netns.run_ok(LIMIT, "env", &args);
    assert_configured(&netns, "tunenv", "10.8.0.1/24", "fd08::1/64", "1280");
}

#[test]
fn setup_gives_the_device_to_the_requested_user() {
    if !require_root("setup_gives_the_device_to_the_requested_user") {
        return;
    }
    let netns = Netns::bare("setup-user");
    netns.run_ok(LIMIT, &script("setup.sh"), &["--user", "nobody"]);
    let details = device_details(&netns, TUN).expect("device exists");
    assert!(
        details.contains(" user nobody "),
        "{TUN} is not owned by nobody:\n{details}"
    );

    // Re-running for root gives it back (recreates it without an owner).
    netns.run_ok(LIMIT, &script("setup.sh"), &["--user", "root"]);
    let details = device_details(&netns, TUN).expect("device exists");
    assert!(
        !details.contains(" user nobody "),
        "{TUN} still owned by nobody:\n{details}"
    );
}

#[test]
fn setup_rejects_bad_input_with_a_message() {
    if !require_root("setup_rejects_bad_input_with_a_message") {
        return;
    }
    let netns = Netns::bare("setup-bad-input");
    let cases: &[(&[&str], &str)] = &[
        (&["--bogus"], "unknown argument"),
        (&["--mtu"], "needs a value"),
        (&["--mtu", "20"], "invalid MTU"),
        (&["--mtu", "65536"], "68 to 65535"),
        (&["--addr4", "192.168.69.1"], "invalid IPv4"),
        (&["--addr6", "nonsense"], "invalid IPv6"),
        (&["--tun", "name with spaces"], "invalid device name"),
        (&["--user", "no-such-user-here"], "does not exist"),
    ];
    for (args, message) in cases {
        let output = netns.run(LIMIT, &script("setup.sh"), args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "setup.sh {args:?} should fail:\n{}",
            describe(&output)
        );
        assert!(
            stderr.contains(message),
            "setup.sh {args:?}: want {message:?}:\n{}",
            describe(&output)
        );
    }
    assert!(
        device_details(&netns, TUN).is_none(),
        "bad input must not create {TUN}"
    );

    // A TAP device of that name is not ours to reuse or delete.
    netns.run_ok(
        LIMIT,
        "ip",
        &["tuntap", "add", "dev", "tapx", "mode", "tap"],
    );
    for name in ["setup.sh", "teardown.sh"] {
        let output = netns.run(LIMIT, &script(name), &["--tun", "tapx"]);
        assert!(
            !output.status.success(),
            "{name} accepted a TAP device:\n{}",
            describe(&output)
        );
        assert!(String::from_utf8_lossy(&output.stderr).contains("not a TUN device"));
    }
}

#[test]
fn setup_as_a_normal_user_explains_it_needs_root() {
    if !require_root("setup_as_a_normal_user_explains_it_needs_root") {
        return;
    }
    let netns = Netns::bare("setup-non-root");
    let setup = script("setup.sh");
    let args = [
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        setup.as_str(),
    ];
    let output = netns.run(LIMIT, "setpriv", &args);
    assert!(
        !output.status.success(),
        "setup.sh as nobody should fail:\n{}",
        describe(&output)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("must run as root"),
        "no clear reason:\n{}",
        describe(&output)
    );
    assert!(device_details(&netns, TUN).is_none());
}

#[test]
fn teardown_removes_the_device_and_is_idempotent() {
    if !require_root("teardown_removes_the_device_and_is_idempotent") {
        return;
    }
    let netns = Netns::with_setup("teardown", &[]);
    assert!(device_details(&netns, TUN).is_some());
    netns.run_ok(LIMIT, &script("teardown.sh"), &[]);
    assert!(
        device_details(&netns, TUN).is_none(),
        "{TUN} survived teardown.sh"
    );
    let again = netns.run_ok(LIMIT, &script("teardown.sh"), &["--tun", TUN]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("nothing to do"),
        "{}",
        describe(&again)
    );
}

#[test]
fn scripts_answer_help() {
    for name in [
        "setup.sh",
        "teardown.sh",
        "run.sh",
        "test.sh",
        "fuzz.sh",
        "install-test-tools.sh",
    ] {
        let output = std::process::Command::new(script(name))
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{name} --help failed:\n{}",
            describe(&output)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.starts_with("Usage:"),
            "{name} --help prints no usage:\n{stdout}"
        );
    }
}

#[test]
fn scripts_reject_unknown_arguments_with_a_message() {
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "install-test-tools.sh",
            &["--bogus"],
            "unknown argument '--bogus'",
        ),
        ("fuzz.sh", &["--bogus"], "unknown argument '--bogus'"),
        ("fuzz.sh", &["--seconds", "soon"], "whole number"),
    ];
    for (name, args, message) in cases {
        let output = std::process::Command::new(script(name))
            .args(*args)
            .output()
            .unwrap();
        assert!(
            !output.status.success(),
            "{name} {args:?} should fail:\n{}",
            describe(&output)
        );
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(message),
            "{name} {args:?}: want {message:?}:\n{}",
            describe(&output)
        );
    }
}
