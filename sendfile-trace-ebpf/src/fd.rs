//! Resolving a descriptor from the caller's fd table at syscall entry: kind, path across mounts,
//! inode, device, deletion, and socket endpoints.

use aya_ebpf::helpers::generated::{bpf_loop, bpf_probe_read_kernel_str};
use aya_log_ebpf::debug;
use sendfile_trace_common::{
    FILE_WINDOW, FdRecord, INODE_WINDOW, PATH_BUDGET, PATH_DEPTH, Seg, TAIL_SIZE, fd_flags,
    fd_kind, fd_reason,
};

use crate::kernel::{copy, current_task, load, off, ptr, read};

const MASK: u32 = TAIL_SIZE as u32 - 1;
const AF_UNIX: u16 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
/// `sizeof(sockaddr_un.sun_path)`.
const SUN_PATH_MAX: u32 = 108;

/// The variable tail of the entry record being built (a per-CPU map value, `TAIL_SIZE` plus
/// slack bytes long) and where the next free offset is kept.
///
/// The offset lives in map memory and every access is volatile, on purpose: the verifier does
/// not track values stored in a map, so the states at the many exits of a path walk look alike
/// and are pruned, instead of the rest of the program being verified once per exit.
pub struct Tail {
    /// Start of the tail.
    pub base: *mut u8,
    /// Bytes used so far (in map memory).
    pub pos: *mut u32,
    /// The caller's roots, from [`caller_roots`], in map memory: read where compared, not kept
    /// in registers across the walk (the entry programs' 512-byte stack has no room for their
    /// spills once flows are counted too).
    pub roots: *const [u64; 3],
    /// Room for the file and inode windows read in [`describe`], in map memory for the same
    /// reason: on the stack they (and the copies `Option` makes of them) took 200 bytes of it.
    pub window: *mut [u64; WINDOW_WORDS],
    /// The state of the path walk under way, in map memory (see [`walk_path`]).
    pub walk: *mut Walk,
    /// The flags word the walk under way sets: a pointer, so kept here on the stack, where
    /// the verifier keeps its type (a pointer stored in map memory reads back as a number).
    pub flags: *mut u32,
}

/// The state a path walk carries from one component to the next: in map memory, so that one
/// step can run as a `bpf_loop` callback (whose only way in is one context pointer).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Walk {
    dentry: u64,
    mount: u64,
    mnt_parent: u64,
    mountpoint: u64,
    mnt_root: u64,
    leaf: u64,
    limit: u32,
    bits: PathBits,
}

/// Words of [`Tail::window`]: the larger of the file and inode windows.
pub const WINDOW_WORDS: usize = if FILE_WINDOW > INODE_WINDOW {
    FILE_WINDOW as usize / 8
} else {
    INODE_WINDOW as usize / 8
};

impl Tail {
    /// Bytes used so far.
    #[inline(always)]
    pub fn pos(&self) -> u32 {
        // SAFETY: points into this CPU's scratch value.
        unsafe { core::ptr::read_volatile(self.pos) }
    }

