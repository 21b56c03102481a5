//! The case table: each case sets up descriptors, makes exactly one sendfile call and says what
//! the sendfile(2) man page (and, where it is silent, the kernel source) predicts.
//!
//! Kernel references are to fs/read_write.c (`do_sendfile`, `sys_sendfile`, `sys_sendfile64`,
//! `compat_sys_sendfile`) and fs/splice.c (`do_splice_direct`, `splice_direct_to_actor`).

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::facts::{self, Paths, ProcessFacts};
use crate::record::{self, CallRecord, Captured};
use crate::sys::{self, Abi, OffsetArg, SendfileCall};

/// Length of the input file most cases read.
const INPUT_LEN: u64 = 4096;

/// Apparent size of the sparse file of `large_count`: 3 GiB.
const SPARSE_LEN: u64 = 3 << 30;

/// `count` of `large_count`: above 0x7ffff000 and, where size_t allows, above 32 bits.
#[cfg(target_pointer_width = "64")]
const LARGE_COUNT: u64 = 0x1_0000_0005;
/// `count` of `large_count`: above 0x7ffff000 (size_t is 32 bits here).
#[cfg(target_pointer_width = "32")]
const LARGE_COUNT: u64 = 0xffff_ffff;

/// How long a socket read may wait for data the case just sent.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What a case's call must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Succeed and move exactly this many bytes.
    Bytes(u64),
    /// Fail with this errno.
    Errno(i32),
}

/// One executed case: the call, its expectation and any failed side checks.
pub struct Run {
    /// The sendfile call made.
    pub call: SendfileCall,
    /// The call with what the workload knew right before it.
    pub captured: Captured,
    /// What it had to do.
    pub expect: Expect,
    /// Side checks that failed (data received, file positions, ...), one message each.
    pub problems: Vec<String>,
}

impl Run {
    fn new(captured: Captured, expect: Expect) -> Self {
        Run {
            call: captured.call.clone(),
            captured,
            expect,
            problems: Vec::new(),
        }
    }

    /// Whether the call returned what was expected (side checks are run only then).
    fn as_expected(&self) -> bool {
        match self.expect {
            Expect::Bytes(n) => u64::try_from(self.call.ret) == Ok(n),
            Expect::Errno(e) => self.call.ret == -i64::from(e),
        }
    }

    /// Records a failed side check unless `ok`.
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.problems.push(what());
        }
    }
}

/// A case: its base name, its body, and the syscall numbers it is limited to (None: all).
pub struct Case {
    /// Base name (without the `_187` / `_239` suffix).
    pub name: &'static str,
    /// Makes the call; Ok(None) means skipped (a note was printed on stderr).
    pub run: fn(&Ctx, &str, Abi) -> anyhow::Result<Option<Run>>,
    /// Syscall number the case is limited to, if any.
    pub only_nr: Option<i64>,
}

/// Every case, in run order.
pub const CASES: &[Case] = &[
    case("file_to_file_null_offset", file_to_file_null_offset),
    case("file_to_file_offset", file_to_file_offset),
    case("file_to_file_thread", file_to_file_thread),
    case("file_to_tcp", file_to_tcp),
    case("file_to_tcp6", file_to_tcp6),
    case("file_to_tcp6_mapped", file_to_tcp6_mapped),
    case("file_to_unix", file_to_unix),
    case("file_to_pipe", file_to_pipe),
    case("file_to_chardev", file_to_chardev),
    case("deleted_file", deleted_file),
    case("hostile_path", hostile_path),
    case("deep_path", deep_path),
    case("memfd_input", memfd_input),
    case("detached_mount", detached_mount),
    case("outside_root", outside_root),
    case("large_count", large_count),
    case("count_zero", count_zero),
    case("ebadf", ebadf),
    case("ebadf_negative_out", ebadf_negative_out),
    case("einval_append", einval_append),
    case("einval_eventfd_out", einval_eventfd_out),
    case("einval_pipe_input", einval_pipe_input),
    case("espipe", espipe),
    case("efault", efault),
    case("eagain", eagain),
    Case {
        name: "eoverflow",
        run: eoverflow,
        only_nr: Some(187),
    },
];

const fn case(name: &'static str, run: fn(&Ctx, &str, Abi) -> anyhow::Result<Option<Run>>) -> Case {
    Case {
        name,
        run,
        only_nr: None,
    }
}

/// One runnable variant: a case through one ABI.
#[derive(Clone, Copy)]
pub struct Variant {
    /// The case.
    pub case: &'static Case,
    /// The entry point.
    pub abi: Abi,
}

impl Variant {
    /// Full name: base name plus the ABI suffix.
    pub fn name(&self) -> String {
        format!("{}{}", self.case.name, self.abi.suffix)
    }
}

/// Every variant this build runs, in order (on 32-bit each case via 187 then 239).
pub fn variants() -> Vec<Variant> {
    CASES
        .iter()
        .flat_map(|case| {
            sys::ABIS
                .iter()
                .filter(|abi| case.only_nr.is_none_or(|nr| nr == sys::long_to_i64(abi.nr)))
                .map(move |&abi| Variant { case, abi })
        })
        .collect()
}

