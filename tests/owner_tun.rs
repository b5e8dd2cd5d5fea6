//! The TUN's owner runs the stack without root, offloads on: directly (`setup.sh --user
//! nobody`, then `tunstack echo` as nobody), and through `sudo scripts/run.sh`, which must
//! run the stack as `$SUDO_USER`. Each test in its own network namespace and a private mount
//! namespace whose /dev/net/tun is open to every user; needs root to set that up.

mod common;

use common::{
    Netns, STACK_V4, Stack, TempDir, assert_same_bytes, describe, repo_path, require_root, ss,
};
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

fn script(name: &str) -> String {
    repo_path(&format!("scripts/{name}")).display().to_string()
}

/// A directory `nobody` can read and a copy of the binary in it, wherever the repository
/// (and its target/) lives.
fn binary_for_nobody(dir: &TempDir) -> String {
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary = dir.file("tunstack");
    std::fs::copy(Stack::binary(), &binary).unwrap();
    binary.display().to_string()
}

/// `script` run by sh in a private mount namespace whose /dev/net/tun is open to every
/// user (0666, as most distributions ship it; the machine's own node is left alone).
fn with_open_dev_net_tun(netns: &Netns, script: &str) -> Stack {
    let script = format!(
        "set -e; mount -t tmpfs -o mode=0755 tunstack-dev /dev/net; \
         mknod -m 0666 /dev/net/tun c 10 200; {script}"
    );
    let args = ["--mount", "--propagation", "private", "sh", "-c", &script];
    Stack::spawn_command(netns.command("unshare", &args))
}

/// The uid of the `tunstack` process running in `netns`.
fn stack_uid(netns: &Netns) -> Option<String> {
    let pids = netns.run_ok(LIMIT, "ip", &["netns", "pids", netns.name()]);
    String::from_utf8_lossy(&pids.stdout)
        .split_whitespace()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter(|status| status.lines().next() == Some("Name:\ttunstack"))
        .find_map(|status| {
            let uid = status.lines().find(|line| line.starts_with("Uid:"))?;
            uid.split_whitespace().nth(1).map(String::from)
        })
}

/// Ping and a 1 MiB echo through the stack, then the offload counters of `tunstack ss`:
/// super-packets must have crossed the TUN both ways.
fn assert_echoes_with_offloads(netns: &Netns, dir: &TempDir) {
    netns.run_ok(LIMIT, "ping", &["-c", "1", "-W", "5", STACK_V4]);
    let input = dir.random_file("in.bin", 1 << 20);
    let output = dir.file("out.bin");
    let nc = netns
        .command_bounded(LIMIT, "nc", &["-N", "-w", "10", STACK_V4, "7"])
        .stdin(File::open(&input).unwrap())
        .stdout(File::create(&output).unwrap())
        .output()
        .unwrap();
    assert!(nc.status.success(), "nc failed:\n{}", describe(&nc));
    assert_same_bytes(&input, &output, "echo through the stack");
    let report = ss(netns);
    let offloads = report
        .lines()
        .find(|line| line.starts_with("offloads:"))
        .unwrap_or_else(|| panic!("no offloads line: offloads are off:\n{report}"));
    assert!(
        !offloads.contains("rx super-packets 0 ") && !offloads.contains("tx super-packets 0 "),
        "no super-packets crossed the TUN: {offloads}"
    );
}

#[test]
fn the_devices_owner_runs_the_stack_with_offloads_and_without_root() {
    let test = "owner-offloads";
    if !require_root(test) {
        return;
    }
    let netns = Netns::with_setup(test, &["--user", "nobody"]);
    let dir = TempDir::new(test);
    let binary = binary_for_nobody(&dir);
    let stack = with_open_dev_net_tun(
        &netns,
        &format!("exec setpriv --reuid=65534 --regid=65534 --clear-groups -- {binary} echo"),
    );
    if let Err(why) = stack.wait_for_line("listening on", common::READY_TIMEOUT) {
        panic!(
            "the stack did not start as nobody: {why}\n{}",
            stack.stderr()
        );
    }
    let attached = stack.wait_for_line("attached to", LIMIT).unwrap();
    assert!(attached.contains("offloads on"), "{attached}");
    assert_eq!(stack_uid(&netns).as_deref(), Some("65534"));
    assert_echoes_with_offloads(&netns, &dir);
    stack.assert_no_panic();
}

/// run.sh under sudo, with cargo stubbed out (the build is cargo's business; a stub that
/// puts the test's binary where `cargo build --release` would keeps the test fast).
#[test]
fn run_sh_under_sudo_runs_the_stack_as_the_invoking_user_with_offloads() {
    let test = "run-sh-sudo";
    if !require_root(test) {
        return;
    }
    // tun0 as plain `sudo scripts/setup.sh` by root left it: root's, not the user's.
    let netns = Netns::new(test);
    let dir = TempDir::new(test);
    let binary = binary_for_nobody(&dir);
    let stub = dir.file("cargo");
    std::fs::write(
        &stub,
        format!(
            "#!/bin/sh\nmkdir -p \"$CARGO_TARGET_DIR/release\"\n\
             cp {binary} \"$CARGO_TARGET_DIR/release/tunstack\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let target = dir.file("target");
    let script = format!(
        "SUDO_USER=nobody CARGO_TARGET_DIR={} PATH={}:$PATH exec {} 1>&2",
        target.display(),
        dir.path().display(),
        script("run.sh")
    );
    let stack = with_open_dev_net_tun(&netns, &script);
    if let Err(why) = stack.wait_for_line("listening on", common::READY_TIMEOUT) {
        panic!("run.sh did not start the stack: {why}\n{}", stack.stderr());
    }
    let log = stack.stderr();
    assert!(
        log.contains(
            "tun0 is not nobody's; fixing it with scripts/setup.sh --tun tun0 --user nobody"
        ),
        "run.sh did not give tun0 to the user:\n{log}"
    );
    assert!(log.contains(" as nobody (Ctrl-C to stop)"), "{log}");
    assert!(
        !log.contains("start the stack with"),
        "run.sh repeats setup.sh's hint to start what it starts itself:\n{log}"
    );
    assert!(log.contains("offloads on"), "{log}");
    assert_eq!(stack_uid(&netns).as_deref(), Some("65534"));
    assert_echoes_with_offloads(&netns, &dir);
    stack.assert_no_panic();
}