    #[inline(always)]
    fn set_pos(&self, v: u32) {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(self.pos, v) }
    }

    /// Appends `len` (≤ 255) bytes from kernel address `src`, after a length byte if `prefixed`.
    #[inline(always)]
    fn push(&mut self, src: u64, len: u32, prefixed: bool, limit: u32) -> bool {
        let pos = self.pos();
        let head = prefixed as u32;
        if len > 255 || pos > TAIL_SIZE as u32 {
            return false;
        }
        let end = pos + head + len;
        if end > limit || end > TAIL_SIZE as u32 {
            return false;
        }
        // SAFETY: the offsets are masked into the tail and len ≤ 255 < the slack after it.
        unsafe {
            if prefixed {
                *self.base.add((pos & MASK) as usize) = len as u8;
            }
            let dst = self.base.add(((pos + head) & MASK) as usize);
            // The volatile load hides `len`'s range from LLVM so the mask survives for the
            // verifier (LLVM's range checks are not ones the verifier can follow).
            let size = core::ptr::read_volatile(&len) & 0xff;
            if !copy(dst, size, src) {
                return false;
            }
        }
        self.set_pos(end);
        true
    }

    /// Appends a NUL-terminated kernel string of at most 255 bytes into `seg`.
    #[inline(always)]
    pub fn push_str(&mut self, src: u64, seg: *mut Seg) {
        let start = self.pos();
        if start + 256 > TAIL_SIZE as u32 {
            return;
        }
        // SAFETY: masked offset; 256 bytes fit in the slack after the tail.
        let n = unsafe {
            bpf_probe_read_kernel_str(
                self.base.add((start & MASK) as usize).cast(),
                256,
                src as *const _,
            )
        };
        if n <= 1 {
            return;
        }
        let len = (n as u32 - 1) & 0xff;
        self.set_pos(start + len);
        // SAFETY: seg points into this CPU's scratch value.
        unsafe {
            core::ptr::write_volatile(
                seg,
                Seg {
                    off: start as u16,
                    len: len as u16,
                },
            )
        };
    }
}

/// Which flag bits a path walk sets (fd records and the executable use different ones).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct PathBits {
    /// The walk stopped before the root.
    pub truncated: u32,
    /// The leaf is unlinked (0: not checked).
    pub deleted: u32,
    /// The leaf is in no mounted file system ([`fd_flags::PSEUDO`]).
    pub pseudo: u32,
    /// The walk ended on a mount that is not the caller's namespace root.
    pub detached: u32,
    /// The walk never passed the caller's root directory (0: not checked).
    pub outside_root: u32,
}

impl PathBits {
    /// The bits of a descriptor's path ([`FdRecord::flags`]).
    pub const FD: PathBits = PathBits {
        truncated: fd_flags::PATH_TRUNCATED,
        deleted: fd_flags::DELETED,
        pseudo: fd_flags::PSEUDO,
        detached: fd_flags::DETACHED,
        outside_root: fd_flags::OUTSIDE_ROOT,
    };
    /// The bits of the executable's path (`EntryRecord::flags`). No `outside_root`: the root
    /// is per thread, the executable part of a record is kept per process.
    pub const EXE: PathBits = PathBits {
        truncated: fd_flags::EXE_TRUNCATED,
        deleted: 0,
        pseudo: fd_flags::EXE_PSEUDO,
        detached: fd_flags::EXE_DETACHED,
        outside_root: 0,
    };
}

/// The caller's root directory (as a `struct mount` and dentry) and the root mount of its mount
/// namespace, for [`walk_path`] to tell where a path really starts. BTF-typed loads (about a
/// nanosecond each); zeros if the task has no `fs` (an exiting task), which only sets flags.
#[inline(always)]
pub fn caller_roots() -> [u64; 3] {
    let task = current_task();
    let fs: u64 = load(task, off!(task_fs));
    let root_vfsmnt: u64 = load(fs, off!(fs_root));
    let root_dentry: u64 = load(fs, off!(fs_root) + 8);
    let ns: u64 = load(load::<u64>(task, off!(task_nsproxy)), off!(nsproxy_mnt_ns));
    let ns_root: u64 = load(ns, off!(mnt_ns_root));
    [
        root_vfsmnt.wrapping_sub(off!(mount_mnt)),
        root_dentry,
        ns_root,
    ]
}