/// The variants selected by `names` (full or base names; empty selects all), in table order.
pub fn select(names: &[String]) -> Result<Vec<Variant>, String> {
    let all = variants();
    if names.is_empty() {
        return Ok(all);
    }
    for name in names {
        if !all.iter().any(|v| v.case.name == name || v.name() == *name) {
            let known: Vec<String> = all.iter().map(Variant::name).collect();
            return Err(format!(
                "unknown case '{name}' (known: {})",
                known.join(", ")
            ));
        }
    }
    Ok(all
        .into_iter()
        .filter(|v| names.iter().any(|n| v.case.name == n || v.name() == *n))
        .collect())
}

/// Shared state: the work directory, the input file and the paths of the files opened.
pub struct Ctx {
    dir: PathBuf,
    input: PathBuf,
    content: Vec<u8>,
    paths: Paths,
}

impl Ctx {
    /// Creates the input file `dir/file_name` with known content (`dir` is made canonical, so
    /// the paths the workload reports are the ones the kernel resolves).
    pub fn new(dir: &Path, file_name: &OsStr) -> anyhow::Result<Self> {
        let dir = fs::canonicalize(dir).with_context(|| format!("resolving {}", dir.display()))?;
        let input = dir.join(file_name);
        let content: Vec<u8> = (0..INPUT_LEN).map(|i| (i * 31 % 251) as u8).collect();
        fs::write(&input, &content).with_context(|| format!("writing {}", input.display()))?;
        Ok(Ctx {
            dir,
            input,
            content,
            paths: Paths::default(),
        })
    }

    /// Opens `path` with `opts` and remembers the path it was opened by.
    fn open(&self, path: &Path, opts: &OpenOptions) -> anyhow::Result<File> {
        let file = opts
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        self.paths.register(file.as_raw_fd(), path)?;
        Ok(file)
    }

    fn open_input(&self) -> anyhow::Result<File> {
        self.open(&self.input, OpenOptions::new().read(true))
    }

    /// `/dev/null`, open for writing.
    fn open_null(&self) -> anyhow::Result<File> {
        self.open(Path::new("/dev/null"), OpenOptions::new().write(true))
    }

    /// Creates (truncating) the output file of case `name`, open for reading and writing.
    fn create_out(&self, name: &str) -> anyhow::Result<File> {
        let path = self.dir.join(format!("out-{name}.bin"));
        self.open(
            &path,
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true),
        )
    }

    /// Describes both descriptors and the process, then makes the call (see [`sys::sendfile`]).
    fn sendfile(
        &self,
        abi: Abi,
        out_fd: RawFd,
        in_fd: RawFd,
        offset: OffsetArg,
        count: u64,
    ) -> anyhow::Result<Captured> {
        self.sendfile_after(abi, out_fd, in_fd, offset, count, || Ok(()))?
            .map_err(Into::into)
    }

    /// [`Ctx::sendfile`], running `before` between reading the facts and the call; its error
    /// (the call then not made) in the inner result.
    fn sendfile_after(
        &self,
        abi: Abi,
        out_fd: RawFd,
        in_fd: RawFd,
        offset: OffsetArg,
        count: u64,
        before: impl FnOnce() -> io::Result<()>,
    ) -> anyhow::Result<io::Result<Captured>> {
        let tid = sys::gettid();
        let process = ProcessFacts::now().context("reading /proc/self")?;
        let thread_start_time =
            facts::thread_start_time(tid).context("reading the thread's start time")?;
        let in_info = facts::describe(in_fd, &self.paths);
        let out_info = facts::describe(out_fd, &self.paths);
        if let Err(e) = before() {
            return Ok(Err(e));
        }
        let call = sys::sendfile(abi, out_fd, in_fd, offset, count);
        Ok(Ok(Captured {
            call,
            in_fd: in_info,
            out_fd: out_info,
            thread_start_time,
            process,
        }))
    }

    /// The input bytes `[start, start + len)`.
    fn slice(&self, start: u64, len: u64) -> &[u8] {
        &self.content[start as usize..(start + len) as usize]
    }
}

/// Runs `variants` `repeat` times, printing one JSON line per call; false if any case failed.
pub fn run_all(ctx: &Ctx, variants: &[Variant], repeat: u32) -> anyhow::Result<bool> {
    let mut ok = true;
    for _ in 0..repeat {
        for v in variants {
            let name = v.name();
            let run = match (v.case.run)(ctx, &name, v.abi) {
                Ok(Some(run)) => run,
                Ok(None) => continue,
                Err(e) => {
                    eprintln!("sendfile-workload: case {name}: setup failed: {e:#}");
                    ok = false;
                    continue;
                }
            };
            let expect_errno = match run.expect {
                Expect::Errno(e) => Some(e),
                Expect::Bytes(_) => None,
            };
            record::emit(&CallRecord::new(&name, &run.captured, expect_errno))?;
            if !run.as_expected() {
                let got = match run.call.errno() {
                    Some(e) => sys::errno_name(e),
                    None => format!("{} bytes", run.call.ret),
                };
                let want = match run.expect {
                    Expect::Errno(e) => sys::errno_name(e),
                    Expect::Bytes(n) => format!("{n} bytes"),
                };
                eprintln!("sendfile-workload: case {name}: expected {want}, kernel returned {got}");
                ok = false;
            }
            for problem in &run.problems {
                eprintln!("sendfile-workload: case {name}: {problem}");
                ok = false;
            }
        }
    }
    Ok(ok)
}

