//! The TUN device (tun-tap, IFF_NO_PI) as a smoltcp `Device` with `Medium::Ip`.
//! Opening attaches to the persistent device `scripts/setup.sh` made; every way that can fail
//! becomes one sentence that says what to do. Reads and writes are non-blocking.

use crate::error::Error;
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use tun_tap::{Iface, Mode};

/// Largest IP packet a TUN can carry.
const MAX_PACKET: usize = 65535;

/// An open TUN device.
pub struct TunDevice {
    iface: Iface,
    mtu: usize,
    rx_buf: Vec<u8>,
    tx_buf: Vec<u8>,
    error: Option<io::Error>,
    tx_errors: u64,
}

impl TunDevice {
    /// Attaches to the existing TUN device `name`. `mtu` overrides the device's own MTU.
    pub fn open(name: &str, mtu: Option<usize>) -> Result<TunDevice, Error> {
        if !std::path::Path::new("/dev/net/tun").exists() {
            return Err(Error::Device(
                "/dev/net/tun does not exist: load the tun module (`sudo modprobe tun`), then run `sudo scripts/setup.sh`".into(),
            ));
        }
        if interface_index(name) == 0 {
            return Err(Error::Device(format!(
                "TUN device {name} does not exist: create it with `sudo scripts/setup.sh` (or pick another with --tun)"
            )));
        }
        let iface =
            Iface::without_packet_info(name, Mode::Tun).map_err(|e| open_error(name, &e))?;
        iface
            .set_non_blocking()
            .map_err(|e| Error::Device(format!("cannot make {name} non-blocking: {e}")))?;
        let mtu = match mtu {
            Some(mtu) => mtu,
            None => interface_mtu(name).unwrap_or(1500),
        };
        log::info!("tun: attached to {name} (mtu {mtu})");
        Ok(TunDevice {
            iface,
            mtu: mtu.min(MAX_PACKET),
            rx_buf: vec![0; MAX_PACKET],
            tx_buf: vec![0; MAX_PACKET],
            error: None,
            tx_errors: 0,
        })
    }

    /// The file descriptor to wait on for readability.
    pub fn fd(&self) -> RawFd {
        self.iface.as_raw_fd()
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        self.iface.name()
    }

    /// A read error other than "no packet now" (the device was deleted, ...), once.
    pub fn take_error(&mut self) -> Option<Error> {
        self.error.take().map(|e| {
            Error::Device(format!(
                "reading TUN device {} failed ({e}): was it deleted? run `sudo scripts/setup.sh` and restart",
                self.iface.name()
            ))
        })
    }

    /// Writes that failed since the device was opened.
    pub fn tx_errors(&self) -> u64 {
        self.tx_errors
    }
}

fn open_error(name: &str, err: &io::Error) -> Error {
    let advice = match err.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => format!(
            "permission denied opening TUN device {name}: run `sudo scripts/setup.sh` (it makes {name} yours) and check that /dev/net/tun is readable and writable by you"
        ),
        Some(libc::EBUSY) => {
            format!("TUN device {name} is busy: another program (another tunstack?) has it open")
        }
        Some(libc::EINVAL) => format!(
            "{name} exists but is not a TUN device without packet info: recreate it with `sudo scripts/teardown.sh && sudo scripts/setup.sh`"
        ),
        _ => format!("cannot open TUN device {name} ({err}): run `sudo scripts/setup.sh`"),
    };
    Error::Device(advice)
}

/// The interface index of `name` in this network namespace, 0 if there is none.
fn interface_index(name: &str) -> u32 {
    let Ok(cname) = CString::new(name) else {
        return 0;
    };
    // SAFETY: `cname` is a valid NUL-terminated string that outlives the call.
    unsafe { libc::if_nametoindex(cname.as_ptr()) }
}

/// The MTU the kernel has for `name`, read with SIOCGIFMTU.
fn interface_mtu(name: &str) -> Option<usize> {
    // SAFETY: plain socket(2); the fd is closed below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if sock < 0 {
        return None;
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *dst = src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq with a NUL-terminated name; SIOCGIFMTU fills ifru_mtu.
    let rc = unsafe { libc::ioctl(sock, libc::SIOCGIFMTU, &mut req) };
    // SAFETY: `sock` is our own open fd.
    unsafe { libc::close(sock) };
    if rc != 0 {
        return None;
    }
    // SAFETY: after a successful SIOCGIFMTU the union holds the MTU.
    Some(unsafe { req.ifr_ifru.ifru_mtu } as usize)
}

/// A packet read from the TUN.
pub struct TunRx<'a>(&'a [u8]);

/// A slot to write one packet to the TUN.
pub struct TunTx<'a> {
    iface: &'a Iface,
    buf: &'a mut Vec<u8>,
    errors: &'a mut u64,
}

impl phy::RxToken for TunRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl phy::TxToken for TunTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(self.buf.len());
        let packet = &mut self.buf[..len];
        let result = f(packet);
        if let Err(err) = self.iface.send(packet) {
            *self.errors += 1;
            log::warn!("tun: write of {len} bytes failed: {err}");
        }
        result
    }
}

impl Device for TunDevice {
    type RxToken<'a> = TunRx<'a>;
    type TxToken<'a> = TunTx<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(TunRx<'_>, TunTx<'_>)> {
        let len = match self.iface.recv(&mut self.rx_buf) {
            Ok(len) => len,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return None,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => return None,
            Err(err) => {
                self.error = Some(err);
                return None;
            }
        };
        log::trace!("tun: rx {len} bytes");
        let TunDevice {
            iface,
            rx_buf,
            tx_buf,
            tx_errors,
            ..
        } = self;
        Some((
            TunRx(&rx_buf[..len]),
            TunTx {
                iface,
                buf: tx_buf,
                errors: tx_errors,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TunTx<'_>> {
        Some(TunTx {
            iface: &self.iface,
            buf: &mut self.tx_buf,
            errors: &mut self.tx_errors,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}
