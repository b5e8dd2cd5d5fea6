//! Helpers for the hostile-peer suite (tests/hostile_tun.rs): the extra tools it needs
//! (hping3, nmap, nft, python3 with scapy), the stack's counters parsed from `tunstack ss`,
//! the stack's resident memory, and the closing check that the stack survived.
#![allow(dead_code)]

pub mod clients;
mod memory;
mod report;

pub use memory::{RssWatch, stack_pid};
pub use report::{Report, wait_for_rx};

use crate::common::{
    Capture, ECHO_PORT, Netns, STACK_V4, Stack, TempDir, assert_same_bytes, describe, find_program,
    repo_path, require_root, skip,
};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// Load generators (floods, scans, bulk transfers) take this lock exclusively, tests with
/// timing bounds (loss within 60 s, FIN within 1 s) share it: a flood in one test's
/// namespace never runs beside another test's timing assertion, and never beside another
/// flood.
static LOAD: RwLock<()> = RwLock::new(());

/// Held while generating load. A test that panicked holding it does not poison the rest.
pub fn exclusive_load() -> RwLockWriteGuard<'static, ()> {
    LOAD.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Held while timing something that a concurrent flood would slow down.
pub fn quiet() -> RwLockReadGuard<'static, ()> {
    LOAD.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Programs this suite drives besides the ones in `common::TOOLS`.
const HOSTILE_TOOLS: &[&str] = &["hping3", "nmap", "nft", "unshare", "mount", "mknod"];

const INSTALL_HINT: &str = "apt-get install hping3 nmap nftables python3-scapy, or run .ci/run";

/// A python3 that can import scapy (Debian's python3-scapy is for the system python, which
/// a pyenv or venv python3 earlier in PATH cannot see).
pub fn python() -> Option<&'static str> {
    static PYTHON: OnceLock<Option<String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let in_path = find_program("python3").map(|p| p.display().to_string());
            ["/usr/bin/python3".to_string()]
                .into_iter()
                .chain(in_path)
                .find(|python| {
                    Command::new(python)
                        .args(["-c", "import scapy.all"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|status| status.success())
                })
        })
        .as_deref()
}

/// Like `require_root`, plus this suite's tools: a loud skip (a failure with CI=true).
pub fn require_hostile_tools(test: &str) -> bool {
    if !require_root(test) {
        return false;
    }
    let mut missing: Vec<&str> = HOSTILE_TOOLS
        .iter()
        .copied()
        .filter(|tool| find_program(tool).is_none())
        .collect();
    if python().is_none() {
        missing.push("python3 with scapy");
    }
    if missing.is_empty() {
        return true;
    }
    skip(
        test,
        &format!("missing tools: {} ({INSTALL_HINT})", missing.join(", ")),
    )
}

/// A namespace and a ready `tunstack echo stack_args`, or None when the test is skipped.
pub fn start(test: &str, stack_args: &[&str]) -> Option<(Netns, Stack)> {
    if !require_hostile_tools(test) {
        return None;
    }
    let netns = Netns::new(test);
    // A fixed buffer size, so the memory bounds below are exact (by default a connection
    // gets up to 1 MiB, less when many are open).
    let buffer = (TCP_BUFFER_KIB * 1024).to_string();
    let mut args = vec!["--tcp-buffer", &buffer];
    args.extend_from_slice(stack_args);
    let stack = Stack::start(&netns, &args);
    Some((netns, stack))
}

/// Path of one of the helper scripts in tests/hostile/.
pub fn script(name: &str) -> String {
    repo_path(&format!("tests/hostile/{name}"))
        .display()
        .to_string()
}

/// Runs a helper script with the scapy-capable python inside the namespace.
pub fn run_script(netns: &Netns, limit: Duration, name: &str, args: &[&str]) -> Output {
    let mut full_args = vec![script(name)];
    full_args.extend(args.iter().map(|a| a.to_string()));
    let full_args: Vec<&str> = full_args.iter().map(String::as_str).collect();
    let python = python().expect("require_hostile_tools checked python3 with scapy");
    netns.run_ok(limit, python, &full_args)
}