/// Current file position of `file`.
fn position(file: &File) -> io::Result<u64> {
    let mut f = file;
    f.stream_position()
}

/// Contents of `file`, read with pread.
fn contents(file: &File) -> io::Result<Vec<u8>> {
    let len = file.metadata()?.len() as usize;
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

/// Reads exactly `len` bytes from a socket the case just wrote to.
fn receive(mut stream: impl Read, len: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; len as usize];
    stream.read_exact(&mut buf)?;
    Ok(buf)
}

/// Checks of a successful file → file call: output content, output and input positions.
fn check_file_copy(run: &mut Run, ctx: &Ctx, out: &File, start: u64, len: u64) -> io::Result<()> {
    let data = contents(out)?;
    run.check(data == ctx.slice(start, len), || {
        format!(
            "output file holds {} bytes, not input[{start}..{}]",
            data.len(),
            start + len
        )
    });
    let out_pos = position(out)?;
    run.check(out_pos == len, || {
        format!("output file position is {out_pos}, expected {len}")
    });
    Ok(())
}

/// Checks that the offset variable ended at `want`.
fn check_offset_after(run: &mut Run, want: i64) {
    let got = run.call.offset_after;
    run.check(got == Some(want), || {
        format!("offset after the call is {got:?}, expected {want}")
    });
}

/// Checks that `input`'s file position is `want`.
fn check_input_position(run: &mut Run, input: &File, want: u64) -> io::Result<()> {
    let pos = position(input)?;
    run.check(pos == want, || {
        format!("input file position is {pos}, expected {want}")
    });
    Ok(())
}

/// Regular file → regular file, offset NULL: the input position advances by the bytes read.
fn file_to_file_null_offset(ctx: &Ctx, name: &str, abi: Abi) -> anyhow::Result<Option<Run>> {
    let input = ctx.open_input()?;
    let out = ctx.create_out(name)?;
    let call = ctx.sendfile(
        abi,
        out.as_raw_fd(),
        input.as_raw_fd(),
        OffsetArg::Null,
        INPUT_LEN,
    )?;
    let mut run = Run::new(call, Expect::Bytes(INPUT_LEN));
    if run.as_expected() {
        check_file_copy(&mut run, ctx, &out, 0, INPUT_LEN)?;
        check_input_position(&mut run, &input, INPUT_LEN)?;
    }
    Ok(Some(run))
}

/// Regular file → regular file from offset 7: the offset variable advances, the input position
/// does not move.
fn file_to_file_offset(ctx: &Ctx, name: &str, abi: Abi) -> anyhow::Result<Option<Run>> {
    let input = ctx.open_input()?;
    let out = ctx.create_out(name)?;
    let call = ctx.sendfile(
        abi,
        out.as_raw_fd(),
        input.as_raw_fd(),
        OffsetArg::Value(7),
        100,
    )?;
    let mut run = Run::new(call, Expect::Bytes(100));
    if run.as_expected() {
        check_file_copy(&mut run, ctx, &out, 7, 100)?;
        check_offset_after(&mut run, 107);
        check_input_position(&mut run, &input, 0)?;
    }
    Ok(Some(run))
}

/// [`file_to_file_offset`] from a second thread started 50 ms (more than two clock ticks) after
/// the case began: its thread id and start time are not the process's.
fn file_to_file_thread(ctx: &Ctx, name: &str, abi: Abi) -> anyhow::Result<Option<Run>> {
    std::thread::sleep(Duration::from_millis(50));
    std::thread::scope(|s| {
        s.spawn(|| file_to_file_offset(ctx, name, abi))
            .join()
            .map_err(|_| anyhow::anyhow!("the case thread panicked"))?
    })
}

/// A connected TCP pair on `ip`: (client, accepted server side).
fn tcp_pair(ip: std::net::IpAddr) -> io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0))?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    server.set_read_timeout(Some(READ_TIMEOUT))?;
    Ok((client, server))
}

/// Sends `[start, start + len)` of the input over `out`, then checks `peer` received it.
fn file_to_stream(
    ctx: &Ctx,
    abi: Abi,
    out: RawFd,
    peer: impl Read,
    offset: Option<u64>,
    len: u64,
) -> anyhow::Result<Run> {
    let input = ctx.open_input()?;
    let arg = offset.map_or(OffsetArg::Null, |o| OffsetArg::Value(o as i64));
    let call = ctx.sendfile(abi, out, input.as_raw_fd(), arg, len)?;
    let mut run = Run::new(call, Expect::Bytes(len));
    if run.as_expected() {
        let start = offset.unwrap_or(0);
        let data = receive(peer, len).context("reading what sendfile sent")?;
        run.check(data == ctx.slice(start, len), || {
            format!(
                "peer received other bytes than input[{start}..{}]",
                start + len
            )
        });
        match offset {
            Some(o) => {
                check_offset_after(&mut run, (o + len) as i64);
                check_input_position(&mut run, &input, 0)?;
            }
            None => check_input_position(&mut run, &input, len)?,
        }
    }
    Ok(run)
}

