//! Harness for integration tests on a real TUN device: a private network namespace per
//! test (`Netns`), bounded command runs inside it, the stack process (`Stack`), packet
//! captures (`Capture`) and random test data (`TempDir`). Everything a test creates is
//! removed again in `Drop`, also when the test fails.
#![allow(dead_code)]

mod data;
mod stack;

#[allow(unused_imports)]
pub use data::{TempDir, assert_same_bytes, nc_echo_label};
#[allow(unused_imports)]
pub use stack::{Capture, Stack};

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// Addresses and port of the stack under test (`tunstack echo` defaults).
pub const STACK_V4: &str = "192.168.69.2";
pub const STACK_V6: &str = "fd69::2";
/// Host side of the TUN device, as configured by `scripts/setup.sh`.
pub const HOST_V4: &str = "192.168.69.1/24";
pub const HOST_V6: &str = "fd69::1/64";
pub const ECHO_PORT: &str = "7";
/// Device name used inside every namespace (each namespace has its own).
pub const TUN: &str = "tun0";

/// How long the stack may take to log `listening on`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Tools the TUN tests drive; a missing one is a skip (a failure with CI=true).
pub const TOOLS: &[&str] = &[
    "ip", "ping", "nc", "socat", "ss", "tcpdump", "timeout", "setpriv", "kill",
];

/// Path of a file in the repository.
pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Finds `program` in PATH or the usual sbin directories (sudo may reset PATH).
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| candidate.is_file())
}

/// `program` as an absolute path when it can be found, else unchanged.
fn resolve(program: &str) -> String {
    if program.contains('/') {
        return program.to_string();
    }
    find_program(program).map_or_else(|| program.to_string(), |p| p.display().to_string())
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Reports a test that cannot run here. Returns false so callers can `return`.
/// With CI=true a skip is a failure: the suite must really run in CI.
/// The notice goes straight to stderr, past libtest's output capture, so it is seen.
pub fn skip(test: &str, reason: &str) -> bool {
    let test = thread::current()
        .name()
        .map_or_else(|| test.to_string(), String::from);
    if std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("{test}: cannot run: {reason} (CI=true, so a skipped test is a failure)");
    }
    let notice = format!(
        "\n!!!!!!!! SKIPPED {test}: {reason}\n\
         !!!!!!!! run the suite with scripts/test.sh (as root, or with sudo) to include it\n\n"
    );
    let _ = std::io::stderr().write_all(notice.as_bytes());
    false
}

/// True when this test can create namespaces and TUN devices: root, /dev/net/tun and
/// the command-line tools are present. Otherwise prints a loud SKIP and returns false.
pub fn require_root(test: &str) -> bool {
    match effective_uid() {
        Some(0) => {}
        Some(uid) => return skip(test, &format!("needs root (running as uid {uid})")),
        None => return skip(test, "cannot read the effective uid from /proc/self/status"),
    }
    if !Path::new("/dev/net/tun").exists() {
        return skip(test, "/dev/net/tun does not exist (no TUN support here)");
    }
    let missing: Vec<&str> = TOOLS
        .iter()
        .copied()
        .filter(|t| find_program(t).is_none())
        .collect();
    if !missing.is_empty() {
        let reason = format!(
            "missing tools: {} (apt-get install iproute2 iputils-ping netcat-openbsd \
             socat tcpdump coreutils util-linux, or run .ci/run)",
            missing.join(", ")
        );
        return skip(test, &reason);
    }
    true
}

/// A namespace with tun0 and a ready `tunstack echo stack_args` on it, or None when
/// the test must be skipped (see `require_root`). Drop the stack before the namespace
/// (declare the namespace first).
pub fn start_stack(test: &str, stack_args: &[&str]) -> Option<(Netns, Stack)> {
    if !require_root(test) {
        return None;
    }
    let netns = Netns::new(test);
    let stack = Stack::start(&netns, stack_args);
    Some((netns, stack))
}

/// The `tunstack ss` report of the stack in `netns`; panics if the query fails.
pub fn ss(netns: &Netns) -> String {
    let output = netns.run(Duration::from_secs(5), Stack::binary(), &["ss"]);
    assert!(
        output.status.success(),
        "tunstack ss failed:\n{}",
        describe(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
/// For conditions with no event to wait on (a port answering, a socket state).
pub fn poll_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Status, stdout and stderr of a finished command, for assertion messages.
pub fn describe(output: &Output) -> String {
    let mut text = String::new();
    let status = match output.status.code() {
        Some(124) => "timed out (killed by `timeout`)".to_string(),
        _ => output.status.to_string(),
    };
    let _ = writeln!(text, "status: {status}");
    for (name, bytes) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(4000)]);
        let _ = writeln!(
            text,
            "{name} ({} bytes):\n{}",
            bytes.len(),
            shown.trim_end()
        );
    }
    text
}

