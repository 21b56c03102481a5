//! Flow cases (`--flows`): runs of many sendfile calls whose flows the tracer's `--mode flows`
//! must report exactly. Each case prints one JSON line with the flows it made: per flow, the
//! descriptors as described before its first call and the sums of what the kernel returned.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use crate::facts::{self, FdInfo, Paths, ProcessFacts};
use crate::record;
use crate::sys::{self, Abi, OffsetArg, SendfileCall};

/// Calls of the `chunks` case.
const CHUNK_CALLS: u64 = 10_000;
/// Bytes per call of the `chunks` case.
const CHUNK: u64 = 64;

/// One flow as the workload made it.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tally {
    /// in_fd described before the flow's first call.
    pub in_fd_info: Option<FdInfo>,
    /// out_fd described before the flow's first call.
    pub out_fd_info: Option<FdInfo>,
    /// Calls made.
    pub calls: u64,
    /// Sum of positive returns.
    pub bytes: u64,
    /// Failed calls.
    pub failed_calls: u64,
    /// Failed calls by errno name.
    pub errnos: BTreeMap<String, u64>,
    /// Offset value before the first call (None for NULL or unreadable).
    pub offset_first: Option<i64>,
    /// Offset value after the last call.
    pub offset_last: Option<i64>,
    /// Syscall number used.
    pub syscall_nr: i64,
    /// Whether the calls were 32-bit.
    pub compat: bool,
    /// Thread id of the first call.
    pub tid: i32,
    /// Start time of that thread (wall-clock ns, clock-tick precision).
    pub thread_start_time: u64,
}

impl Tally {
    /// Describes both descriptors, before the flow's first call.
    fn start(in_fd: RawFd, out_fd: RawFd, paths: &Paths, abi: Abi) -> Tally {
        let tid = sys::gettid();
        Tally {
            thread_start_time: facts::thread_start_time(tid).unwrap_or(0),
            in_fd_info: Some(facts::describe(in_fd, paths)),
            out_fd_info: Some(facts::describe(out_fd, paths)),
            syscall_nr: sys::long_to_i64(abi.nr),
            compat: abi.compat,
            tid,
            ..Tally::default()
        }
    }

    /// Adds one call's result.
    fn add(&mut self, c: &SendfileCall) {
        if self.calls == 0 {
            self.offset_first = c.offset_before;
        }
        self.calls += 1;
        match c.errno() {
            None => self.bytes += c.ret as u64,
            Some(e) => {
                self.failed_calls += 1;
                *self.errnos.entry(sys::errno_name(e)).or_default() += 1;
            }
        }
        self.offset_last = c.offset_after;
    }
}

/// The line a flow case prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CaseLine {
    flow_case: &'static str,
    pid: i32,
    flows: Vec<Tally>,
    #[serde(flatten)]
    process: ProcessFacts,
}

/// A connected TCP pair on loopback: (client, accepted side).
fn tcp_pair() -> anyhow::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0))?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    Ok((client, server))
}

/// Reads everything `peer` receives on a thread of its own, until EOF.
fn drain(mut peer: TcpStream) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut n = 0u64;
        while let Ok(k) = peer.read(&mut buf) {
            if k == 0 {
                break;
            }
            n += k as u64;
        }
        n
    })
}

/// Writes a file of `len` bytes of known content.
fn write_file(path: &Path, len: u64) -> anyhow::Result<()> {
    let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let mut f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(&data)?;
    Ok(())
}

/// Opens `path` for reading and registers its path for the descriptions.
fn open_in(path: &Path, paths: &Paths) -> anyhow::Result<File> {
    let f = File::open(path)?;
    paths.register(f.as_raw_fd(), path)?;
    Ok(f)
}

/// `chunks`: one file sent to one TCP socket in 10,000 calls of 64 bytes (offset NULL): one flow
/// whose bytes are the file's size.
fn chunks(dir: &Path, abi: Abi, paths: &Paths) -> anyhow::Result<Vec<Tally>> {
    let path = dir.join("flow-chunks.bin");
    write_file(&path, CHUNK_CALLS * CHUNK)?;
    let input = open_in(&path, paths)?;
    let (client, server) = tcp_pair()?;
    let reader = drain(server);
    let mut t = Tally::start(input.as_raw_fd(), client.as_raw_fd(), paths, abi);
    for _ in 0..CHUNK_CALLS {
        let c = sys::sendfile(
            abi,
            client.as_raw_fd(),
            input.as_raw_fd(),
            OffsetArg::Null,
            CHUNK,
        );
        t.add(&c);
    }
    drop(client);
    let received = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))?;
    anyhow::ensure!(
        received == t.bytes && t.bytes == CHUNK_CALLS * CHUNK,
        "chunks: sent {} bytes, peer received {received}, file has {}",
        t.bytes,
        CHUNK_CALLS * CHUNK
    );
    Ok(vec![t])
}

/// `dup`: calls alternate between a descriptor and its `dup`: one flow (one open file
/// description), described by the first call's descriptor.
fn dup(dir: &Path, abi: Abi, paths: &Paths) -> anyhow::Result<Vec<Tally>> {
    let path = dir.join("flow-dup.bin");
    write_file(&path, 4096)?;
    let input = open_in(&path, paths)?;
    let twin = input.try_clone()?;
    let out_path = dir.join("flow-dup.out");
    let out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&out_path)?;
    paths.register(out.as_raw_fd(), &out_path)?;
    let mut t = Tally::start(input.as_raw_fd(), out.as_raw_fd(), paths, abi);
    for i in 0..100 {
        let fd = if i % 2 == 0 { &input } else { &twin };
        let c = sys::sendfile(
            abi,
            out.as_raw_fd(),
            fd.as_raw_fd(),
            OffsetArg::Value(i * 40),
            40,
        );
        t.add(&c);
    }
    Ok(vec![t])
}