/// File → TCP socket on 127.0.0.1, offset NULL; the accepting side reads the data back.
fn file_to_tcp(ctx: &Ctx, _name: &str, abi: Abi) -> anyhow::Result<Option<Run>> {
    let (client, server) = tcp_pair(Ipv4Addr::LOCALHOST.into()).context("TCP loopback pair")?;
    file_to_stream(ctx, abi, client.as_raw_fd(), server, None, INPUT_LEN).map(Some)
}

/// File → TCP socket on ::1 from offset 100; skipped (with a note) without IPv6 loopback.
fn file_to_tcp6(ctx: &Ctx, name: &str, abi: Abi) -> anyhow::Result<Option<Run>> {
    let (client, server) = match tcp_pair(Ipv6Addr::LOCALHOST.into()) {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("sendfile-workload: case {name}: skipped, no IPv6 loopback: {e}");
            return Ok(None);
        }
    };
    file_to_stream(ctx, abi, client.as_raw_fd(), server, Some(100), 1000).map(Some)
}

/// File → the accepted side of an IPv6 listener bound to `::ffff:127.0.0.1`, connected from
/// IPv4: an AF_INET6 socket whose both ends are IPv4-mapped addresses. Skipped (with a note)
/// where IPv6 sockets cannot take IPv4 (bindv6only).
fn file_to_tcp6_mapped(ctx: &Ctx, name: &str, abi: Abi) -> anyhow::Result<Option<Run>> {
    let mapped = Ipv4Addr::LOCALHOST.to_ipv6_mapped();
    let pair = TcpListener::bind(SocketAddr::new(mapped.into(), 0)).and_then(|l| {
        let client = TcpStream::connect((Ipv4Addr::LOCALHOST, l.local_addr()?.port()))?;
        let (server, _) = l.accept()?;
        client.set_read_timeout(Some(READ_TIMEOUT))?;
        Ok((server, client))
    });
    let (server, client) = match pair {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("sendfile-workload: case {name}: skipped, no IPv4-mapped IPv6: {e}");
            return Ok(None);
        }
    };
    file_to_stream(ctx, abi, server.as_raw_fd(), client, Some(0), 500).map(Some)
}

/// File → UNIX stream socket (named, in the work directory) from offset 7.
fn file_to_unix(ctx: &Ctx, _name: &str, abi: Abi) -> anyhow::Result<Option<Run>> {
    let path = ctx.dir.join(format!("unix-{}.sock", sys::getpid()));
    let _ = fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    let client = UnixStream::connect(&path)?;
    let (server, _) = listener.accept()?;
    server.set_read_timeout(Some(READ_TIMEOUT))?;
    let run = file_to_stream(ctx, abi, client.as_raw_fd(), server, Some(7), 1000);
    let _ = fs::remove_file(&path);
    run.map(Some)
}

/// File → pipe from offset 1024 asking for 8192 bytes: the input ends first, so exactly the
/// 3072 remaining bytes move (a short transfer, fitting the 64 KiB pipe).
fn file_to_pipe(ctx: &Ctx, _name: &str, abi: Abi) -> anyhow::Result<Option<Run>> {
    let input = ctx.open_input()?;
    let (rd, wr) = sys::pipe()?;
    let call = ctx.sendfile(
        abi,
        wr.as_raw_fd(),
        input.as_raw_fd(),
        OffsetArg::Value(1024),
        8192,
    )?;
    let moved = INPUT_LEN - 1024;
    let mut run = Run::new(call, Expect::Bytes(moved));
    if run.as_expected() {
        drop(wr);
        let mut data = Vec::new();
        File::from(rd).read_to_end(&mut data)?;
        run.check(data == ctx.slice(1024, moved), || {
            format!(
                "pipe holds {} bytes, not input[1024..{INPUT_LEN}]",
                data.len()
            )
        });
        check_offset_after(&mut run, INPUT_LEN as i64);
        check_input_position(&mut run, &input, 0)?;
    }
    Ok(Some(run))
}

/// File → /dev/null (a character device) from offset 0: all 4096 bytes "move".
fn file_to_chardev(ctx: &Ctx, _name: &str, abi: Abi) -> anyhow::Result<Option<Run>> {
    let input = ctx.open_input()?;
    let null = ctx.open_null()?;
    let call = ctx.sendfile(
        abi,
        null.as_raw_fd(),
        input.as_raw_fd(),
        OffsetArg::Value(0),
        INPUT_LEN,
    )?;
    let mut run = Run::new(call, Expect::Bytes(INPUT_LEN));
    if run.as_expected() {
        check_offset_after(&mut run, INPUT_LEN as i64);
        check_input_position(&mut run, &input, 0)?;
    }
    Ok(Some(run))
}

