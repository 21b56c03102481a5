//! The raw sendfile(2) entry points, errno names and the few other syscalls the workload needs.
//!
//! Every sendfile call goes through `libc::syscall` with an explicit syscall number, so the exact
//! arguments the kernel sees (descriptors, offset pointer, full-width count) are known and can be
//! compared with a tracer's events.

use std::ffi::c_long;
use std::io;
use std::os::fd::RawFd;

/// Most bytes one read/write/sendfile call moves: `MAX_RW_COUNT` = `INT_MAX & PAGE_MASK`.
pub const MAX_RW_COUNT: u64 = 0x7fff_f000;

/// Width of the value an ABI's offset pointer points to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetWidth {
    /// `off_t` of the i386 `sendfile` syscall (187): 32 bits.
    #[cfg_attr(target_pointer_width = "64", allow(dead_code))]
    Bits32,
    /// `off_t` of 64-bit `sendfile` / `loff_t` of `sendfile64`: 64 bits.
    Bits64,
}

/// One way into the kernel's sendfile: syscall number, offset width, case-name suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Abi {
    /// Syscall number passed to `syscall(2)`.
    pub nr: c_long,
    /// Width of the value the offset pointer points to.
    pub offset: OffsetWidth,
    /// Suffix appended to case names ("" on 64-bit, "_187" / "_239" on 32-bit).
    pub suffix: &'static str,
    /// Whether this is a 32-bit syscall (compat on a 64-bit kernel).
    pub compat: bool,
}

/// The sendfile entry points of this build, in the order each case runs them.
#[cfg(target_pointer_width = "64")]
pub const ABIS: &[Abi] = &[Abi {
    nr: libc::SYS_sendfile,
    offset: OffsetWidth::Bits64,
    suffix: "",
    compat: false,
}];

/// The sendfile entry points of this build, in the order each case runs them.
#[cfg(target_pointer_width = "32")]
pub const ABIS: &[Abi] = &[
    Abi {
        nr: libc::SYS_sendfile,
        offset: OffsetWidth::Bits32,
        suffix: "_187",
        compat: true,
    },
    Abi {
        nr: libc::SYS_sendfile64,
        offset: OffsetWidth::Bits64,
        suffix: "_239",
        compat: true,
    },
];

/// The entry point of the loop (bench) mode: the one with a 64-bit offset.
pub const LOOP_ABI: Abi = ABIS[ABIS.len() - 1];

/// What to pass as sendfile's offset pointer.
#[derive(Clone, Copy, Debug)]
pub enum OffsetArg {
    /// NULL: the kernel reads from, and advances, the input file's position.
    Null,
    /// A valid pointer to an offset variable (of the ABI's width) holding this value.
    Value(i64),
    /// This address, which must not be mapped (the EFAULT case).
    Unmapped(usize),
}

/// Arguments and result of one sendfile call, as the workload made and saw it.
#[derive(Clone, Debug)]
pub struct SendfileCall {
    /// The entry point used.
    pub abi: Abi,
    /// Output descriptor.
    pub out_fd: RawFd,
    /// Input descriptor.
    pub in_fd: RawFd,
    /// Offset pointer as an address (0 for NULL).
    pub offset_ptr: u64,
    /// Pointed-to value before the call (None for NULL or an unmapped pointer).
    pub offset_before: Option<i64>,
    /// Pointed-to value after the call (None for NULL or an unmapped pointer).
    pub offset_after: Option<i64>,
    /// Count argument, all bits the kernel received.
    pub count: u64,
    /// Raw kernel result: bytes moved (>= 0) or -errno.
    pub ret: i64,
    /// Thread id of the caller.
    pub tid: i32,
}

impl SendfileCall {
    /// The errno of a failed call, None on success.
    pub fn errno(&self) -> Option<i32> {
        (self.ret < 0).then(|| i32::try_from(-self.ret).unwrap_or(i32::MAX))
    }
}