/// Walks `dentry` in mount `vfsmnt` up to the root of the mount namespace, appending each
/// component leaf first (a length byte, then the name) and writing the segment to `seg`. Sets
/// in `*flags` (bits from `bits`): `truncated` if the walk stopped before the root (depth or byte
/// budget, or a failed read); `deleted` if the starting dentry is unlinked (the kernel's
/// `d_unlinked()`: unhashed and not a root); `pseudo` if the starting dentry is the root of a
/// file system but not of its mount (`alloc_file_pseudo()`: memfd and the like, which the
/// kernel names with `d_dname`), with that one name as the path; `detached` if the walk ended on
/// a mount that is not the root mount of the caller's namespace; `outside_root` if it never
/// passed the caller's root directory. Results go to map memory, not registers (see [`Tail`]).
///
/// The walk is one step per component (or mount crossed), at most [`PATH_DEPTH`] steps. Where
/// the kernel has `bpf_loop` (5.17 and later: `OFFSETS.bpf_loop`), the steps run as its
/// callback, which the verifier checks once; otherwise as an unrolled loop, which it checks once
/// per iteration, three walks per call: about 245,000 instructions verified for the entry
/// program instead of a few tens of thousands, which is minutes of start time in an emulated
/// guest. The branch not taken is dead code for the verifier (the value is in a frozen
/// read-only map), so a kernel without `bpf_loop` never sees that call.
#[inline(always)]
pub fn walk_path(
    t: &mut Tail,
    dentry: u64,
    vfsmnt: u64,
    seg: *mut Seg,
    flags: *mut u32,
    bits: PathBits,
) {
    let start = t.pos();
    if start > TAIL_SIZE as u32 {
        return;
    }
    let (o_mnt, o_mparent, o_pprev) =
        (off!(mount_mnt), off!(mount_parent), off!(dentry_hash_pprev));
    let leaf = dentry;
    let mount = vfsmnt.wrapping_sub(o_mnt);
    // Flags are set in map memory where they are decided, never carried in registers past the
    // loop: its many exits then leave the same state, and the rest of the program is verified
    // once, not once per combination of flags. `outside_root` is cleared when the walk passes
    // the caller's root.
    set_flags(flags, bits.truncated | bits.outside_root);
    // A failed first read leaves the walk undone: an empty path flagged truncated.
    let [mnt_parent, mountpoint, mnt_root] = read::<[u64; 3]>(mount, o_mparent).unwrap_or([0; 3]);
    if bits.deleted != 0 && leaf == mnt_root {
        // The leaf is itself the root of a mount (a bind-mounted file): the loop never reads it.
        if let Some([pprev, parent]) = read::<[u64; 2]>(leaf, o_pprev)
            && pprev == 0
            && parent != leaf
        {
            set_flags(flags, bits.deleted);
        }
    }
    if mnt_root != 0 {
        // SAFETY: t.walk points into this CPU's scratch value; walks do not nest.
        unsafe {
            core::ptr::write_volatile(
                t.walk,
                Walk {
                    dentry,
                    mount,
                    mnt_parent,
                    mountpoint,
                    mnt_root,
                    leaf,
                    limit: start + PATH_BUDGET,
                    bits,
                },
            )
        };
        t.flags = flags;
        if off!(bpf_loop) != 0 {
            let step: unsafe extern "C" fn(u32, *mut Tail) -> i64 = walk_step;
            // SAFETY: bpf_loop calls `walk_step` with the context given, a pointer to `t`,
            // which outlives the call; the callback is a function of this program, as the
            // verifier requires (the cast keeps its address a code reference).
            unsafe {
                bpf_loop(
                    PATH_DEPTH,
                    step as *mut core::ffi::c_void,
                    (t as *mut Tail).cast(),
                    0,
                )
            };
        } else {
            for _ in 0..PATH_DEPTH {
                if !walk_one(t) {
                    break;
                }
            }
        }
    }
    let end = t.pos();
    // SAFETY: seg points into this CPU's scratch value.
    unsafe {
        core::ptr::write_volatile(
            seg,
            Seg {
                off: start as u16,
                len: end.wrapping_sub(start) as u16,
            },
        );
    }
}

/// One step of [`walk_path`] as a `bpf_loop` callback: 0 to go on, 1 to stop.
#[inline(never)]
unsafe extern "C" fn walk_step(_index: u32, t: *mut Tail) -> i64 {
    // SAFETY: bpf_loop passes the context walk_path gave it, its live `Tail`.
    let t = unsafe { &mut *t };
    if walk_one(t) { 0 } else { 1 }
}