/// Copies `[0, len)` of a file open on `input` (holding the case input) to a fresh output.
fn copy_prefix(ctx: &Ctx, name: &str, abi: Abi, input: &File, len: u64) -> anyhow::Result<Run> {
    let out = ctx.create_out(name)?;
    let call = ctx.sendfile(
        abi,
        out.as_raw_fd(),
        input.as_raw_fd(),
        OffsetArg::Value(0),
        len,
    )?;
    let mut run = Run::new(call, Expect::Bytes(len));
    if run.as_expected() {
        check_file_copy(&mut run, ctx, &out, 0, len)?;
        check_offset_after(&mut run, len as i64);
    }
    Ok(run)
}

/// The input is unlinked (no names left) before the call: the copy still works, and the file
/// is reported by its original path with `deleted: true` (not d_path's " (deleted)" suffix).
fn deleted_file(ctx: &Ctx, name: &str, abi: Abi) -> anyhow::Result<Option<Run>> {
    let path = ctx.dir.join(format!("deleted-{name}.bin"));
    fs::write(&path, &ctx.content).with_context(|| format!("writing {}", path.display()))?;
    let input = ctx.open(&path, OpenOptions::new().read(true))?;
    fs::remove_file(&path)?;
    copy_prefix(ctx, name, abi, &input, 100).map(Some)
}

/// The input's directory and file names hold a newline, double quotes, a backslash and bytes
/// that are not UTF-8: the path is reported exactly, in `pathHex`.
fn hostile_path(ctx: &Ctx, name: &str, abi: Abi) -> anyhow::Result<Option<Run>> {
    let dir = ctx.dir.join(OsStr::from_bytes(b"dir\n\"q\\\xfe <x>"));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut file_name = format!("in\n\"{name}\\").into_bytes();
    file_name.extend_from_slice(b"\xff.bin");
    let path = dir.join(OsStr::from_bytes(&file_name));
    fs::write(&path, &ctx.content).with_context(|| format!("writing {}", path.display()))?;
    let input = ctx.open(&path, OpenOptions::new().read(true))?;
    let run = copy_prefix(ctx, name, abi, &input, 100);
    drop(input);
    let _ = fs::remove_dir_all(&dir);
    run.map(Some)
}

/// The input is a memfd (how fileless payloads are held): the kernel names it
/// `/memfd:NAME (deleted)` (`simple_dname()`), which the tracer must report as such, marked
/// `pseudo` and `deleted`, never as `/`. The name holds a quote, a newline and a byte that is not
/// UTF-8, and ends like a deleted file's path would.
fn memfd_input(ctx: &Ctx, name: &str, abi: Abi) -> anyhow::Result<Option<Run>> {
    let mut memfd_name = format!("payload \"{name}\"\n").into_bytes();
    memfd_name.extend_from_slice(b"\xff (deleted)\0");
    // SAFETY: a NUL-terminated name; memfd_create only reads it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_memfd_create,
            memfd_name.as_ptr(),
            libc::MFD_CLOEXEC as libc::c_long,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error()).context("memfd_create");
    }
    // SAFETY: a descriptor memfd_create just returned, owned by nothing else.
    let mut input = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd as RawFd) };
    input.write_all(&ctx.content)?;
    let mut kernel_name = b"/memfd:".to_vec();
    kernel_name.extend_from_slice(&memfd_name[..memfd_name.len() - 1]);
    kernel_name.extend_from_slice(b" (deleted)");
    let anomaly = facts::Anomaly {
        pseudo: true,
        ..facts::Anomaly::default()
    };
    ctx.paths.register_as(
        input.as_raw_fd(),
        Path::new(OsStr::from_bytes(&kernel_name)),
        anomaly,
    )?;
    copy_prefix(ctx, name, abi, &input, 100).map(Some)
}

/// The input is on a tmpfs at `etc/passwd` that is lazily unmounted (`umount -l`) after it was
/// opened: walked up to its mount's root, its path reads `/etc/passwd`, a different real file,
/// so the tracer must mark it `detached`. Needs CAP_SYS_ADMIN; skipped (with a note) without.
fn detached_mount(ctx: &Ctx, name: &str, abi: Abi) -> anyhow::Result<Option<Run>> {
    let dir = ctx.dir.join(format!("detached-{name}"));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let c_dir = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: NUL-terminated strings; mount only reads them.
    let r = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            c_dir.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        let _ = fs::remove_dir(&dir);
        eprintln!("sendfile-workload: case {name}: skipped: mounting a tmpfs: {e}");
        return Ok(None);
    }
    let setup = (|| -> anyhow::Result<File> {
        fs::create_dir_all(dir.join("etc"))?;
        let path = dir.join("etc/passwd");
        fs::write(&path, &ctx.content)?;
        let input = File::open(&path)?;
        let anomaly = facts::Anomaly {
            detached: true,
            ..facts::Anomaly::default()
        };
        ctx.paths
            .register_as(input.as_raw_fd(), Path::new("/etc/passwd"), anomaly)?;
        Ok(input)
    })();
    // SAFETY: as above.
    let r = unsafe { libc::umount2(c_dir.as_ptr(), libc::MNT_DETACH) };
    let umount = io::Error::last_os_error();
    let _ = fs::remove_dir(&dir);
    let input = setup?;
    if r != 0 {
        anyhow::bail!("umount -l {}: {umount}", dir.display());
    }
    copy_prefix(ctx, name, abi, &input, 100).map(Some)
}

