//! What the workload knows about its own descriptors and process, captured right before a call,
//! in the shape of the tracer's `inFd` / `outFd` objects and process context, so a test
//! can compare the two exactly.
//!
//! Everything here comes from the workload's own view: `fstat`, the paths it opened itself
//! (absolute and canonical), `getsockname` / `getpeername` / `getsockopt`, `/proc/self`. None of
//! it reads the kernel's path of a descriptor (`/proc/self/fd/N`), except for anonymous inodes,
//! whose name has no other source.

use std::ffi::OsStr;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// A descriptor as the tracer should report it (`{"fd":N,"type":...}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FdInfo {
    /// The descriptor number passed to sendfile.
    pub fd: i32,
    /// What it refers to.
    #[serde(flatten)]
    pub kind: FdKind,
}

/// What a descriptor refers to, tagged by `"type"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FdKind {
    /// A regular file or directory.
    File(PathInfo),
    /// A character device.
    Chardev(PathInfo),
    /// Anything else the workload opened by path (block device, FIFO on disk).
    Other(PathInfo),
    /// An anonymous pipe.
    Pipe {
        /// `st_ino` of the pipe.
        inode: u64,
    },
    /// A socket.
    Socket(SocketInfo),
    /// An anonymous inode (`[eventfd]`, ...).
    AnonInode {
        /// Its name.
        name: String,
    },
    /// Not resolvable (`"not open"` for a free slot, `"fd out of range"` for a negative fd).
    Unknown {
        /// Why.
        reason: String,
    },
}

/// A descriptor with a path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PathInfo {
    /// The path the workload opened (absolute, canonical); invalid UTF-8 as U+FFFD.
    pub path: String,
    /// Hex of the exact path bytes, only when they are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_hex: Option<String>,
    /// Always false: the workload's paths are short.
    pub truncated: bool,
    /// `st_ino`.
    pub inode: u64,
    /// `st_dev`.
    pub dev: u64,
    /// No names left (`st_nlink == 0`).
    pub deleted: bool,
    /// In no mounted file system (a memfd); the path is the kernel's name. Only when true.
    #[serde(skip_serializing_if = "is_false")]
    pub pseudo: bool,
    /// On a mount the workload detached (`umount -l`) after opening. Only when true.
    #[serde(skip_serializing_if = "is_false")]
    pub detached: bool,
    /// Outside the root directory the calling thread chrooted to. Only when true.
    #[serde(skip_serializing_if = "is_false")]
    pub outside_root: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// What the workload did to a file after opening it that changes how it must be reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Anomaly {
    /// It is a memfd, named by the kernel.
    pub pseudo: bool,
    /// Its mount was lazily unmounted.
    pub detached: bool,
    /// The calling thread chrooted below it.
    pub outside_root: bool,
}

/// A socket descriptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SocketInfo {
    /// `AF_INET`, `AF_INET6`, `AF_UNIX` or `AF_<n>`.
    pub family: String,
    /// `TCP` / `UDP` for inet, `STREAM` / `DGRAM` / `SEQPACKET` for UNIX.
    pub protocol: String,
    /// `st_ino` of the socket.
    pub inode: u64,
    /// `getsockname`, null when unbound.
    pub local: Option<Endpoint>,
    /// `getpeername`, null when not connected.
    pub remote: Option<Endpoint>,
}

/// One end of a socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Endpoint {
    /// IP (Rust's `Display` form) and port.
    Inet {
        /// The address.
        ip: String,
        /// The port.
        port: u16,
    },
    /// A UNIX socket path (`@name` for the abstract namespace).
    Unix {
        /// The path, invalid UTF-8 as U+FFFD.
        path: String,
        /// Hex of the exact bytes, only when they are not UTF-8.
        #[serde(rename = "pathHex", skip_serializing_if = "Option::is_none")]
        path_hex: Option<String>,
    },
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `(lossy text, hex when not UTF-8)` of raw bytes.
fn text(bytes: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_owned(), None),
        Err(_) => (
            String::from_utf8_lossy(bytes).into_owned(),
            Some(hex(bytes)),
        ),
    }
}

