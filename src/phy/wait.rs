//! Blocking wait on file descriptors with poll(2): the only place the event loop sleeps.
//! Timeouts are rounded *up* to whole milliseconds, so a 300 µs timer never becomes a spin.

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
        // SAFETY: `pollfds` is a valid, exclusively borrowed array of `pollfds.len()` entries.
        let rc = unsafe {
            libc::poll(
                self.pollfds.as_mut_ptr(),
                self.pollfds.len() as libc::nfds_t,
                timeout_ms(timeout),
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

/// poll(2)'s timeout argument: -1 for none, else milliseconds rounded up.
pub fn timeout_ms(timeout: Option<Duration>) -> libc::c_int {
    match timeout {
        None => -1,
        Some(d) => {
            let ms = d.total_micros().div_ceil(1000);
            ms.min(libc::c_int::MAX as u64) as libc::c_int
        }
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
    fn sub_millisecond_timeouts_round_up() {
        assert_eq!(timeout_ms(None), -1);
        assert_eq!(timeout_ms(Some(Duration::from_micros(0))), 0);
        assert_eq!(timeout_ms(Some(Duration::from_micros(1))), 1);
        assert_eq!(timeout_ms(Some(Duration::from_micros(1000))), 1);
        assert_eq!(timeout_ms(Some(Duration::from_micros(1001))), 2);
    }
}
