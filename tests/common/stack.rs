//! Long-running processes inside a namespace whose stderr we watch: the stack under
//! test (`Stack`) and a tcpdump packet capture (`Capture`). A reader thread drains
//! stderr (so the pipe never fills) and keeps every line for assertions; waiting for a
//! line blocks on a condition variable with a deadline.

use super::{Netns, READY_TIMEOUT, describe, resolve};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Log {
    lines: Vec<String>,
    closed: bool,
}

#[derive(Default)]
struct SharedLog {
    log: Mutex<Log>,
    changed: Condvar,
}

/// A child process with its stderr collected line by line.
struct Watched {
    what: String,
    child: Child,
    log: Arc<SharedLog>,
    reader: Option<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

fn read_lines(stderr: ChildStderr, shared: Arc<SharedLog>) {
    let mut reader = BufReader::new(stderr);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buffer).trim_end().to_string();
                shared.log.lock().unwrap().lines.push(line);
                shared.changed.notify_all();
            }
        }
    }
    shared.log.lock().unwrap().closed = true;
    shared.changed.notify_all();
}

impl Watched {
    fn spawn(what: &str, mut command: Command) -> Watched {
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(SharedLog::default());
        let shared = Arc::clone(&log);
        let reader = thread::spawn(move || read_lines(stderr, shared));
        Watched {
            what: what.to_string(),
            child,
            log,
            reader: Some(reader),
            status: None,
        }
    }

    /// Waits until a stderr line contains `needle`; Err says why not (exit or timeout).
    fn wait_for_line(&self, needle: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let mut log = self.log.log.lock().unwrap();
        loop {
            if let Some(line) = log.lines.iter().find(|line| line.contains(needle)) {
                return Ok(line.clone());
            }
            if log.closed {
                return Err(format!(
                    "{} closed stderr (exited?) before logging {needle:?}",
                    self.what
                ));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "{} did not log {needle:?} within {timeout:?}",
                    self.what
                ));
            }
            log = self
                .log
                .changed
                .wait_timeout(log, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// Waits until stderr is closed (the process exited); false on timeout.
    fn wait_closed(&self, timeout: Duration) -> bool {
        let log = self.log.log.lock().unwrap();
        let (log, _) = self
            .log
            .changed
            .wait_timeout_while(log, timeout, |log| !log.closed)
            .unwrap();
        log.closed
    }

    fn stderr(&self) -> String {
        self.log.log.lock().unwrap().lines.join("\n")
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let output = Command::new(resolve("kill"))
            .args(["-s", signal, &pid])
            .output()
            .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
        assert!(
            output.status.success(),
            "kill -s {signal} {pid} failed:\n{}",
            describe(&output)
        );
    }

    /// Waits (at most `timeout`) for the process to exit; None if it is still running.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.status.is_some() {
            return self.status;
        }
        let deadline = Instant::now() + timeout;
        self.status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                _ => break None,
            }
        };
        if self.status.is_some() {
            self.join_reader();
        }
        self.status
    }

    /// Collects the last stderr lines. A process that left children holding its stderr
    /// open would block the reader forever: then leave the thread behind, don't hang.
    fn join_reader(&mut self) {
        if self.wait_closed(Duration::from_secs(1))
            && let Some(reader) = self.reader.take()
        {
            let _ = reader.join();
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
        self.join_reader();
        if thread::panicking() {
            eprintln!(
                "---- stderr of {} ----\n{}\n---- end ----",
                self.what,
                self.stderr()
            );
        }
    }
}

/// The `tunstack` binary under test, running inside a namespace.
pub struct Stack {
    process: Watched,
}

impl Stack {
    pub fn binary() -> &'static str {
        env!("CARGO_BIN_EXE_tunstack")
    }

    /// Starts `tunstack echo args` and waits (at most READY_TIMEOUT) until it logs
    /// `listening on`. Panics with its stderr if it does not.
    pub fn start(netns: &Netns, args: &[&str]) -> Stack {
        let stack = Stack::spawn(netns, args);
        if let Err(reason) = stack.wait_for_line("listening on", READY_TIMEOUT) {
            panic!(
                "the stack did not become ready: {reason}\nits stderr:\n{}",
                stack.stderr()
            );
        }
        stack
    }

    /// Starts `tunstack echo args` without waiting for anything.
    pub fn spawn(netns: &Netns, args: &[&str]) -> Stack {
        let mut full_args = vec!["echo"];
        full_args.extend_from_slice(args);
        Stack::spawn_command(netns.command(Stack::binary(), &full_args))
    }

    /// Starts the stack from a prepared command (e.g. wrapped in `setpriv`).
    pub fn spawn_command(mut command: Command) -> Stack {
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info");
        }
        Stack {
            process: Watched::spawn("tunstack", command),
        }
    }

    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> Result<String, String> {
        self.process.wait_for_line(needle, timeout)
    }

    /// Everything the stack wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.process.stderr()
    }

    /// Panics if the stack's stderr shows a panic.
    pub fn assert_no_panic(&self) {
        let stderr = self.stderr();
        assert!(
            !stderr.contains("panicked"),
            "the stack panicked:\n{stderr}"
        );
    }

    /// Sends a signal by name ("TERM", "INT").
    pub fn signal(&self, signal: &str) {
        self.process.signal(signal);
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.process.wait_exit(timeout)
    }
}

/// tcpdump writing every packet on the namespace's TUN device to a pcap file.
pub struct Capture {
    process: Watched,
    file: PathBuf,
}

impl Capture {
    /// Starts capturing on `interface` into `file`; returns once tcpdump is listening.
    pub fn start(netns: &Netns, interface: &str, file: &Path) -> Capture {
        let file_arg = file.to_str().expect("capture path is UTF-8");
        let command = netns.command(
            "tcpdump",
            &[
                "-i",
                interface,
                "-n",
                "--immediate-mode",
                "-U",
                "-Z",
                "root",
                "-w",
                file_arg,
            ],
        );
        let capture = Capture {
            process: Watched::spawn("tcpdump", command),
            file: file.into(),
        };
        if let Err(reason) = capture
            .process
            .wait_for_line("listening on", Duration::from_secs(10))
        {
            panic!(
                "tcpdump did not start: {reason}\n{}",
                capture.process.stderr()
            );
        }
        capture
    }

    /// Waits (bounded) until packets matching `filter` have been written to the file,
    /// and returns them; empty if none arrived within `timeout`.
    pub fn wait_for(&self, netns: &Netns, filter: &str, timeout: Duration) -> Vec<String> {
        let mut packets = Vec::new();
        super::poll_until(timeout, || {
            packets = Capture::read(netns, &self.file, filter);
            !packets.is_empty()
        });
        packets
    }

    /// Stops the capture (SIGINT flushes the file) and returns it.
    pub fn stop(mut self) -> PathBuf {
        self.process.signal("INT");
        if self.process.wait_exit(Duration::from_secs(5)).is_none() {
            panic!(
                "tcpdump did not exit after SIGINT:\n{}",
                self.process.stderr()
            );
        }
        self.file.clone()
    }

    /// Packets in a finished capture matching a tcpdump `filter`, one summary per line.
    pub fn read(netns: &Netns, file: &Path, filter: &str) -> Vec<String> {
        let file_arg = file.to_str().expect("capture path is UTF-8");
        let output = netns.run_ok(
            Duration::from_secs(20),
            "tcpdump",
            &["-r", file_arg, "-nn", filter],
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(String::from)
            .collect()
    }
}
