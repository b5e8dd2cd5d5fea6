//! Case 14: startup faults — a missing device, no permission, a busy device, and the device
//! deleted under a running stack. Each must end with a clear message, not a panic.

use crate::common::{Netns, Stack, TempDir};
use crate::hostile::{assert_survived, require_hostile_tools};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- 14: startup faults

/// The stack must fail with a clear message naming `fix`, not a panic, within 5 s.
fn assert_fails_clearly(mut stack: Stack, situation: &str, fix: &[&str]) -> String {
    let status = stack.wait_exit(Duration::from_secs(5));
    let stderr = stack.stderr();
    let status =
        status.unwrap_or_else(|| panic!("{situation}: still running after 5 s:\n{stderr}"));
    eprintln!(
        "{situation}: {status}: {}",
        stderr.lines().last().unwrap_or_default()
    );
    assert!(
        !status.success(),
        "{situation}: the stack exited 0:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "{situation}: the stack panicked:\n{stderr}"
    );
    for words in fix {
        assert!(
            stderr.contains(words),
            "{situation}: the message does not say {words:?}:\n{stderr}"
        );
    }
    stderr
}

/// `tunstack echo --tun tun` as nobody, in a private mount namespace whose /dev/net/tun
/// has `mode` (the machine's real node is left alone).
fn spawn_as_nobody(netns: &Netns, dir: &TempDir, mode: &str, tun: &str) -> Stack {
    let binary = dir.file("tunstack");
    if !binary.exists() {
        std::fs::copy(Stack::binary(), &binary).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = format!(
        "set -e; mount -t tmpfs -o mode=0755 tunstack-dev /dev/net; \
         mknod -m {mode} /dev/net/tun c 10 200; \
         exec setpriv --reuid=65534 --regid=65534 --clear-groups -- {} echo --tun {tun}",
        binary.display()
    );
    let args = ["--mount", "--propagation", "private", "sh", "-c", &script];
    Stack::spawn_command(netns.command("unshare", &args))
}

#[test]
fn startup_faults_fail_with_a_clear_message() {
    let test = "startup-faults";
    if !require_hostile_tools(test) {
        return;
    }
    let bare = Netns::bare(test);
    let stack = Stack::spawn(&bare, &[]);
    assert_fails_clearly(
        stack,
        "no tun0 at all",
        &["tun0", "does not exist", "scripts/setup.sh"],
    );
    drop(bare);
    let netns = Netns::new(test);
    let stack = Stack::spawn(&netns, &["--tun", "tunabsent"]);
    assert_fails_clearly(
        stack,
        "--tun tunabsent",
        &["tunabsent", "does not exist", "scripts/setup.sh"],
    );

    let dir = TempDir::new(test);
    let stack = spawn_as_nobody(&netns, &dir, "0600", "tun0");
    assert_fails_clearly(
        stack,
        "nobody, /dev/net/tun 0600",
        &["permission denied", "scripts/setup.sh"],
    );
    // A device with an owner (root); /dev/net/tun itself open to everyone.
    netns.run_ok(
        Duration::from_secs(5),
        "ip",
        &[
            "tuntap", "add", "dev", "tunroot", "mode", "tun", "user", "root",
        ],
    );
    let stack = spawn_as_nobody(&netns, &dir, "0666", "tunroot");
    assert_fails_clearly(
        stack,
        "nobody, tunroot owned by root",
        &["permission denied", "scripts/setup.sh"],
    );

    let mut first = Stack::start(&netns, &[]);
    let second = Stack::spawn(&netns, &[]);
    assert_fails_clearly(second, "a second stack on tun0", &["busy", "another"]);
    assert_survived(
        &netns,
        &mut first,
        "the first stack after a second one was refused",
    );

    let deleted = Instant::now();
    netns.run_ok(Duration::from_secs(5), "ip", &["link", "del", "tun0"]);
    assert_fails_clearly(
        first,
        "tun0 deleted under the stack",
        &["tun0", "deleted", "scripts/setup.sh"],
    );
    eprintln!(
        "{test}: exited {:?} after tun0 was deleted",
        deleted.elapsed()
    );
}