/// One step of [`walk_path`]: the next component or mount crossing; false when the walk is
/// over (at the root, on a failed read, or when the path budget is spent).
///
/// One read per component (`d_hash.pprev`, `d_parent`, `d_name`) and one per mount crossed
/// (`mnt_parent`, `mnt_mountpoint`, `mnt_root`): userspace checked that both are adjacent.
#[inline(always)]
fn walk_one(t: &mut Tail) -> bool {
    // SAFETY: t.walk points into this CPU's scratch value, written by walk_path.
    let w = unsafe { &mut *t.walk };
    let flags = t.flags;
    let roots = t.roots;
    let root = |i: usize| {
        // SAFETY: the roots are in this CPU's scratch value, alive while we run.
        unsafe { core::ptr::read_volatile(&(*roots)[i]) }
    };
    let (dentry, mount) = (w.dentry, w.mount);
    if dentry == root(1) && mount == root(0) {
        // The caller's root: the kernel's d_path stops here; this walk goes on to the
        // namespace root (paths are absolute in the namespace) and only notes it.
        clear_flags(flags, w.bits.outside_root);
    }
    if dentry == w.mnt_root {
        // Top of this mount: continue from where it is mounted, or stop at the namespace root.
        if w.mnt_parent == mount {
            if mount != root(2) {
                set_flags(flags, w.bits.detached);
            }
            clear_flags(flags, w.bits.truncated);
            return false;
        }
        let parent = w.mnt_parent;
        w.dentry = w.mountpoint;
        w.mount = parent;
        let Some([p, m, r]) = read::<[u64; 3]>(parent, off!(mount_parent)) else {
            return false;
        };
        (w.mnt_parent, w.mountpoint, w.mnt_root) = (p, m, r);
        return true;
    }
    let Some([pprev, parent, hash_len, name]) = read::<[u64; 4]>(dentry, off!(dentry_hash_pprev))
    else {
        return false;
    };
    let limit = w.limit;
    if parent == dentry {
        if dentry == w.leaf {
            // A dentry of no tree (alloc_file_pseudo): keep its one name for userspace to
            // render as the kernel's d_dname would.
            set_flags(flags, w.bits.pseudo);
            let _ = t.push(name, (hash_len >> 32) as u32, true, limit);
        }
        // Root of a file system that is not mounted here (pseudo file systems).
        clear_flags(flags, w.bits.truncated | w.bits.outside_root);
        return false;
    }
    if dentry == w.leaf && pprev == 0 {
        set_flags(flags, w.bits.deleted);
    }
    if !t.push(name, (hash_len >> 32) as u32, true, limit) {
        return false;
    }
    w.dentry = parent;
    true
}

/// Sets `bits` in flags that live in this CPU's scratch value.
#[inline(always)]
fn set_flags(flags: *mut u32, bits: u32) {
    // SAFETY: flags points into this CPU's scratch value.
    unsafe { core::ptr::write_volatile(flags, core::ptr::read_volatile(flags) | bits) }
}

/// Clears `bits` in flags that live in this CPU's scratch value.
#[inline(always)]
fn clear_flags(flags: *mut u32, bits: u32) {
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile(flags, core::ptr::read_volatile(flags) & !bits) }
}

/// The caller's fd array and its size, read once for both descriptors; `(0, 0)` if the task
/// has none. `task` is BTF-typed ([`current_task`](crate::kernel::current_task)).
#[inline(always)]
pub fn table(task: u64) -> (u64, u32) {
    let fdt: u64 = load(load(task, off!(task_files)), off!(files_fdt));
    (load(fdt, off!(fdt_fd)), load(fdt, off!(fdt_max_fds)))
}

/// The `struct file *` open at `fd` in the fd array `table` (from [`table`]), or, when there
/// is none, the [`fd_reason`] why (a small number: kernel pointers never are). One plain
/// register, so that no path leaves part of it undefined for the verifier.
#[inline(always)]
pub fn lookup(table: (u64, u32), fd: i32) -> u64 {
    let (array, max) = table;
    if fd < 0 {
        return fd_reason::OUT_OF_RANGE as u64;
    }
    if array == 0 {
        return fd_reason::READ_FAILED as u64;
    }
    if fd as u32 >= max {
        return fd_reason::OUT_OF_RANGE as u64;
    }
    match read::<u64>(array, (fd as u64) * 8) {
        Some(0) => fd_reason::NOT_OPEN as u64,
        Some(file) => file,
        None => fd_reason::READ_FAILED as u64,
    }
}

