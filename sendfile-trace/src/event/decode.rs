//! Decoding the kernel's records: the entry record and its tail (paths, socket ends, the
//! process part), and a descriptor record into its [`FdInfo`].

use std::{borrow::Cow, sync::Arc};

use sendfile_trace_common::{EntryRecord, FdRecord, Seg, fd_flags, fd_kind, fd_reason};

use super::*;

/// The comm bytes up to the first NUL.
pub fn comm_bytes(comm: &[u8]) -> &[u8] {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    &comm[..end]
}

pub(super) fn hex(bytes: &[u8]) -> String {
    hex_of(bytes)
}

/// Lower-case hex of `bytes` (the `...Hex` fields).
pub fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The entry record of a call and its tail, as read from the ring.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The fixed part.
    pub rec: EntryRecord,
    /// Paths and names.
    pub tail: Vec<u8>,
    /// The process part: decoded from this record, or, when the kernel left it out
    /// (`PROC_CACHED`), the one kept from the process's last full record; `None` if that is
    /// unknown.
    pub proc: Option<Arc<ProcCtx>>,
}

/// The per-process part of an entry record, kept by tgid for the records that leave it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcCtx {
    /// Thread group id in the process's pid namespace.
    pub ns_tgid: u32,
    /// Parent's tgid in that namespace.
    pub ns_ppid: u32,
    /// Parent's tgid in the host namespace.
    pub host_ppid: u32,
    /// Mount namespace inode.
    pub mnt_ns: u32,
    /// Pid namespace inode.
    pub pid_ns: u32,
    /// The executable.
    pub executable: Option<Executable>,
}

impl Entry {
    /// An entry from the ring: decodes its process part unless the kernel left it out.
    pub fn new(rec: EntryRecord, tail: Vec<u8>) -> Entry {
        let mut e = Entry {
            rec,
            tail,
            proc: None,
        };
        if rec.flags & fd_flags::PROC_CACHED == 0 {
            e.proc = Some(Arc::new(e.decode_proc()));
        }
        e
    }

    /// Whether the kernel left the process part out.
    pub fn proc_cached(&self) -> bool {
        self.rec.flags & fd_flags::PROC_CACHED != 0
    }

    fn decode_proc(&self) -> ProcCtx {
        let r = &self.rec;
        let executable = (r.flags & fd_flags::NO_EXE == 0).then(|| {
            let pseudo = r.flags & fd_flags::EXE_PSEUDO != 0;
            let raw = if pseudo {
                // Only memfd and shmem files can be executed among pseudo files: simple_dname.
                pseudo_name(self.seg(r.exe), 0, 0)
            } else {
                self.path(r.exe)
            };
            let (path, path_hex) = text(raw);
            Executable {
                path,
                path_hex,
                truncated: r.flags & fd_flags::EXE_TRUNCATED != 0,
                pseudo,
                detached: !pseudo && r.flags & fd_flags::EXE_DETACHED != 0,
            }
        });
        ProcCtx {
            ns_tgid: r.ns_tgid,
            ns_ppid: r.ns_ppid,
            host_ppid: r.host_ppid,
            mnt_ns: r.mnt_ns,
            pid_ns: r.pid_ns,
            executable,
        }
    }

    fn seg(&self, s: Seg) -> &[u8] {
        self.tail
            .get(s.off as usize..s.off as usize + s.len as usize)
            .unwrap_or_default()
    }

    /// A path from its leaf-first components (`len` byte, then the name), in one allocation:
    /// the components are placed from the end of the buffer back.
    fn path(&self, s: Seg) -> Vec<u8> {
        let seg = self.seg(s);
        let components = || {
            let mut b = seg;
            std::iter::from_fn(move || {
                let (&len, rest) = b.split_first()?;
                let len = (len as usize).min(rest.len());
                let name = &rest[..len];
                b = &rest[len..];
                Some(name)
            })
        };
        let total: usize = components().map(|c| c.len() + 1).sum();
        if total == 0 {
            return b"/".to_vec();
        }
        let mut path = vec![0u8; total];
        let mut end = total;
        for c in components() {
            let start = end - c.len();
            path[start..end].copy_from_slice(c);
            path[start - 1] = b'/';
            end = start - 1;
        }
        path
    }
}

