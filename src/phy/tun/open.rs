//! Attaching to a persistent TUN device, and saying exactly why it failed when it does.
//!
//! Attaching needs no privilege when the device belongs to the caller: `TUNSETIFF` (with
//! `IFF_VNET_HDR` for offloads) and `TUNSETOFFLOAD` only check the device's owner. Changing
//! the link (up, MTU, addresses) needs `CAP_NET_ADMIN`: that is `scripts/setup.sh`'s job, so
//! nothing here touches the link unless it is down. A failure is diagnosed from what the
//! kernel shows in `/sys/class/net/NAME` (owner, TUN flags) and `/dev/net/tun`'s mode.

use crate::error::Error;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use tun_tap::{Iface, Mode};

/// The command that makes (or repairs) TUN device `name`.
pub(super) fn setup_command(name: &str) -> String {
    match name {
        "tun0" => "sudo scripts/setup.sh".to_string(),
        _ => format!("sudo scripts/setup.sh --tun {name}"),
    }
}

/// Checks, before attaching, that `name` exists and is a single-queue TUN device.
pub(super) fn check_device(name: &str) -> Result<(), Error> {
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Err(Error::Device(format!(
            "/dev/net/tun does not exist: load the tun module (`sudo modprobe tun`), then run `{}`",
            setup_command(name)
        )));
    }
    if interface_index(name) == 0 {
        return Err(Error::Device(format!(
            "TUN device {name} does not exist: create it with `{}` (or pick another with --tun)",
            setup_command(name)
        )));
    }
    match wrong_kind(name) {
        Some(why) => Err(Error::Device(why)),
        None => Ok(()),
    }
}

/// Why `name` (which exists) is not a TUN device tunstack can attach to, if the kernel's
/// view in sysfs says so; None if it is one, or sysfs does not show this namespace.
fn wrong_kind(name: &str) -> Option<String> {
    let dir = std::path::Path::new("/sys/class/net").join(name);
    if !dir.exists() {
        return None;
    }
    let Some(flags) = read_sysfs(name, "tun_flags").and_then(|text| {
        let hex = text.trim().trim_start_matches("0x");
        i32::from_str_radix(hex, 16).ok()
    }) else {
        let other = if name == "tun0" { "tun1" } else { "tun0" };
        return Some(format!(
            "{name} is not a TUN device (tunstack needs one: the kernel hands it IP packets \
             through /dev/net/tun): make one with `{}` and run with --tun {other}",
            setup_command(other)
        ));
    };
    if flags & libc::IFF_TAP != 0 {
        return Some(format!(
            "{name} is a TAP device (Ethernet frames), not a TUN (IP packets): remove it with \
             `sudo ip tuntap del dev {name} mode tap`, then run `{}`",
            setup_command(name)
        ));
    }
    if flags & libc::IFF_MULTI_QUEUE != 0 {
        return Some(format!(
            "{name} is a multi-queue TUN and tunstack attaches with one queue: recreate it with `{}`",
            setup_command(name)
        ));
    }
    None
}

/// Attaches with tun-tap, and clears the offloads a previous offload run left on the
/// device (they outlive the file: the kernel would go on sending super-packets).
pub(super) fn open_plain(name: &str) -> Result<Iface, Error> {
    let iface = Iface::without_packet_info(name, Mode::Tun).map_err(|e| open_error(name, &e))?;
    iface
        .set_non_blocking()
        .map_err(|e| Error::Device(format!("cannot make {name} non-blocking: {e}")))?;
    clear_offloads(iface.as_raw_fd())
        .map_err(|e| Error::Device(format!("cannot clear the offloads of {name}: {e}")))?;
    Ok(iface)
}

/// Attaches with tun-rs and `IFF_VNET_HDR`, then asks for TCP offloads only (checksum and
/// TSO for both families: no UDP GSO, which would need splitting here). `None` if the kernel
/// refuses the offloads (the caller falls back to plain). The link's state is left alone
/// (`inherit_enable_state`): tun-rs would otherwise set it up with `SIOCSIFFLAGS`, which
/// needs `CAP_NET_ADMIN` and failed for the device's own unprivileged owner.
pub(super) fn open_offload(name: &str) -> Result<Option<tun_rs::SyncDevice>, Error> {
    let dev = tun_rs::DeviceBuilder::new()
        .name(name)
        .offload(true)
        .inherit_enable_state()
        .build_sync();
    let dev = match dev {
        Ok(dev) => dev,
        Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
            log::warn!("tun: {name} refused IFF_VNET_HDR ({err}); offloads off");
            return Ok(None);
        }
        Err(err) => return Err(open_error(name, &err)),
    };
    let tcp = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
    if let Err(err) = set_offloads(dev.as_raw_fd(), tcp) {
        log::warn!("tun: {name} refused TCP offloads ({err}); offloads off");
        return Ok(None);
    }
    dev.set_nonblocking(true)
        .map_err(|e| Error::Device(format!("cannot make {name} non-blocking: {e}")))?;
    Ok(Some(dev))
}

/// Turns off the offloads an earlier offload run left on the TUN device `fd` is attached
/// to: without this the kernel goes on handing it packets with partial checksums.
pub fn clear_offloads(fd: RawFd) -> io::Result<()> {
    set_offloads(fd, 0)
}