/// `reopen`: 50 calls, both descriptors closed, a new file and a new connection opened at the
/// same descriptor numbers, 50 calls: two flows.
fn reopen(dir: &Path, abi: Abi, paths: &Paths) -> anyhow::Result<Vec<Tally>> {
    let path = dir.join("flow-reopen.bin");
    write_file(&path, 4096)?;
    let mut flows = Vec::new();
    let mut numbers: Option<(RawFd, RawFd)> = None;
    for _ in 0..2 {
        let input = open_in(&path, paths)?;
        let (client, server) = tcp_pair()?;
        let reader = drain(server);
        let (in_fd, out_fd) = match numbers {
            None => {
                let n = (input.into_raw_fd(), client.into_raw_fd());
                numbers = Some(n);
                n
            }
            Some((in_fd, out_fd)) => {
                place(input.into_raw_fd(), in_fd)?;
                place(client.into_raw_fd(), out_fd)?;
                paths.register(in_fd, &path)?;
                (in_fd, out_fd)
            }
        };
        let mut t = Tally::start(in_fd, out_fd, paths, abi);
        for i in 0..50 {
            let c = sys::sendfile(abi, out_fd, in_fd, OffsetArg::Value(i * 64), 64);
            t.add(&c);
        }
        // SAFETY: both numbers are ours; closing them ends this round's flow.
        unsafe {
            libc::close(in_fd);
            libc::close(out_fd);
        }
        reader
            .join()
            .map_err(|_| anyhow::anyhow!("reader panicked"))?;
        flows.push(t);
    }
    Ok(flows)
}

/// Moves descriptor `fd` (owned) to number `at` (free or owned), unless it is already there.
fn place(fd: RawFd, at: RawFd) -> anyhow::Result<()> {
    if fd == at {
        return Ok(());
    }
    // SAFETY: both numbers belong to the caller; `fd` is closed once it is duplicated.
    unsafe {
        anyhow::ensure!(
            libc::dup2(fd, at) == at,
            "dup2: {}",
            std::io::Error::last_os_error()
        );
        libc::close(fd);
    }
    Ok(())
}

/// `errors`: one flow (same two descriptors) with successful calls, EFAULT (unmapped offset
/// pointer) and EINVAL (negative offset) among them, counted per errno.
fn errors(dir: &Path, abi: Abi, paths: &Paths) -> anyhow::Result<Vec<Tally>> {
    let path = dir.join("flow-errors.bin");
    write_file(&path, 4096)?;
    let input = open_in(&path, paths)?;
    let out_path = dir.join("flow-errors.out");
    let out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&out_path)?;
    paths.register(out.as_raw_fd(), &out_path)?;
    let bad = sys::unmapped_address()?;
    let mut t = Tally::start(input.as_raw_fd(), out.as_raw_fd(), paths, abi);
    let plan = [
        OffsetArg::Value(0),
        OffsetArg::Unmapped(bad),
        OffsetArg::Value(100),
        OffsetArg::Value(-1),
        OffsetArg::Unmapped(bad),
        OffsetArg::Value(200),
        OffsetArg::Value(-5),
        OffsetArg::Unmapped(bad),
        OffsetArg::Value(300),
        OffsetArg::Value(400),
    ];
    for arg in plan {
        let c = sys::sendfile(abi, out.as_raw_fd(), input.as_raw_fd(), arg, 100);
        t.add(&c);
    }
    let want: BTreeMap<String, u64> = [("EFAULT".to_owned(), 3), ("EINVAL".to_owned(), 2)].into();
    anyhow::ensure!(
        t.errnos == want && t.bytes == 500,
        "errors: got {:?} and {} bytes",
        t.errnos,
        t.bytes
    );
    Ok(vec![t])
}

/// The flow cases, in run order.
pub const CASES: [&str; 4] = ["chunks", "dup", "reopen", "errors"];

/// Runs the flow cases named (all if empty) through the ABI with the 64-bit offset, one JSON
/// line each; false if a case failed.
pub fn run(dir: &Path, names: &[String]) -> anyhow::Result<bool> {
    for n in names {
        anyhow::ensure!(
            CASES.contains(&n.as_str()),
            "unknown flow case '{n}' (known: {})",
            CASES.join(", ")
        );
    }
    let abi = sys::LOOP_ABI;
    let paths = Paths::default();
    let dir = std::fs::canonicalize(dir)?;
    let mut ok = true;
    for name in CASES {
        if !names.is_empty() && !names.iter().any(|n| n == name) {
            continue;
        }
        let flows = match name {
            "chunks" => chunks(&dir, abi, &paths),
            "dup" => dup(&dir, abi, &paths),
            "reopen" => reopen(&dir, abi, &paths),
            _ => errors(&dir, abi, &paths),
        };
        match flows {
            Ok(flows) => record::emit(&CaseLine {
                flow_case: name,
                pid: sys::getpid(),
                flows,
                process: ProcessFacts::now()?,
            })?,
            Err(e) => {
                eprintln!("sendfile-workload: flow case {name}: {e:#}");
                ok = false;
            }
        }
    }
    Ok(ok)
}