/// File system magics whose files the kernel names with its own `d_dname` (include/uapi/linux/
/// magic.h); every other pseudo file gets `simple_dname()`'s `/NAME (deleted)` (memfd on shmem
/// or hugetlbfs, SysV shm, secretmem).
mod magic {
    pub const ANON_INODE_FS: u32 = 0x0904_1934;
    pub const PIPEFS: u32 = 0x5049_5045;
    pub const SOCKFS: u32 = 0x534f_434b;
    pub const PIDFS: u32 = 0x5049_4446;
    pub const NSFS: u32 = 0x6e73_6673;
    pub const DMA_BUF: u32 = 0x444d_4142;
}

/// The kernel's name (`d_path()` → `d_op->d_dname`) of a file that is in no mounted tree, from
/// its one dentry name `seg` (length-prefixed, as the walk writes it), its file system's magic
/// and inode: `anonfs`, `pipefs`, `sockfs`, `pidfs` and `nsfs` have their own `d_dname`, every
/// other one `simple_dname()`.
pub fn pseudo_name(seg: &[u8], fs_magic: u32, ino: u64) -> Vec<u8> {
    let name = match seg.split_first() {
        Some((&len, rest)) => &rest[..(len as usize).min(rest.len())],
        None => &[][..],
    };
    let join = |parts: &[&[u8]]| parts.concat();
    match fs_magic {
        magic::ANON_INODE_FS => join(&[b"anon_inode:", name]),
        magic::PIPEFS => format!("pipe:[{ino}]").into_bytes(),
        magic::SOCKFS => format!("socket:[{ino}]").into_bytes(),
        magic::PIDFS => b"anon_inode:[pidfd]".to_vec(),
        // ns_dname() prints the namespace type, which the dentry does not carry.
        magic::NSFS => format!("nsfs:[{ino}]").into_bytes(),
        magic::DMA_BUF => join(&[b"/", name]),
        _ => join(&[b"/", name, b" (deleted)"]),
    }
}

/// Text of attacker-controlled bytes, and their hex when they are not UTF-8.
pub(super) fn text(bytes: Vec<u8>) -> (String, Option<String>) {
    match String::from_utf8(bytes) {
        Ok(s) => (s, None),
        Err(e) => {
            let bytes = e.into_bytes();
            (
                String::from_utf8_lossy(&bytes).into_owned(),
                Some(hex(&bytes)),
            )
        }
    }
}

/// `stat(2)`'s `st_dev` for a kernel `dev_t` (major << 20 | minor), as glibc's `makedev`.
pub fn st_dev(kdev: u32) -> u64 {
    let (major, minor) = (u64::from(kdev >> 20), u64::from(kdev & 0xf_ffff));
    ((major & 0xffff_f000) << 32)
        | ((major & 0xfff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0xff)
}

pub(super) fn family_name(f: u16) -> Cow<'static, str> {
    match f {
        1 => "AF_UNIX".into(),
        2 => "AF_INET".into(),
        10 => "AF_INET6".into(),
        16 => "AF_NETLINK".into(),
        17 => "AF_PACKET".into(),
        40 => "AF_VSOCK".into(),
        n => format!("AF_{n}").into(),
    }
}

pub(super) fn protocol_name(family: u16, protocol: u16, sock_type: u16) -> Cow<'static, str> {
    if family == 1 {
        return match sock_type {
            1 => "STREAM".into(),
            2 => "DGRAM".into(),
            5 => "SEQPACKET".into(),
            t => format!("TYPE_{t}").into(),
        };
    }
    match protocol {
        6 => "TCP".into(),
        17 => "UDP".into(),
        132 => "SCTP".into(),
        136 => "UDPLITE".into(),
        262 => "MPTCP".into(),
        1 => "ICMP".into(),
        58 => "ICMPV6".into(),
        255 => "RAW".into(),
        p => format!("IPPROTO_{p}").into(),
    }
}