/// What the tracer's bounded walk reports for an absolute path: past
/// `sendfile_trace_common::PATH_DEPTH` components it keeps the leaf end and says it truncated.
/// (Exact for paths whose last `PATH_DEPTH` components lie in one file system, as the workload's
/// deep case does; shorter paths are never truncated.)
fn bounded(path: &[u8]) -> (Vec<u8>, bool) {
    let parts: Vec<&[u8]> = path
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    let depth = sendfile_trace_common::PATH_DEPTH as usize;
    if parts.len() <= depth {
        return (path.to_vec(), false);
    }
    let mut out = Vec::new();
    for p in &parts[parts.len() - depth..] {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    (out, true)
}

/// The files the workload opened, by `(st_dev, st_ino)`: the paths it knows them by.
#[derive(Default)]
pub struct Paths {
    known: std::sync::Mutex<Vec<(u64, u64, PathBuf, Anomaly)>>,
}

impl Paths {
    /// Remembers that `path` (absolute, canonical) is the file open on `fd`.
    pub fn register(&self, fd: RawFd, path: &Path) -> io::Result<()> {
        self.register_as(fd, path, Anomaly::default())
    }

    /// Remembers that the file open on `fd` must be reported as `path` with `anomaly`.
    pub fn register_as(&self, fd: RawFd, path: &Path, anomaly: Anomaly) -> io::Result<()> {
        let st = fstat(fd)?;
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.retain(|(d, i, _, _)| (*d, *i) != (st.st_dev, st.st_ino));
        known.push((st.st_dev, st.st_ino, path.to_owned(), anomaly));
        Ok(())
    }

    fn path_of(&self, dev: u64, ino: u64) -> Option<(PathBuf, Anomaly)> {
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(d, i, _, _)| (*d, *i) == (dev, ino))
            .map(|(_, _, p, a)| (p.clone(), *a))
    }
}

/// The fields of `stat` the descriptors need.
struct Stat {
    st_dev: u64,
    st_ino: u64,
    st_mode: libc::mode_t,
    st_nlink: u64,
}

// 32-bit glibc's plain `fstat` has 32-bit sizes and inode numbers and fails with EOVERFLOW on
// the 3 GiB sparse file of `large_count` (the AArch32 workload is built on glibc): use its LFS
// `fstat64`. musl's `off_t` and `ino_t` are 64-bit everywhere, so its `fstat` is already that.
#[cfg(not(all(target_env = "gnu", target_pointer_width = "32")))]
use libc::{fstat as fstat_lfs, stat as stat_lfs};
#[cfg(all(target_env = "gnu", target_pointer_width = "32"))]
use libc::{fstat64 as fstat_lfs, stat64 as stat_lfs};

fn fstat(fd: RawFd) -> io::Result<Stat> {
    // SAFETY: an all-zero stat is valid; fstat only fills it.
    let mut st: stat_lfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat.
    if unsafe { fstat_lfs(fd, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::useless_conversion, clippy::unnecessary_cast)] // Widths differ per target.
    Ok(Stat {
        st_dev: st.st_dev as u64,
        st_ino: st.st_ino as u64,
        st_mode: st.st_mode,
        st_nlink: st.st_nlink as u64,
    })
}

/// Describes `fd` as the tracer should at the moment of the call.
pub fn describe(fd: RawFd, paths: &Paths) -> FdInfo {
    let kind = match fstat(fd) {
        // The kernel tells a number outside the fd table from a free slot in it.
        Err(e) if e.raw_os_error() == Some(libc::EBADF) && fd < 0 => FdKind::Unknown {
            reason: "fd out of range".into(),
        },
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => FdKind::Unknown {
            reason: "not open".into(),
        },
        Err(e) => FdKind::Unknown {
            reason: format!("fstat: {e}"),
        },
        Ok(st) => classify(fd, &st, paths),
    };
    FdInfo { fd, kind }
}