static NAMESPACE_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A private network namespace holding its own `tun0` (made by `scripts/setup.sh`).
/// Drop kills every process in it and deletes it (which also removes the TUN device).
pub struct Netns {
    name: String,
}

impl Netns {
    /// A namespace with `lo` up and `scripts/setup.sh` run inside it with `setup_args`.
    pub fn new(test: &str) -> Netns {
        Netns::with_setup(test, &[])
    }

    pub fn with_setup(test: &str, setup_args: &[&str]) -> Netns {
        let netns = Netns::bare(test);
        let setup = repo_path("scripts/setup.sh");
        let output = netns.run(Duration::from_secs(30), setup.to_str().unwrap(), setup_args);
        assert!(
            output.status.success(),
            "scripts/setup.sh {setup_args:?} failed in namespace {}:\n{}",
            netns.name,
            describe(&output)
        );
        netns
    }

    /// A namespace with only `lo` (up), for testing the scripts themselves.
    pub fn bare(test: &str) -> Netns {
        let tag: String = test
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(40)
            .collect();
        let n = NAMESPACE_COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("tunstack-{tag}-{}-{n}", std::process::id());
        let output = Command::new(resolve("ip"))
            .args(["netns", "add", &name])
            .output()
            .expect("cannot run `ip` (install iproute2)");
        assert!(
            output.status.success(),
            "ip netns add {name} failed:\n{}",
            describe(&output)
        );
        let netns = Netns { name };
        let output = netns.run(Duration::from_secs(5), "ip", &["link", "set", "lo", "up"]);
        assert!(
            output.status.success(),
            "setting lo up failed:\n{}",
            describe(&output)
        );
        netns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `program args` inside the namespace with no time limit: for long-lived processes
    /// the test stops itself (Drop kills whatever is left).
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new(resolve("ip"));
        command
            .args(["netns", "exec", &self.name, &resolve(program)])
            .args(args);
        command.stdin(Stdio::null());
        command
    }

    /// `program args` inside the namespace, killed (exit 124) after `limit`.
    pub fn command_bounded(&self, limit: Duration, program: &str, args: &[&str]) -> Command {
        let seconds = format!("{:.3}", limit.as_secs_f64());
        // `timeout` looks the program up in PATH itself: give it an absolute path.
        let program = resolve(program);
        let mut timeout_args = vec!["--kill-after=2", seconds.as_str(), program.as_str()];
        timeout_args.extend_from_slice(args);
        self.command("timeout", &timeout_args)
    }

    /// Runs `program args` inside the namespace (at most `limit`), capturing its output.
    pub fn run(&self, limit: Duration, program: &str, args: &[&str]) -> Output {
        self.command_bounded(limit, program, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap_or_else(|e| panic!("cannot start `ip netns exec {} {program}`: {e}", self.name))
    }

    /// Like `run`, but panics with the command's output unless it exits 0.
    pub fn run_ok(&self, limit: Duration, program: &str, args: &[&str]) -> Output {
        let output = self.run(limit, program, args);
        assert!(
            output.status.success(),
            "`{program} {}` failed in {}:\n{}",
            args.join(" "),
            self.name,
            describe(&output)
        );
        output
    }

    /// Process ids of everything running in the namespace.
    fn pids(&self) -> Vec<String> {
        Command::new(resolve("ip"))
            .args(["netns", "pids", &self.name])
            .output()
            .map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let gone = poll_until(Duration::from_secs(5), || {
            let pids = self.pids();
            for pid in &pids {
                let _ = Command::new(resolve("kill")).args(["-KILL", pid]).output();
            }
            pids.is_empty()
        });
        if !gone {
            eprintln!(
                "warning: processes still running in namespace {}",
                self.name
            );
        }
        match Command::new(resolve("ip"))
            .args(["netns", "delete", &self.name])
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "warning: ip netns delete {} failed:\n{}",
                self.name,
                describe(&out)
            ),
            Err(e) => eprintln!("warning: cannot run ip netns delete {}: {e}", self.name),
        }
    }
}