/// A thread with its own root (`unshare(CLONE_FS)`, `chroot` into an empty directory) copies a
/// file opened before, outside its root: the tracer must mark both paths `outsideRoot`. Needs
/// CAP_SYS_CHROOT; skipped (with a note) without. The facts are read before the chroot (no
/// `/proc` inside).
fn outside_root(ctx: &Ctx, name: &str, abi: Abi) -> anyhow::Result<Option<Run>> {
    let jail = ctx.dir.join(format!("jail-{name}"));
    fs::create_dir_all(&jail).with_context(|| format!("creating {}", jail.display()))?;
    let path = ctx.dir.join(format!("outside-{name}.bin"));
    fs::write(&path, &ctx.content).with_context(|| format!("writing {}", path.display()))?;
    let run = std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<Option<Run>> {
            let input = ctx.open(&path, OpenOptions::new().read(true))?;
            let out = ctx.create_out(name)?;
            let anomaly = facts::Anomaly {
                outside_root: true,
                ..facts::Anomaly::default()
            };
            ctx.paths.register_as(input.as_raw_fd(), &path, anomaly)?;
            let out_path = ctx.dir.join(format!("out-{name}.bin"));
            ctx.paths.register_as(out.as_raw_fd(), &out_path, anomaly)?;
            let c_jail = std::ffi::CString::new(jail.as_os_str().as_bytes())?;
            let chroot = || -> io::Result<()> {
                // SAFETY: plain syscalls on this thread; CLONE_FS gives it its own root so the
                // chroot does not reach the other threads.
                unsafe {
                    if libc::unshare(libc::CLONE_FS) != 0
                        || libc::chroot(c_jail.as_ptr()) != 0
                        || libc::chdir(c"/".as_ptr()) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            };
            let captured = match ctx.sendfile_after(
                abi,
                out.as_raw_fd(),
                input.as_raw_fd(),
                OffsetArg::Value(0),
                100,
                chroot,
            )? {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("sendfile-workload: case {name}: skipped: chroot: {e}");
                    return Ok(None);
                }
            };
            let mut run = Run::new(captured, Expect::Bytes(100));
            if run.as_expected() {
                check_file_copy(&mut run, ctx, &out, 0, 100)?;
                check_offset_after(&mut run, 100);
            }
            Ok(Some(run))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the case thread panicked"))?
    });
    let _ = fs::remove_dir(&jail);
    let _ = fs::remove_file(&path);
    run
}

/// Levels of directories in `deep_path`: more than the tracer walks.
const DEEP_LEVELS: u32 = sendfile_trace_common::PATH_DEPTH + 8;