pub(super) fn inet_endpoint(family: u16, addr: &[u8; 16], port: u16) -> Option<Endpoint> {
    let ip: std::net::IpAddr = if family == 2 {
        std::net::Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]).into()
    } else {
        std::net::Ipv6Addr::from(*addr).into()
    };
    (!ip.is_unspecified() || port != 0).then(|| Endpoint::Inet {
        ip: match ip {
            std::net::IpAddr::V4(v4) => ipv4_text(v4.octets()),
            std::net::IpAddr::V6(v6) => v6.to_string(),
        },
        port,
    })
}

/// `a.b.c.d`, as `Ipv4Addr`'s `Display` writes it, without the formatting machinery (one per
/// socket of every event).
fn ipv4_text(octets: [u8; 4]) -> String {
    let mut s = String::with_capacity(15);
    for (i, o) in octets.into_iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        s.push_str(itoa::Buffer::new().format(o));
    }
    s
}

pub(super) fn unix_endpoint(raw: &[u8]) -> Option<Endpoint> {
    let bytes: Vec<u8> = match raw.split_first() {
        None => return None,
        // Abstract namespace: a leading NUL, then exact bytes (shown as `@name`).
        Some((0, rest)) => std::iter::once(b'@').chain(rest.iter().copied()).collect(),
        Some(_) => raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())].to_vec(),
    };
    let (path, path_hex) = text(bytes);
    Some(Endpoint::Unix { path, path_hex })
}

pub(super) fn fd_info(fd: i32, e: &Entry, r: &FdRecord) -> FdInfo {
    let path_info = || {
        let pseudo = r.flags & fd_flags::PSEUDO != 0;
        let raw = if pseudo {
            pseudo_name(e.seg(r.path), r.fs_magic, r.ino)
        } else {
            e.path(r.path)
        };
        let (path, path_hex) = text(raw);
        let truncated = r.flags & fd_flags::PATH_TRUNCATED != 0;
        PathInfo {
            path,
            path_hex,
            truncated,
            inode: r.ino,
            dev: st_dev(r.dev),
            // A pseudo file has no name in any tree: unlinked, as its kernel name says.
            deleted: pseudo || r.flags & fd_flags::DELETED != 0,
            pseudo,
            detached: !pseudo && r.flags & fd_flags::DETACHED != 0,
            // Whether the walk passed the caller's root is known only if it was complete and
            // reached the namespace root (a detached tree is outside it anyway).
            outside_root: !pseudo
                && !truncated
                && r.flags & fd_flags::DETACHED == 0
                && r.flags & fd_flags::OUTSIDE_ROOT != 0,
        }
    };
    let kind = match r.kind {
        fd_kind::FILE => FdKind::File(path_info()),
        fd_kind::CHARDEV => FdKind::Chardev(path_info()),
        fd_kind::OTHER => FdKind::Other(path_info()),
        fd_kind::PIPE => FdKind::Pipe { inode: r.ino },
        fd_kind::ANON_INODE => FdKind::AnonInode {
            name: String::from_utf8_lossy(e.seg(r.path)).into_owned(),
        },
        fd_kind::SOCKET => {
            let (local, remote) = match r.family {
                2 | 10 => (
                    inet_endpoint(r.family, &r.local_addr, r.local_port),
                    inet_endpoint(r.family, &r.remote_addr, r.remote_port),
                ),
                1 => (
                    unix_endpoint(e.seg(r.local_path)),
                    unix_endpoint(e.seg(r.remote_path)),
                ),
                _ => (None, None),
            };
            FdKind::Socket(SocketInfo {
                family: family_name(r.family),
                protocol: protocol_name(r.family, r.protocol, r.sock_type),
                inode: r.ino,
                local,
                remote,
            })
        }
        _ => FdKind::Unknown {
            reason: fd_reason::NAMES
                .get(r.reason as usize)
                .copied()
                .unwrap_or("unknown")
                .to_owned(),
        },
    };
    FdInfo { fd, kind }
}

pub(super) fn unresolved(fd: i32, reason: &str) -> FdInfo {
    FdInfo {
        fd,
        kind: FdKind::Unknown {
            reason: reason.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_text_is_what_display_writes() {
        for b in 0..=255u8 {
            let o = [b, 0, b.wrapping_mul(7), 100];
            assert_eq!(ipv4_text(o), std::net::Ipv4Addr::from(o).to_string());
        }
    }
}
