//! The stack's resident memory (VmRSS), sampled while a test loads it.

use crate::common::{Netns, find_program};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Pid of the `tunstack` process running in the namespace.
pub fn stack_pid(netns: &Netns) -> u32 {
    let output = Command::new(find_program("ip").expect("ip is installed"))
        .args(["netns", "pids", netns.name()])
        .output()
        .expect("cannot run ip netns pids");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .filter_map(|pid| pid.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "tunstack")
        })
        .unwrap_or_else(|| panic!("no tunstack process in namespace {}", netns.name()))
}

/// Resident memory of `pid` in KiB (VmRSS), 0 once the process is gone.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// Samples a process's VmRSS every 20 ms in a thread and keeps the peak. A measurement,
/// not a synchronisation: the test decides what happens when.
pub struct RssWatch {
    pid: u32,
    baseline: u64,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    sampler: Option<JoinHandle<()>>,
}

impl RssWatch {
    pub fn start(pid: u32) -> RssWatch {
        let baseline = rss_kib(pid);
        let peak = Arc::new(AtomicU64::new(baseline));
        let stop = Arc::new(AtomicBool::new(false));
        let (peak_in, stop_in) = (Arc::clone(&peak), Arc::clone(&stop));
        let sampler = thread::spawn(move || {
            while !stop_in.load(Ordering::Relaxed) {
                peak_in.fetch_max(rss_kib(pid), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(20));
            }
        });
        RssWatch {
            pid,
            baseline,
            peak,
            stop,
            sampler: Some(sampler),
        }
    }

    /// VmRSS when the watch started, in KiB.
    pub fn baseline(&self) -> u64 {
        self.baseline
    }

    /// Highest VmRSS seen so far (including now), in KiB.
    pub fn peak(&self) -> u64 {
        self.peak.fetch_max(rss_kib(self.pid), Ordering::Relaxed);
        self.peak.load(Ordering::Relaxed)
    }

    /// Panics unless the peak stayed within `limit_kib` of the baseline.
    pub fn assert_growth_below(&self, limit_kib: u64, what: &str) {
        let (baseline, peak) = (self.baseline, self.peak());
        eprintln!(
            "{what}: VmRSS baseline {baseline} KiB, peak {peak} KiB (+{} KiB, limit +{limit_kib} KiB)",
            peak.saturating_sub(baseline)
        );
        assert!(
            peak <= baseline + limit_kib,
            "{what}: the stack's VmRSS grew from {baseline} KiB to {peak} KiB, more than the \
             {limit_kib} KiB its queues and buffers account for"
        );
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.join();
        }
    }
}