/// Input file [`DEEP_LEVELS`] directories deep: the tracer's bounded walk stops before the root,
/// so its path is the leaf end with `truncated: true` (predicted in `facts`).
fn deep_path(ctx: &Ctx, name: &str, abi: Abi) -> anyhow::Result<Option<Run>> {
    let mut dir = ctx.dir.join("deep");
    for level in 0..DEEP_LEVELS {
        dir.push(format!("d{level}"));
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{name}.bin"));
    fs::write(&path, &ctx.content).with_context(|| format!("writing {}", path.display()))?;
    let input = ctx.open(&path, OpenOptions::new().read(true))?;
    let run = copy_prefix(ctx, name, abi, &input, 100);
    drop(input);
    let _ = fs::remove_dir_all(ctx.dir.join("deep"));
    run.map(Some)
}

/// 3 GiB sparse file → /dev/null from offset 0 with a count above 0x7ffff000 (and above 32 bits
/// on 64-bit): `do_sendfile` clamps count to MAX_RW_COUNT, so exactly 2147479552 bytes move.
///
/// i386 `sendfile` (187) passes `max = MAX_NON_LFS` (0x7fffffff) to `do_sendfile`; 0 + 0x7ffff000
/// stays below it and the final position 0x7ffff000 fits the 32-bit off_t, so 187 moves the same
/// amount. The 32-bit count 0xffffffff: on a 64-bit kernel `compat_size_t` is zero-extended into
/// `size_t`, so `rw_verify_area`'s `(ssize_t)count < 0` test passes (both 187 and 239 move
/// 2147479552); a native i386 kernel sees a negative ssize_t and returns EINVAL ("count is
/// negative" in the man page).
fn large_count(ctx: &Ctx, _name: &str, abi: Abi) -> anyhow::Result<Option<Run>> {
    let path = ctx.dir.join("sparse-3g.bin");
    let sparse = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    sparse.set_len(SPARSE_LEN)?;
    drop(sparse);
    let input = ctx.open(&path, OpenOptions::new().read(true))?;
    let null = ctx.open_null()?;
    let call = ctx.sendfile(
        abi,
        null.as_raw_fd(),
        input.as_raw_fd(),
        OffsetArg::Value(0),
        LARGE_COUNT,
    )?;
    #[cfg(target_pointer_width = "32")]
    let expect = if sys::kernel_is_64bit() {
        Expect::Bytes(sys::MAX_RW_COUNT)
    } else {
        Expect::Errno(libc::EINVAL)
    };
    #[cfg(target_pointer_width = "64")]
    let expect = Expect::Bytes(sys::MAX_RW_COUNT);
    let mut run = Run::new(call, expect);
    if run.as_expected() && matches!(expect, Expect::Bytes(_)) {
        check_offset_after(&mut run, sys::MAX_RW_COUNT as i64);
    }
    // Deleting the file also drops the ~2 GiB of page cache the read filled.
    drop(input);
    fs::remove_file(&path)?;
    Ok(Some(run))
}

/// File → file with count 0 from offset 5: returns 0, the offset stays 5.
fn count_zero(ctx: &Ctx, name: &str, abi: Abi) -> anyhow::Result<Option<Run>> {
    let input = ctx.open_input()?;
    let out = ctx.create_out(name)?;
    let call = ctx.sendfile(
        abi,
        out.as_raw_fd(),
        input.as_raw_fd(),
        OffsetArg::Value(5),
        0,
    )?;
    let mut run = Run::new(call, Expect::Bytes(0));
    if run.as_expected() {
        check_offset_after(&mut run, 5);
        let len = out.metadata()?.len();
        run.check(len == 0, || {
            format!("output file has {len} bytes, expected 0")
        });
    }
    Ok(Some(run))
}

/// in_fd is a descriptor that was just closed (a dup of the input): EBADF.
fn ebadf(ctx: &Ctx, name: &str, abi: Abi) -> anyhow::Result<Option<Run>> {
    let input = ctx.open_input()?;
    let out = ctx.create_out(name)?;
    let closed = input.try_clone()?.as_raw_fd();
    // The `File` from `try_clone()` is a temporary, closed at the end of the statement above;
    // nothing is opened between here and the call, so the number stays unused.
    let call = ctx.sendfile(abi, out.as_raw_fd(), closed, OffsetArg::Null, 100)?;
    Ok(Some(Run::new(call, Expect::Errno(libc::EBADF))))
}

/// out_fd is -1 (never a descriptor), in_fd a valid file: EBADF.
fn ebadf_negative_out(ctx: &Ctx, _name: &str, abi: Abi) -> anyhow::Result<Option<Run>> {
    let input = ctx.open_input()?;
    let call = ctx.sendfile(abi, -1, input.as_raw_fd(), OffsetArg::Null, 100)?;
    let mut run = Run::new(call, Expect::Errno(libc::EBADF));
    check_input_position(&mut run, &input, 0)?;
    Ok(Some(run))
}

/// out_fd opened with O_APPEND: EINVAL (`do_splice_direct` refuses appending outputs).
fn einval_append(ctx: &Ctx, name: &str, abi: Abi) -> anyhow::Result<Option<Run>> {
    let input = ctx.open_input()?;
    let path = ctx.dir.join(format!("out-{name}.bin"));
    let _ = fs::remove_file(&path);
    let out = ctx.open(&path, OpenOptions::new().append(true).create(true))?;
    let call = ctx.sendfile(
        abi,
        out.as_raw_fd(),
        input.as_raw_fd(),
        OffsetArg::Null,
        INPUT_LEN,
    )?;
    let mut run = Run::new(call, Expect::Errno(libc::EINVAL));
    let len = out.metadata()?.len();
    run.check(len == 0, || {
        format!("append output file has {len} bytes, expected 0")
    });
    Ok(Some(run))
}

/// out_fd is an eventfd (an anonymous inode, no splice_write): EINVAL, nothing written.
fn einval_eventfd_out(ctx: &Ctx, _name: &str, abi: Abi) -> anyhow::Result<Option<Run>> {
    let input = ctx.open_input()?;
    let efd = sys::eventfd()?;
    let call = ctx.sendfile(
        abi,
        efd.as_raw_fd(),
        input.as_raw_fd(),
        OffsetArg::Value(0),
        100,
    )?;
    Ok(Some(Run::new(call, Expect::Errno(libc::EINVAL))))
}

/// Bytes left in a pipe by the pipe-input cases.
const PIPE_DATA: &[u8] = b"0123456789abcdef";

/// A pipe holding [`PIPE_DATA`]: (read end, write end).
fn filled_pipe() -> anyhow::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    let (rd, wr) = sys::pipe()?;
    let mut w = File::from(wr);
    w.write_all(PIPE_DATA)?;
    Ok((rd, w.into()))
}