/// Makes one sendfile call through `abi` and records what happened.
///
/// Panics if `count` does not fit in `size_t` or a `Value` offset does not fit the ABI's `off_t`:
/// the case table never asks for that.
pub fn sendfile(
    abi: Abi,
    out_fd: RawFd,
    in_fd: RawFd,
    offset: OffsetArg,
    count: u64,
) -> SendfileCall {
    let count_arg = usize::try_from(count).expect("count fits in size_t");
    let tid = gettid();
    let mut call = SendfileCall {
        abi,
        out_fd,
        in_fd,
        offset_ptr: 0,
        offset_before: None,
        offset_after: None,
        count,
        ret: 0,
        tid,
    };
    match offset {
        OffsetArg::Null => call.ret = raw_sendfile(abi.nr, out_fd, in_fd, 0, count_arg),
        OffsetArg::Unmapped(addr) => {
            call.offset_ptr = addr as u64;
            call.ret = raw_sendfile(abi.nr, out_fd, in_fd, addr, count_arg);
        }
        OffsetArg::Value(value) => {
            call.offset_before = Some(value);
            match abi.offset {
                OffsetWidth::Bits32 => {
                    let mut slot = i32::try_from(value).expect("offset fits in a 32-bit off_t");
                    let ptr: *mut i32 = &mut slot;
                    call.offset_ptr = ptr as usize as u64;
                    call.ret = raw_sendfile(abi.nr, out_fd, in_fd, ptr as usize, count_arg);
                    // SAFETY: `ptr` points to `slot`, alive and aligned; the kernel may have written it.
                    call.offset_after = Some(i64::from(unsafe { ptr.read_volatile() }));
                }
                OffsetWidth::Bits64 => {
                    let mut slot: i64 = value;
                    let ptr: *mut i64 = &mut slot;
                    call.offset_ptr = ptr as usize as u64;
                    call.ret = raw_sendfile(abi.nr, out_fd, in_fd, ptr as usize, count_arg);
                    // SAFETY: as above.
                    call.offset_after = Some(unsafe { ptr.read_volatile() });
                }
            }
        }
    }
    call
}

/// `syscall(nr, out_fd, in_fd, offset_ptr, count)`, returning bytes or -errno.
pub fn raw_sendfile(
    nr: c_long,
    out_fd: RawFd,
    in_fd: RawFd,
    offset_ptr: usize,
    count: usize,
) -> i64 {
    // SAFETY: sendfile only reads/writes the offset variable behind `offset_ptr` (a live local of
    // the caller, NULL, or a deliberately unmapped address the kernel rejects with EFAULT).
    let r = unsafe {
        libc::syscall(
            nr,
            out_fd as c_long,
            in_fd as c_long,
            offset_ptr as c_long,
            count as c_long,
        )
    };
    if r == -1 {
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        -i64::from(errno)
    } else {
        long_to_i64(r)
    }
}

/// Widens a `c_long` (i64 on 64-bit, i32 on 32-bit targets) to i64.
#[allow(clippy::useless_conversion)] // A no-op on 64-bit targets only.
pub fn long_to_i64(v: c_long) -> i64 {
    i64::from(v)
}