fn classify(fd: RawFd, st: &Stat, paths: &Paths) -> FdKind {
    let fmt = st.st_mode & libc::S_IFMT;
    if fmt == libc::S_IFSOCK {
        return FdKind::Socket(socket_info(fd, st.st_ino));
    }
    if let Some((path, anomaly)) = paths.path_of(st.st_dev, st.st_ino) {
        let (bytes, truncated) = if anomaly.pseudo {
            (path.as_os_str().as_bytes().to_vec(), false)
        } else {
            bounded(path.as_os_str().as_bytes())
        };
        let (path_text, path_hex) = text(&bytes);
        let info = PathInfo {
            path: path_text,
            path_hex,
            truncated,
            inode: st.st_ino,
            dev: st.st_dev,
            deleted: st.st_nlink == 0,
            pseudo: anomaly.pseudo,
            detached: anomaly.detached,
            outside_root: anomaly.outside_root,
        };
        return if fmt == libc::S_IFREG || fmt == libc::S_IFDIR {
            FdKind::File(info)
        } else if fmt == libc::S_IFCHR {
            FdKind::Chardev(info)
        } else {
            FdKind::Other(info)
        };
    }
    if fmt == libc::S_IFIFO {
        return FdKind::Pipe { inode: st.st_ino };
    }
    if fmt == 0 {
        // Anonymous inodes have no file type bits; their name is only in the fd's link.
        if let Ok(link) = std::fs::read_link(format!("/proc/self/fd/{fd}"))
            && let Some(name) = link.as_os_str().as_bytes().strip_prefix(b"anon_inode:")
        {
            return FdKind::AnonInode {
                name: String::from_utf8_lossy(name).into_owned(),
            };
        }
    }
    FdKind::Unknown {
        reason: format!(
            "the workload did not open fd {fd} by path (mode {:o})",
            st.st_mode
        ),
    }
}

fn sockopt(fd: RawFd, opt: libc::c_int) -> Option<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are valid for an int option.
    let r = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&raw mut v).cast(), &mut len) };
    (r == 0).then_some(v)
}

fn socket_info(fd: RawFd, inode: u64) -> SocketInfo {
    let domain = sockopt(fd, libc::SO_DOMAIN).unwrap_or(-1);
    let family = match domain {
        libc::AF_INET => "AF_INET".to_owned(),
        libc::AF_INET6 => "AF_INET6".to_owned(),
        libc::AF_UNIX => "AF_UNIX".to_owned(),
        n => format!("AF_{n}"),
    };
    let protocol = if domain == libc::AF_UNIX {
        match sockopt(fd, libc::SO_TYPE).unwrap_or(-1) {
            libc::SOCK_STREAM => "STREAM".to_owned(),
            libc::SOCK_DGRAM => "DGRAM".to_owned(),
            libc::SOCK_SEQPACKET => "SEQPACKET".to_owned(),
            n => format!("SOCK_{n}"),
        }
    } else {
        match sockopt(fd, libc::SO_PROTOCOL).unwrap_or(-1) {
            libc::IPPROTO_TCP => "TCP".to_owned(),
            libc::IPPROTO_UDP => "UDP".to_owned(),
            n => format!("IPPROTO_{n}"),
        }
    };
    SocketInfo {
        family,
        protocol,
        inode,
        local: name(fd, libc::getsockname),
        remote: name(fd, libc::getpeername),
    }
}

type NameFn =
    unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

