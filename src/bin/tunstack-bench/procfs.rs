//! What /proc says about a process: resident memory and CPU time used; and which threads
//! are the kernel's softirq threads.

use crate::net;
use std::fs;
use std::io;
use std::time::Duration;

/// VmRSS of process `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> io::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_rss(&status).ok_or_else(|| io::Error::other(format!("no VmRSS in /proc/{pid}/status")))
}

fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User plus system CPU time process `pid` has used so far.
pub fn cpu_time(pid: u32) -> io::Result<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse_cpu_ticks(&stat)
        .ok_or_else(|| io::Error::other(format!("cannot parse /proc/{pid}/stat")))?;
    Ok(Duration::from_secs_f64(
        ticks as f64 / net::clock_ticks() as f64,
    ))
}

/// The kernel's softirq threads (`ksoftirqd/N`): where packet processing goes when it is
/// not done in the context of the task that was running.
pub fn softirq_threads() -> io::Result<Vec<u32>> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // A process may end between read_dir and here: skip it.
        let Ok(comm) = fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        if comm.starts_with("ksoftirqd/") {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// utime + stime (fields 14 and 15) of a /proc/PID/stat line. The command name (field 2)
/// may contain spaces and parentheses, so fields are counted from its last ')'.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_stat() {
        assert_eq!(
            parse_rss("Name:\ttunstack\nVmRSS:\t    2048 kB\n"),
            Some(2048 * 1024)
        );
        assert_eq!(parse_rss("Name:\tx\n"), None);
        let stat = "1234 (tun stack) S 1 1234 1234 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 1 0";
        assert_eq!(parse_cpu_ticks(stat), Some(22));
    }
}