/// Checks the pipe still holds [`PIPE_DATA`] (a failed sendfile consumed nothing).
fn check_pipe_intact(run: &mut Run, rd: std::os::fd::OwnedFd) -> io::Result<()> {
    sys::set_nonblocking(rd.as_raw_fd(), true)?;
    let mut buf = [0u8; 64];
    let n = File::from(rd).read(&mut buf)?;
    run.check(&buf[..n] == PIPE_DATA, || {
        format!("pipe holds {n} bytes instead of the original 16")
    });
    Ok(())
}

/// in_fd is the read end of a pipe holding data, offset NULL: EINVAL (the input supports no
/// mmap-like reads; `splice_direct_to_actor` wants a regular file or block device).
fn einval_pipe_input(ctx: &Ctx, name: &str, abi: Abi) -> anyhow::Result<Option<Run>> {
    let (rd, _wr) = filled_pipe()?;
    let out = ctx.create_out(name)?;
    let call = ctx.sendfile(abi, out.as_raw_fd(), rd.as_raw_fd(), OffsetArg::Null, 16)?;
    let mut run = Run::new(call, Expect::Errno(libc::EINVAL));
    check_pipe_intact(&mut run, rd)?;
    Ok(Some(run))
}

/// in_fd is a pipe (not seekable) and offset is not NULL: ESPIPE.
fn espipe(ctx: &Ctx, name: &str, abi: Abi) -> anyhow::Result<Option<Run>> {
    let (rd, _wr) = filled_pipe()?;
    let out = ctx.create_out(name)?;
    let call = ctx.sendfile(
        abi,
        out.as_raw_fd(),
        rd.as_raw_fd(),
        OffsetArg::Value(0),
        16,
    )?;
    let mut run = Run::new(call, Expect::Errno(libc::ESPIPE));
    check_pipe_intact(&mut run, rd)?;
    Ok(Some(run))
}

/// The offset pointer is an unmapped address (a page mapped then unmapped): EFAULT.
fn efault(ctx: &Ctx, name: &str, abi: Abi) -> anyhow::Result<Option<Run>> {
    let input = ctx.open_input()?;
    let out = ctx.create_out(name)?;
    let addr = sys::unmapped_address()?;
    let call = ctx.sendfile(
        abi,
        out.as_raw_fd(),
        input.as_raw_fd(),
        OffsetArg::Unmapped(addr),
        100,
    )?;
    let mut run = Run::new(call, Expect::Errno(libc::EFAULT));
    let len = out.metadata()?.len();
    run.check(len == 0, || {
        format!("output file has {len} bytes, expected 0")
    });
    Ok(Some(run))
}

/// out_fd is a non-blocking TCP socket on loopback whose peer never reads, filled with write()
/// until EAGAIN: sendfile fails with EAGAIN. TCP, not a UNIX socket: on 6.1
/// `unix_stream_sendpage` appends a page to the tail skb without checking the send buffer, so a
/// "full" UNIX socket still takes 4096 bytes. The fill repeats after pauses until no write goes
/// through for three rounds: then the receiver's window is closed and no late ACK frees room.
fn eagain(ctx: &Ctx, _name: &str, abi: Abi) -> anyhow::Result<Option<Run>> {
    let input = ctx.open_input()?;
    let (mut writer, _peer) = tcp_pair(Ipv4Addr::LOCALHOST.into())?;
    writer.set_nonblocking(true)?;
    let chunk = vec![0x55u8; 64 * 1024];
    // Full means: three rounds in a row, 100 ms apart, in which not one write went through (under
    // emulation, ACKs can free room well after the first EAGAIN).
    let mut filled = false;
    let mut quiet_rounds = 0;
    for _round in 0..300 {
        let mut wrote = false;
        for _ in 0..100_000 {
            match writer.write(&chunk) {
                Ok(_) => wrote = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e).context("filling the socket"),
            }
        }
        quiet_rounds = if wrote { 0 } else { quiet_rounds + 1 };
        if quiet_rounds == 3 {
            filled = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    anyhow::ensure!(filled, "the socket never became full");
    let call = ctx.sendfile(
        abi,
        writer.as_raw_fd(),
        input.as_raw_fd(),
        OffsetArg::Null,
        INPUT_LEN,
    )?;
    let mut run = Run::new(call, Expect::Errno(libc::EAGAIN));
    check_input_position(&mut run, &input, 0)?;
    Ok(Some(run))
}

/// i386 `sendfile` (187) only: offset 0x7fffffff. `compat_sys_sendfile` passes
/// `max = MAX_NON_LFS` (0x7fffffff) and `do_sendfile` returns EOVERFLOW when `pos >= max`
/// (man page: "would result in exceeding the maximum size"); the offset is written back
/// unchanged.
fn eoverflow(ctx: &Ctx, _name: &str, abi: Abi) -> anyhow::Result<Option<Run>> {
    let input = ctx.open_input()?;
    let null = ctx.open_null()?;
    let start = i64::from(i32::MAX);
    let call = ctx.sendfile(
        abi,
        null.as_raw_fd(),
        input.as_raw_fd(),
        OffsetArg::Value(start),
        1,
    )?;
    let mut run = Run::new(call, Expect::Errno(libc::EOVERFLOW));
    check_offset_after(&mut run, start);
    Ok(Some(run))
}
