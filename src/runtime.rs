//! The event loop: polls the stack, lets the app serve ready sockets, then blocks in poll(2)
//! on the TUN fd (plus the signal pipe and any fds the app adds) until a packet, a signal or
//! the stack's next timer. SIGINT/SIGTERM close every connection with FIN, then exit;
//! what is not closed when the grace period ends is reset (RST), never left hanging.

use crate::control::{ControlServer, report};
use crate::error::{Error, Result};
use crate::flow::SocketId;
use crate::phy::TunDevice;
use crate::phy::wait::{Poller, wait_readable};
use crate::rhythm::{Plan, Rhythm};
use crate::stack::Stack;
use smoltcp::phy::Device;
use smoltcp::time::{Duration, Instant};
use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

/// How long a graceful shutdown waits for peers to acknowledge our FINs.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1500);

/// A packet after this long without traffic (beyond the busy-poll time) ends an idle
/// spell: those are the packets whose rhythm is learned.
const IDLE_SPELL: Duration = Duration::from_micros(500);

/// What an app plugged into [`run`] does.
pub trait App {
    /// Serves the sockets whose readiness may have changed.
    fn on_ready(&mut self, stack: &Stack, ready: &[SocketId]);
    /// Extra file descriptors to wait on (e.g. stdin): appended to `out`.
    fn fds(&self, _out: &mut Vec<RawFd>) {}
    /// One of [`App::fds`] is readable.
    fn on_fd(&mut self, _stack: &Stack, _fd: RawFd) {}
    /// `Some(code)` once the app is done and the loop should end.
    fn finished(&self) -> Option<i32> {
        None
    }
    /// Wake up after this long even if nothing happens (an app's own deadline).
    fn timeout(&self) -> Option<Duration> {
        None
    }
}

/// A device the loop can wait on: its fd, and a way to report it broke.
pub trait WaitableDevice: Device {
    /// The fd that becomes readable when a packet arrives.
    fn fd(&self) -> RawFd;
    /// A fatal device error, if one happened.
    fn take_error(&mut self) -> Option<Error>;
    /// Lines about the device for the `tunstack ss` report (e.g. injected faults).
    fn report(&self) -> Option<String> {
        None
    }
    /// Lets the device hold packets back to send them together; [`WaitableDevice::flush`]
    /// is then called after each round of sending.
    fn hold_back(&mut self) {}
    /// Writes what the device holds back to send together.
    fn flush(&mut self) {}
}

impl WaitableDevice for TunDevice {
    fn fd(&self) -> RawFd {
        TunDevice::fd(self)
    }
    fn take_error(&mut self) -> Option<Error> {
        TunDevice::take_error(self)
    }
    fn report(&self) -> Option<String> {
        let s = self.offload_stats()?;
        Some(format!(
            "offloads: rx super-packets {} partial checksums {} completed {} refused {}, tx super-packets {} (of segments joined {})",
            s.rx_super, s.rx_partial, s.rx_completed, s.rx_refused, s.tx_super, s.tx_joined
        ))
    }
    fn hold_back(&mut self) {
        self.join_ipv6_segments()
    }
    fn flush(&mut self) {
        TunDevice::flush(self)
    }
}

/// A monotonic clock in smoltcp's terms, starting at zero.
pub struct Clock(std::time::Instant);

impl Clock {
    /// Starts the clock.
    pub fn start() -> Clock {
        Clock(std::time::Instant::now())
    }
    /// Time since the start.
    pub fn now(&self) -> Instant {
        Instant::from_micros(self.0.elapsed().as_micros() as i64)
    }
}

/// How the loop runs besides the app.
#[derive(Default)]
pub struct RunOptions {
    /// Answers `tunstack ss` while the loop runs.
    pub control: Option<ControlServer>,
    /// After traffic, keep checking the device without sleeping for this long before
    /// blocking: saves a scheduler wake-up per packet while traffic flows, and costs
    /// nothing when the stack is idle. Zero turns it off.
    pub busy_poll: Duration,
    /// Traffic that returns after idle spells at a steady period is polled for from this
    /// long before the next packet is due to this long after ([`crate::rhythm`]). Zero
    /// turns it off.
    pub rhythm_lead: Duration,
}