/// `TUNSETOFFLOAD`: which offloads the kernel may use towards this device (device-wide).
fn set_offloads(fd: RawFd, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value; `fd` is an open TUN file.
    let rc = unsafe { libc::ioctl(fd, libc::TUNSETOFFLOAD, flags as libc::c_ulong) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn open_error(name: &str, err: &io::Error) -> Error {
    let advice = match err.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => permission_advice(name),
        Some(libc::EBUSY) => {
            format!("TUN device {name} is busy: another program (another tunstack?) has it open")
        }
        Some(libc::EINVAL) => wrong_kind(name).unwrap_or_else(|| {
            format!(
                "{name} refused to attach as a TUN without packet info ({err}): recreate it with \
                 `sudo scripts/teardown.sh --tun {name} && {}`",
                setup_command(name)
            )
        }),
        _ => format!(
            "cannot open TUN device {name} ({err}): run `{}`",
            setup_command(name)
        ),
    };
    Error::Device(advice)
}

/// Why attaching to `name` was not allowed: /dev/net/tun closed to us, or the device
/// belongs to someone else.
fn permission_advice(name: &str) -> String {
    if let Err(err) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        && err.kind() == io::ErrorKind::PermissionDenied
    {
        let mode = std::fs::metadata("/dev/net/tun")
            .map(|m| {
                format!(
                    "mode {:04o}, owner uid {}",
                    m.permissions().mode() & 0o7777,
                    m.uid()
                )
            })
            .unwrap_or_else(|_| "unreadable".to_string());
        return format!(
            "permission denied opening /dev/net/tun ({mode}): `sudo chmod 0666 /dev/net/tun` \
             lets users attach to the TUN devices they own (most distributions ship it so; \
             `sudo scripts/setup.sh` checks this), or run as root"
        );
    }
    // SAFETY: geteuid cannot fail and has no preconditions.
    let me = unsafe { libc::geteuid() };
    let owner = read_sysfs(name, "owner").and_then(|t| t.trim().parse::<i64>().ok());
    let group = read_sysfs(name, "group").and_then(|t| t.trim().parse::<i64>().ok());
    let fix = format!("{} --user $USER", setup_command(name));
    match (owner, group) {
        (Some(owner), _) if owner >= 0 && owner != i64::from(me) => format!(
            "permission denied attaching to TUN device {name}: it belongs to {} and you are {}; \
             give it to yourself with `{fix}`",
            describe_uid(owner),
            describe_uid(i64::from(me))
        ),
        (_, Some(group)) if group >= 0 => format!(
            "permission denied attaching to TUN device {name}: it is for group {group} only; \
             give it to yourself with `{fix}`"
        ),
        _ => format!(
            "permission denied opening TUN device {name}: run `{fix}` (it makes {name} yours) \
             and check that /dev/net/tun is readable and writable by you"
        ),
    }
}

/// "root (uid 0)", or "uid 1234" when /etc/passwd does not name it.
fn describe_uid(uid: i64) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let name = passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)?.parse::<i64>().ok()? == uid).then_some(name)
    });
    match name {
        Some(name) => format!("{name} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

/// A file of the device's sysfs directory (shows this namespace under `ip netns exec`).
fn read_sysfs(name: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(std::path::Path::new("/sys/class/net").join(name).join(file)).ok()
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
pub(super) fn interface_mtu(name: &str) -> io::Result<usize> {
    let mut req = ifreq(name);
    interface_ioctl(libc::SIOCGIFMTU, &mut req)?;
    // SAFETY: after a successful SIOCGIFMTU the union holds the MTU.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    usize::try_from(mtu).map_err(|_| io::Error::other(format!("negative MTU {mtu}")))
}

/// Brings `name` up if it is down (setup.sh does; a root user may have taken it down).
/// Only root may: for anyone else a down link is a warning naming the fix, since the
/// stack would wait for packets that cannot come.
pub(super) fn ensure_up(name: &str) {
    let mut req = ifreq(name);
    if interface_ioctl(libc::SIOCGIFFLAGS, &mut req).is_err() {
        return;
    }
    // SAFETY: after a successful SIOCGIFFLAGS the union holds the flags.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short != 0 {
        return;
    }
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    match interface_ioctl(libc::SIOCSIFFLAGS, &mut req) {
        Ok(()) => log::info!("tun: {name} was down; brought it up"),
        Err(err) => log::warn!(
            "tun: {name} is down and cannot be brought up ({err}): no packet will arrive until \
             `{} --user $USER` (or `sudo ip link set {name} up`)",
            setup_command(name)
        ),
    }
}

/// An ifreq naming `name` (cut to IFNAMSIZ - 1 bytes), all else zero.
fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req
        .ifr_name
        .iter_mut()
        .zip(name.bytes().take(libc::IFNAMSIZ - 1))
    {
        *dst = src as libc::c_char;
    }
    req
}

/// One interface ioctl (SIOCGIFMTU, SIOCGIFFLAGS, SIOCSIFFLAGS) on a throwaway socket.
fn interface_ioctl(request: libc::Ioctl, req: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: plain socket(2); the fd is closed below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `req` is a valid ifreq with a NUL-terminated name, and `request` is one that
    // reads or writes only the ifreq.
    let rc = unsafe { libc::ioctl(sock, request, req as *mut libc::ifreq) };
    let result = if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    };
    // SAFETY: `sock` is our own open fd.
    unsafe { libc::close(sock) };
    result
}