/// `getsockname` / `getpeername` as an endpoint; None when unbound or not connected.
fn name(fd: RawFd, f: NameFn) -> Option<Endpoint> {
    // SAFETY: an all-zero sockaddr_storage is valid.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `ss` has room for any address; `len` says how much.
    if unsafe { f(fd, (&raw mut ss).cast(), &mut len) } != 0 {
        return None;
    }
    let len = len as usize;
    match libc::c_int::from(ss.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in.
            let sin: libc::sockaddr_in = unsafe { std::ptr::read((&raw const ss).cast()) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            let port = u16::from_be(sin.sin_port);
            (port != 0 || !ip.is_unspecified()).then(|| Endpoint::Inet {
                ip: ip.to_string(),
                port,
            })
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6.
            let sin6: libc::sockaddr_in6 = unsafe { std::ptr::read((&raw const ss).cast()) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let port = u16::from_be(sin6.sin6_port);
            (port != 0 || !ip.is_unspecified()).then(|| Endpoint::Inet {
                ip: ip.to_string(),
                port,
            })
        }
        libc::AF_UNIX => {
            // SAFETY: the kernel wrote a sockaddr_un of `len` bytes.
            let sun: libc::sockaddr_un = unsafe { std::ptr::read((&raw const ss).cast()) };
            let off = std::mem::size_of::<libc::sa_family_t>();
            let n = len.saturating_sub(off).min(sun.sun_path.len());
            if n == 0 {
                return None; // unbound (autobind gives an abstract name instead)
            }
            let raw: Vec<u8> = sun.sun_path[..n].iter().map(|&c| c as u8).collect();
            let bytes = if raw[0] == 0 {
                let mut v = b"@".to_vec();
                v.extend_from_slice(&raw[1..]);
                v
            } else {
                let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
                raw[..end].to_vec()
            };
            let (path, path_hex) = text(&bytes);
            Some(Endpoint::Unix { path, path_hex })
        }
        _ => None,
    }
}

/// Process facts the tracer reports too.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessFacts {
    /// `getppid()`.
    pub ppid: i32,
    /// `readlink /proc/self/exe`, invalid UTF-8 as U+FFFD.
    pub exe: String,
    /// Hex of the exact exe path bytes, only when they are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exe_hex: Option<String>,
    /// `st_ino` of `/proc/self/ns/mnt`.
    pub mnt_ns: u64,
    /// `st_ino` of `/proc/self/ns/pid`.
    pub pid_ns: u64,
    /// Real uid.
    pub uid: u32,
    /// Real gid.
    pub gid: u32,
    /// cgroup v2 id (inode of the cgroup's directory), null if no cgroup2 mount is visible.
    pub cgroup_id: Option<u64>,
}

impl ProcessFacts {
    /// Reads the facts now.
    pub fn now() -> io::Result<Self> {
        let exe = std::fs::read_link("/proc/self/exe")?;
        let (exe, exe_hex) = text(exe.as_os_str().as_bytes());
        let ns = |n: &str| std::fs::metadata(format!("/proc/self/ns/{n}")).map(|m| m.ino());
        // SAFETY: these calls cannot fail.
        let (ppid, uid, gid) = unsafe { (libc::getppid(), libc::getuid(), libc::getgid()) };
        Ok(ProcessFacts {
            ppid,
            exe,
            exe_hex,
            mnt_ns: ns("mnt")?,
            pid_ns: ns("pid")?,
            uid,
            gid,
            cgroup_id: cgroup_id(),
        })
    }
}