/// Runs `app` on `stack` until it finishes or a signal asks to stop. Returns the exit code.
pub fn run<D: WaitableDevice>(
    stack: &Stack,
    device: &mut D,
    app: &mut dyn App,
    options: &RunOptions,
) -> Result<i32> {
    let signals = SignalPipe::install()?;
    // This loop flushes after every round of sending (below and in `flush`).
    device.hold_back();
    let control = options.control.as_ref();
    let clock = Clock::start();
    let mut ready = Vec::new();
    let mut fds = Vec::new();
    let mut poller = Poller::default();
    let mut shutdown_deadline: Option<Instant> = None;
    let mut last_traffic = Instant::ZERO;
    let mut rhythm = Rhythm::new(options.rhythm_lead);
    loop {
        let now = clock.now();
        // In, app, out: what the app writes in reply leaves with the ACK of what came in.
        let received = stack.receive(now, device);
        if received && now >= last_traffic + options.busy_poll + IDLE_SPELL {
            rhythm.arrived(now);
            log::trace!("rhythm: an idle spell ended at {now}; {rhythm}");
        }
        ready.clear();
        stack.take_ready(&mut ready);
        if !ready.is_empty() {
            app.on_ready(stack, &ready);
        }
        if stack.transmit(now, device) || received {
            last_traffic = now;
        }
        device.flush();
        if let Some(err) = device.take_error() {
            return Err(err);
        }
        if let Some(code) = app.finished() {
            flush(stack, device, &clock);
            reset_what_is_left(stack, device, &clock);
            return Ok(code);
        }
        if let Some(deadline) = shutdown_deadline
            && (stack.is_quiet() || now >= deadline)
        {
            reset_what_is_left(stack, device, &clock);
            log::info!("tunstack: shut down");
            return Ok(0);
        }
        let mut delay = min_delay(stack.poll_delay(now), app.timeout());
        if now < last_traffic + options.busy_poll {
            delay = Some(Duration::ZERO);
        } else {
            match rhythm.plan(now) {
                Plan::Poll => delay = Some(Duration::ZERO),
                Plan::WakeAt(at) => delay = min_delay(delay, Some(at - now)),
                Plan::Wait => {}
            }
        }
        if let Some(deadline) = shutdown_deadline {
            let left = if deadline > now {
                deadline - now
            } else {
                Duration::ZERO
            };
            delay = Some(delay.map_or(left, |d| d.min(left)));
        }
        let control_fd = control.map_or(-1, ControlServer::fd);
        fds.clear();
        fds.extend([device.fd(), signals.fd(), control_fd]);
        app.fds(&mut fds);
        poller
            .wait(&fds, delay)
            .map_err(|e| Error::Device(format!("poll failed: {e}")))?;
        if poller.readable(1) && signals.drain() && shutdown_deadline.is_none() {
            log::info!("tunstack: signal received, closing every connection");
            stack.close_all();
            shutdown_deadline = Some(clock.now() + SHUTDOWN_GRACE);
        }
        if poller.readable(2)
            && let Some(control) = control
        {
            let mut text = report(stack);
            if let Some(extra) = device.report() {
                text.push_str(&extra);
                text.push('\n');
            }
            text.push_str(&rhythm.to_string());
            text.push('\n');
            control.serve(&text);
        }
        for (index, &fd) in fds.iter().enumerate().skip(3) {
            if poller.readable(index) {
                app.on_fd(stack, fd);
            }
        }
    }
}

fn min_delay(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Polls until the stack has nothing queued to send (bounded), so a finishing app's last
/// bytes and FIN leave before the process exits.
fn flush<D: WaitableDevice>(stack: &Stack, device: &mut D, clock: &Clock) {
    let deadline = clock.now() + SHUTDOWN_GRACE;
    while clock.now() < deadline {
        let now = clock.now();
        stack.poll(now, device);
        device.flush();
        if stack.is_quiet() {
            return;
        }
        let delay = stack
            .poll_delay(now)
            .map_or(Duration::from_millis(10), |d| {
                d.min(Duration::from_millis(10))
            });
        if wait_readable(&[device.fd()], Some(delay)).is_err() {
            return;
        }
    }
}

/// The process is about to exit: no connection may be left waiting for it. Those not
/// closed by now are reset, and the RSTs leave before the loop returns.
fn reset_what_is_left<D: WaitableDevice>(stack: &Stack, device: &mut D, clock: &Clock) {
    let aborted = stack.abort_all();
    if aborted > 0 {
        log::info!("tunstack: {aborted} connections not closed in time: reset");
        stack.transmit(clock.now(), device);
        device.flush();
    }
}

/// SIGINT and SIGTERM written to a socket pair (signal-hook's self-pipe), so poll(2) wakes.
struct SignalPipe {
    read: UnixStream,
}

impl SignalPipe {
    fn install() -> Result<SignalPipe> {
        let (read, write) =
            UnixStream::pair().map_err(|e| Error::Device(format!("signal pipe: {e}")))?;
        read.set_nonblocking(true)
            .map_err(|e| Error::Device(format!("signal pipe: {e}")))?;
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            let write = write
                .try_clone()
                .map_err(|e| Error::Device(format!("signal pipe: {e}")))?;
            signal_hook::low_level::pipe::register(signal, write)
                .map_err(|e| Error::Device(format!("cannot handle signal {signal}: {e}")))?;
        }
        Ok(SignalPipe { read })
    }

    fn fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Empties the pipe; true if a signal was in it.
    fn drain(&self) -> bool {
        let mut buf = [0u8; 64];
        let mut got = false;
        while let Ok(n) = (&self.read).read(&mut buf) {
            if n == 0 {
                break;
            }
            got = true;
        }
        got
    }
}