/// Whether a [`lookup`] result is a file (not a reason).
#[inline(always)]
pub fn is_file(found: u64) -> bool {
    found > 0xffff
}

/// The kind of a mode's file type.
#[inline(always)]
fn kind_of_mode(mode: u32) -> u32 {
    match mode & 0o170000 {
        0o100000 | 0o040000 => fd_kind::FILE,
        0o020000 => fd_kind::CHARDEV,
        0o010000 => fd_kind::PIPE,
        0o140000 => fd_kind::SOCKET,
        0 => fd_kind::ANON_INODE,
        _ => fd_kind::OTHER,
    }
}

/// The kind of an open file, from its inode's mode (for the out-type filter).
#[inline(always)]
pub fn kind_of(file: u64) -> Option<u32> {
    let inode = ptr(file, off!(file_inode))?;
    let mode = read::<u16>(inode, off!(inode_mode))? as u32;
    Some(kind_of_mode(mode))
}

/// The word of a window read at `start` that holds the field at `field` (userspace checked
/// that it is 8-byte aligned and inside the window).
#[inline(always)]
fn word<const N: usize>(w: &[u64; N], start: u64, field: u64) -> u64 {
    w.get((field.wrapping_sub(start) / 8) as usize)
        .copied()
        .unwrap_or(0)
}

/// Marks `r` unresolved because a kernel read failed, and says so in the log (`-v`; a dead
/// branch for the verifier without it, see `capture::count_lost`).
#[inline(always)]
fn read_failed(r: &mut FdRecord) {
    r.kind = fd_kind::UNKNOWN;
    r.reason = fd_reason::READ_FAILED;
    debug!(
        &(),
        "a kernel read failed while resolving a descriptor: reported unresolved"
    );
}

/// Fills `r` for a descriptor already looked up as `found` (a file, or why there is none).
#[inline(always)]
pub fn describe(t: &mut Tail, found: u64, r: &mut FdRecord) {
    if !is_file(found) {
        r.kind = fd_kind::UNKNOWN;
        r.reason = found as u32;
        return;
    }
    let file = found;
    // f_inode and f_path in one read, then i_mode, i_sb and i_ino in one.
    let fw = off!(file_window);
    let iw = off!(inode_mode);
    let w = t.window;
    // SAFETY: `w` is this CPU's scratch window, WINDOW_WORDS ≥ FILE_WINDOW / 8 words long.
    if !unsafe { copy(w.cast(), FILE_WINDOW, file.wrapping_add(fw)) } {
        read_failed(r);
        return;
    }
    // SAFETY: this CPU's scratch window, just filled.
    let f = unsafe { &*w };
    let inode = word(f, fw, off!(file_inode));
    // struct path: mnt, then dentry. Taken now, as the inode's read reuses the window.
    let mnt = word(f, fw, off!(file_path_mnt));
    let dentry = word(f, fw, off!(file_path_dentry));
    // SAFETY: as above, WINDOW_WORDS ≥ INODE_WINDOW / 8 words.
    if inode == 0 || !unsafe { copy(w.cast(), INODE_WINDOW, inode.wrapping_add(iw)) } {
        read_failed(r);
        return;
    }
    // SAFETY: this CPU's scratch window, just filled.
    let i = unsafe { &*w };
    let mode = (i[0] & 0xffff) as u32;
    let kind = kind_of_mode(mode);
    r.kind = kind;
    r.mode = mode;
    r.ino = word(i, iw, off!(inode_ino));
    let sb = word(i, iw, off!(inode_sb));
    r.dev = if sb == 0 {
        0
    } else {
        read::<u32>(sb, off!(sb_dev)).unwrap_or(0)
    };
    if kind == fd_kind::SOCKET {
        describe_socket(t, file, r);
        return;
    }
    if kind == fd_kind::PIPE {
        return;
    }
    if mnt == 0 || dentry == 0 {
        read_failed(r);
        return;
    }
    if kind == fd_kind::ANON_INODE {
        // Its dentry's name, e.g. "[eventfd]".
        if let Some(name) = ptr(dentry, off!(dentry_name)) {
            t.push_str(name, &mut r.path);
        }
        return;
    }
    walk_path(t, dentry, mnt, &mut r.path, &mut r.flags, PathBits::FD);
    pseudo_magic(r, sb);
}