/// The calling thread's id (`gettid(2)`).
pub fn gettid() -> i32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// The process id (`getpid(2)`).
pub fn getpid() -> i32 {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

/// Sets the calling thread's comm (`prctl(PR_SET_NAME)`) to `name`; the kernel keeps 15 bytes.
pub fn set_comm(name: &[u8]) -> io::Result<()> {
    let mut buf = [0u8; 16];
    let n = name.len().min(15);
    buf[..n].copy_from_slice(&name[..n]);
    // SAFETY: `buf` is a NUL-terminated 16-byte buffer, as PR_SET_NAME expects.
    let r = unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr() as libc::c_ulong, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Drops to `uid` and gid `uid`, without supplementary groups (setgroups, setgid, setuid).
pub fn drop_to(uid: u32) -> io::Result<()> {
    // SAFETY: plain credential syscalls; an empty group list is valid.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setgid(uid as libc::gid_t) != 0
            || libc::setuid(uid as libc::uid_t) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether the kernel is 64-bit, i.e. a 32-bit build's syscalls go through the compat layer.
#[cfg(target_pointer_width = "32")]
pub fn kernel_is_64bit() -> bool {
    // SAFETY: an all-zero utsname is valid; uname only fills it.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return false;
    }
    // SAFETY: the kernel NUL-terminates `machine`.
    let machine = unsafe { std::ffi::CStr::from_ptr(uts.machine.as_ptr()) };
    // A 32-bit task on a 64-bit kernel sees the kernel's machine ("x86_64", "aarch64"), or with
    // the PER_LINUX32 personality (setarch) the compat one: "i686" is then ambiguous.
    matches!(machine.to_bytes(), b"x86_64" | b"aarch64" | b"armv8l")
}

/// Returns an address no access can succeed at: a page reserved with `PROT_NONE` and kept (one
/// page per call). A page mapped then unmapped is not enough: a later allocation of the same
/// process (reading `/proc/self` before the call) can be placed there.
pub fn unmapped_address() -> io::Result<usize> {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    // SAFETY: a fresh anonymous private mapping that nothing refers to and nothing may access.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            page,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(addr as usize)
}

/// `pipe2(O_CLOEXEC)`: (read end, write end).
pub fn pipe() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    })
}

/// A fresh eventfd (`EFD_CLOEXEC`).
pub fn eventfd() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: eventfd takes no pointers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created and is owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Sets or clears O_NONBLOCK on `fd`.
pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on a descriptor the caller owns.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = if on {
            flags | libc::O_NONBLOCK
        } else {
            flags & !libc::O_NONBLOCK
        };
        if libc::fcntl(fd, libc::F_SETFL, flags) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Symbolic name of an errno value ("EBADF"), or `E<number>` for one not in the table.
pub fn errno_name(errno: i32) -> String {
    macro_rules! names {
        ($($name:ident),* $(,)?) => {
            $(if errno == libc::$name { return stringify!($name).to_owned(); })*
        };
    }
    // EWOULDBLOCK, EDEADLOCK and ENOTSUP alias EAGAIN, EDEADLK and EOPNOTSUPP: the first wins.
    names!(
        EPERM,
        ENOENT,
        ESRCH,
        EINTR,
        EIO,
        ENXIO,
        E2BIG,
        ENOEXEC,
        EBADF,
        ECHILD,
        EAGAIN,
        ENOMEM,
        EACCES,
        EFAULT,
        ENOTBLK,
        EBUSY,
        EEXIST,
        EXDEV,
        ENODEV,
        ENOTDIR,
        EISDIR,
        EINVAL,
        ENFILE,
        EMFILE,
        ENOTTY,
        ETXTBSY,
        EFBIG,
        ENOSPC,
        ESPIPE,
        EROFS,
        EMLINK,
        EPIPE,
        EDOM,
        ERANGE,
        EDEADLK,
        ENAMETOOLONG,
        ENOLCK,
        ENOSYS,
        ENOTEMPTY,
        ELOOP,
        EOVERFLOW,
        EBADFD,
        EILSEQ,
        ENOTSOCK,
        EDESTADDRREQ,
        EMSGSIZE,
        EPROTOTYPE,
        ENOPROTOOPT,
        EPROTONOSUPPORT,
        EOPNOTSUPP,
        EAFNOSUPPORT,
        EADDRINUSE,
        EADDRNOTAVAIL,
        ENETDOWN,
        ENETUNREACH,
        ECONNABORTED,
        ECONNRESET,
        ENOBUFS,
        EISCONN,
        ENOTCONN,
        ESHUTDOWN,
        ETIMEDOUT,
        ECONNREFUSED,
        EHOSTUNREACH,
        EALREADY,
        EINPROGRESS,
        ESTALE,
        EDQUOT,
        ECANCELED,
    );
    format!("E{errno}")
}
