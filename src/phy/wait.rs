//! Blocking wait on file descriptors with ppoll(2): the only place the event loop sleeps.
//! Timeouts keep their microseconds (poll(2) would round them to milliseconds: a wake-up
//! meant to come 150 µs before a packet would come after it).

use smoltcp::time::Duration;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// Waits until one of `fds` is readable or `timeout` passes (`None`: no timeout).
/// Returns which fds are readable; all false on timeout or on a signal (EINTR).
pub fn wait_readable(fds: &[RawFd], timeout: Option<Duration>) -> io::Result<Vec<bool>> {
    let mut poller = Poller::default();
    poller.wait(fds, timeout)?;
    Ok((0..fds.len()).map(|i| poller.readable(i)).collect())
}

/// poll(2) that keeps its array between calls: the event loop waits on every turn, and a
/// turn allocates nothing.
#[derive(Default)]
pub struct Poller {
    pollfds: Vec<libc::pollfd>,
}

impl Poller {
    /// Waits until one of `fds` is readable or `timeout` passes (`None`: no timeout).
    /// Afterwards [`Poller::readable`] tells which; none is on timeout or a signal (EINTR).
    pub fn wait(&mut self, fds: &[RawFd], timeout: Option<Duration>) -> io::Result<()> {
        self.pollfds.clear();
        self.pollfds.extend(fds.iter().map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        }));
        let timespec = timeout.map(timespec);
        let timeout_ptr = timespec
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `pollfds` is a valid, exclusively borrowed array of `pollfds.len()` entries;
        // `timeout_ptr` is null or points to a timespec that outlives the call; no sigmask.
        let rc = unsafe {
            libc::ppoll(
                self.pollfds.as_mut_ptr(),
                self.pollfds.len() as libc::nfds_t,
                timeout_ptr,
                std::ptr::null(),
            )
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            self.pollfds.iter_mut().for_each(|p| p.revents = 0);
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
        Ok(())
    }

    /// Whether the `index`th fd of the last [`Poller::wait`] is readable (or hung up).
    pub fn readable(&self, index: usize) -> bool {
        self.pollfds
            .get(index)
            .is_some_and(|p| p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0)
    }
}

/// ppoll(2)'s timeout for `d`.
pub fn timespec(d: Duration) -> libc::timespec {
    let micros = d.total_micros();
    libc::timespec {
        tv_sec: (micros / 1_000_000).min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: ((micros % 1_000_000) * 1000) as libc::c_long,
    }
}

/// Reads what is available on `fd` (one read(2); call after [`wait_readable`] said so).
/// `Ok(0)` is end of file.
pub fn read_fd(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes and `fd` is open for the call.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_keep_their_microseconds() {
        let t = timespec(Duration::from_micros(2_000_150));
        assert_eq!((t.tv_sec, t.tv_nsec), (2, 150_000));
        let t = timespec(Duration::ZERO);
        assert_eq!((t.tv_sec, t.tv_nsec), (0, 0));
    }
}