/// Records the file system's magic of a [`fd_flags::PSEUDO`] file: it decides how the kernel
/// names it. One read, only for such files.
#[inline(always)]
fn pseudo_magic(r: &mut FdRecord, sb: u64) {
    // SAFETY: r is this CPU's scratch record; the walk wrote its flags through a raw pointer.
    let flags = unsafe { core::ptr::read_volatile(&r.flags) };
    if flags & fd_flags::PSEUDO != 0 && sb != 0 {
        r.fs_magic = read::<u32>(sb, off!(sb_magic)).unwrap_or(0);
    }
}

/// Appends a UNIX socket's bound `sun_path` (from its `unix_address`) into `seg`, if it has one.
#[inline(always)]
fn unix_path(t: &mut Tail, sk: u64, seg: *mut Seg) {
    let Some(addr) = ptr(sk, off!(unix_addr)) else {
        return;
    };
    let Some(len) = read::<u32>(addr, off!(unix_address_len)) else {
        return;
    };
    // `len` counts sun_family (2 bytes) too; unsigned math keeps the verifier's bounds.
    let n = len.wrapping_sub(2);
    if n == 0 || n > SUN_PATH_MAX {
        return;
    }
    let start = t.pos();
    if t.push(
        addr + off!(unix_address_name) + 2,
        n,
        false,
        TAIL_SIZE as u32,
    ) {
        // SAFETY: seg points into this CPU's scratch value.
        unsafe {
            core::ptr::write_volatile(
                seg,
                Seg {
                    off: start as u16,
                    len: n as u16,
                },
            )
        };
    }
}

#[inline(always)]
fn describe_socket(t: &mut Tail, file: u64, r: &mut FdRecord) {
    let Some(sk) = ptr(file, off!(file_private_data)).and_then(|sock| ptr(sock, off!(socket_sk)))
    else {
        return;
    };
    r.family = read::<u16>(sk, off!(sk_family)).unwrap_or(0);
    r.protocol = read::<u16>(sk, off!(sk_protocol)).unwrap_or(0);
    r.sock_type = read::<u16>(sk, off!(sk_type)).unwrap_or(0);
    match r.family {
        AF_INET | AF_INET6 => {
            r.local_port = read::<u16>(sk, off!(sk_num)).unwrap_or(0);
            r.remote_port = u16::from_be(read::<u16>(sk, off!(sk_dport)).unwrap_or(0));
            if r.family == AF_INET {
                let l = read::<[u8; 4]>(sk, off!(sk_rcv_saddr)).unwrap_or([0; 4]);
                let d = read::<[u8; 4]>(sk, off!(sk_daddr)).unwrap_or([0; 4]);
                r.local_addr[..4].copy_from_slice(&l);
                r.remote_addr[..4].copy_from_slice(&d);
            } else {
                r.local_addr = read::<[u8; 16]>(sk, off!(sk_v6_rcv_saddr)).unwrap_or([0; 16]);
                r.remote_addr = read::<[u8; 16]>(sk, off!(sk_v6_daddr)).unwrap_or([0; 16]);
            }
        }
        AF_UNIX => {
            unix_path(t, sk, &mut r.local_path);
            if let Some(peer) = ptr(sk, off!(unix_peer)) {
                unix_path(t, peer, &mut r.remote_path);
            }
        }
        _ => {}
    }
}