/// Where cgroup2 is mounted, from `/proc/self/mountinfo`.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read("/proc/self/mountinfo").ok()?;
    info.split(|&b| b == b'\n').find_map(|line| {
        // "36 35 0:30 / /sys/fs/cgroup rw,... shared:9 - cgroup2 cgroup2 rw"
        let text = String::from_utf8_lossy(line);
        let (left, right) = text.split_once(" - ")?;
        (right.split(' ').next() == Some("cgroup2"))
            .then(|| left.split(' ').nth(4).map(unescape_mountinfo))?
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape_mountinfo(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = u16::from(b[i + 1] - b'0') * 64 + u16::from(b[i + 2] - b'0') * 8;
            out.push((v + u16::from(b[i + 3] - b'0')) as u8);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(OsStr::from_bytes(&out))
}

/// This process's cgroup v2 id: the inode of its cgroup's directory.
pub fn cgroup_id() -> Option<u64> {
    let cg = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = cg.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = cgroup2_mount()?.join(rel.trim_start_matches('/'));
    std::fs::metadata(dir).ok().map(|m| m.ino())
}

/// Wall-clock ns since the epoch when thread `tid` of this process started, from field 22 of
/// `/proc/self/task/TID/stat` (clock ticks since boot) plus the boot time; tick-precise only.
pub fn thread_start_time(tid: i32) -> io::Result<u64> {
    let stat = std::fs::read(format!("/proc/self/task/{tid}/stat"))?;
    // The comm (field 2) may hold any bytes, ')' included: fields resume after the last ')'.
    let close = stat
        .iter()
        .rposition(|&b| b == b')')
        .ok_or_else(|| io::Error::other("no ')' in stat"))?;
    let rest = String::from_utf8_lossy(&stat[close + 1..]);
    let ticks: u64 = rest
        .split_whitespace()
        .nth(22 - 3)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| io::Error::other("no starttime in stat"))?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz)
        .ok()
        .filter(|h| *h > 0)
        .ok_or_else(|| io::Error::other("no _SC_CLK_TCK"))?;
    // The tightest of a few boot/real/boot brackets: a preemption between two clock reads
    // (common in a busy VM) would skew the result.
    let mut best = (i128::MAX, 0);
    for _ in 0..5 {
        let boot = clock_ns(libc::CLOCK_BOOTTIME);
        let real = clock_ns(libc::CLOCK_REALTIME);
        let boot2 = clock_ns(libc::CLOCK_BOOTTIME);
        if boot2 - boot < best.0 {
            best = (boot2 - boot, real - (boot + boot2) / 2);
        }
    }
    let boot_wall = best.1;
    let since_boot = i128::from(ticks) * 1_000_000_000 / i128::from(hz);
    u64::try_from(boot_wall + since_boot).map_err(|_| io::Error::other("start before 1970"))
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    // SAFETY: an all-zero timespec is valid; clock_gettime only fills it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is valid and writable.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    #[allow(clippy::useless_conversion)] // time_t is 32 bits on some targets.
    let ns = i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec);
    ns
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn describes_its_own_descriptors() {
        let paths = Paths::default();
        assert_eq!(
            describe(-1, &paths).kind,
            FdKind::Unknown {
                reason: "fd out of range".into()
            }
        );
        let null = std::fs::File::open("/dev/null").unwrap();
        paths
            .register(null.as_raw_fd(), Path::new("/dev/null"))
            .unwrap();
        let FdKind::Chardev(info) = describe(null.as_raw_fd(), &paths).kind else {
            panic!("/dev/null is a char device");
        };
        assert_eq!(info.path, "/dev/null");
        assert!(!info.deleted);
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let v = serde_json::to_value(describe(c.as_raw_fd(), &paths)).unwrap();
        assert_eq!(v["type"], "socket");
        assert_eq!(v["family"], "AF_INET");
        assert_eq!(v["protocol"], "TCP");
        assert_eq!(v["remote"]["ip"], "127.0.0.1");
        assert_eq!(v["remote"]["port"], l.local_addr().unwrap().port());
        assert_eq!(v["local"]["port"], c.local_addr().unwrap().port());
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), PathBuf::from("/a b"));
        assert_eq!(
            unescape_mountinfo("/sys/fs/cgroup"),
            PathBuf::from("/sys/fs/cgroup")
        );
    }

    #[test]
    fn thread_start_is_recent_and_before_now() {
        let t = thread_start_time(crate::sys::gettid()).unwrap();
        let now = clock_ns(libc::CLOCK_REALTIME) as u64;
        assert!(
            t <= now + 20_000_000 && now - t < 3600 * 1_000_000_000,
            "{t} vs {now}"
        );
    }
}