/// The single stdout line a helper script printed.
pub fn script_line(netns: &Netns, limit: Duration, name: &str, args: &[&str]) -> String {
    let output = run_script(netns, limit, name, args);
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// The numbers after each word of `line` that is followed by a number ("sent 5 received 3").
pub fn numbers(line: &str) -> BTreeMap<String, u64> {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .filter_map(|w| Some((w[0].to_string(), w[1].parse().ok()?)))
        .collect()
}

// ---------------------------------------------------------------- survival

/// The stack is still running, did not panic, and echoes 64 KiB byte-identical over nc.
pub fn assert_survived(netns: &Netns, stack: &mut Stack, what: &str) {
    stack.assert_no_panic();
    if let Some(status) = stack.wait_exit(Duration::ZERO) {
        panic!("{what}: the stack exited ({status}):\n{}", stack.stderr());
    }
    let dir = TempDir::new("survived");
    let sent = dir.random_file("sent", 64 * 1024);
    let received = dir.file("received");
    let output = netns
        .command_bounded(
            Duration::from_secs(30),
            "nc",
            &["-N", "-w", "10", STACK_V4, ECHO_PORT],
        )
        .stdin(File::open(&sent).unwrap())
        .stdout(File::create(&received).unwrap())
        .stderr(Stdio::piped())
        .output()
        .expect("cannot run nc");
    assert!(
        output.status.success(),
        "{what}: the echo check afterwards failed:\n{}",
        describe(&output)
    );
    assert_same_bytes(&sent, &received, &format!("{what}: echo check afterwards"));
}

/// The TCP buffer each way the suite runs the stack with, and its SYN queue and accept
/// backlog (the defaults).
pub const TCP_BUFFER_KIB: u64 = 64;
pub const SYN_BACKLOG: u64 = 256;
pub const ACCEPT_BACKLOG: u64 = 128;
/// Everything that is not a socket buffer may grow by this much under load.
pub const SLACK_KIB: u64 = 16 * 1024;

/// The stack's default TCP timeout (`StackConfig::tcp_timeout`).
pub const USER_TIMEOUT: Duration = Duration::from_secs(5);
/// `tunstack echo` flags that set [`USER_TIMEOUT`].
pub const USER_TIMEOUT_ARGS: [&str; 2] = ["--tcp-timeout", "5"];

/// Loads an nft ruleset into the namespace.
pub fn nft_load(netns: &Netns, dir: &TempDir, name: &str, rules: &str) {
    let ruleset = dir.file(name);
    std::fs::write(&ruleset, rules).unwrap();
    netns.run_ok(
        Duration::from_secs(10),
        "nft",
        &["-f", ruleset.to_str().unwrap()],
    );
}

// ---------------------------------------------------------------- crafted packets

/// craft.py serving catalog packets on request.
pub struct Crafter {
    child: Child,
    answers: BufReader<std::process::ChildStdout>,
}

impl Crafter {
    pub fn start(netns: &Netns) -> Crafter {
        let python = python().unwrap();
        let mut child = netns
            .command_bounded(
                Duration::from_secs(120),
                python,
                &[&script("craft.py"), "serve", "tun0"],
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start craft.py");
        let answers = BufReader::new(child.stdout.take().unwrap());
        Crafter { child, answers }
    }

    /// Sends the catalog packet `name`; returns its size.
    pub fn send(&mut self, name: &str) -> usize {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{name}")
            .and_then(|()| stdin.flush())
            .unwrap();
        let mut answer = String::new();
        self.answers.read_line(&mut answer).unwrap();
        let words: Vec<&str> = answer.split_whitespace().collect();
        match words.as_slice() {
            ["sent", sent, bytes] if *sent == name => bytes.parse().unwrap(),
            _ => panic!("craft.py did not send {name}: {answer:?}"),
        }
    }
}

impl Drop for Crafter {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Packets the stack wrote into the TUN (inbound on the host side) in a finished capture.
pub fn from_stack(netns: &Netns, capture: Capture, filter: &str) -> Vec<String> {
    let file = capture.stop();
    Capture::read(netns, &file, &format!("inbound and ({filter})"))
}
