//! Sinks (`--output`, repeatable): stdout, a rotating file, syslog over a UNIX socket, UDP, TCP
//! or RELP.
//!
//! Each sink runs on its own thread behind a bounded queue: the ring-buffer reader never waits
//! for a slow or absent sink. A record is delivered or counted: when a queue is full, when a
//! write fails (with the records buffered with it), when the tracer stops before a sink could
//! write what it holds. The daemon reports those drops in-band as `events_lost` with
//! `"reason":"sink"` and in `tracer_stop`.

mod batch;
mod cut;
mod file;
pub mod relp;
mod syslog;

use self::{
    batch::{Batch, Torn},
    relp::Relp,
    syslog::{Syslog, Tcp, Transport, resolve},
};
pub use self::{
    file::{MAX_ROTATE_KEEP, RotatingFile, open_log_file},
    syslog::rfc5424,
};

use std::{
    fmt,
    io::{self, Write},
    net::UdpSocket,
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
        unix::net::UnixDatagram,
    },
    path::PathBuf,
    str::FromStr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError},
    },
    time::Duration,
};

use prometheus_client::metrics::{counter::Counter, gauge::Gauge};

/// Where `--output` sends records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkSpec {
    /// `-`: standard output.
    Stdout,
    /// A file path.
    File(PathBuf),
    /// `syslog:///dev/log`: a local syslog daemon's datagram socket.
    SyslogUnix(PathBuf),
    /// `syslog+udp://HOST:PORT`.
    SyslogUdp(String),
    /// `syslog+tcp://HOST:PORT` (RFC 6587 octet counting).
    SyslogTcp(String),
    /// `syslog+relp://HOST:PORT` (RELP: each record acknowledged by the receiver).
    SyslogRelp(String),
}

impl FromStr for SinkSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let host_port = |rest: &str, scheme: &str| {
            let rest = rest.trim_end_matches('/');
            match rest.rsplit_once(':') {
                Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => Ok(rest.to_owned()),
                _ => Err(format!(
                    "`{s}`: expected {scheme}://HOST:PORT (e.g. {scheme}://127.0.0.1:514)"
                )),
            }
        };
        if s == "-" {
            Ok(SinkSpec::Stdout)
        } else if let Some(path) = s.strip_prefix("syslog://") {
            if !path.starts_with('/') {
                return Err(format!(
                    "`{s}`: expected syslog:// and an absolute socket path, e.g. syslog:///dev/log"
                ));
            }
            Ok(SinkSpec::SyslogUnix(PathBuf::from(path)))
        } else if let Some(rest) = s.strip_prefix("syslog+udp://") {
            host_port(rest, "syslog+udp").map(SinkSpec::SyslogUdp)
        } else if let Some(rest) = s.strip_prefix("syslog+tcp://") {
            host_port(rest, "syslog+tcp").map(SinkSpec::SyslogTcp)
        } else if let Some(rest) = s.strip_prefix("syslog+relp://") {
            host_port(rest, "syslog+relp").map(SinkSpec::SyslogRelp)
        } else if s.starts_with("syslog") && s.contains("://") {
            Err(format!(
                "`{s}`: unknown syslog transport: use syslog:///dev/log, syslog+udp://HOST:PORT, \
                 syslog+tcp://HOST:PORT or syslog+relp://HOST:PORT"
            ))
        } else if s.is_empty() {
            Err("an empty output: use -, a file path or a syslog URL".into())
        } else {
            Ok(SinkSpec::File(PathBuf::from(s)))
        }
    }
}

impl fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkSpec::Stdout => f.write_str("-"),
            SinkSpec::File(p) => write!(f, "{}", p.display()),
            SinkSpec::SyslogUnix(p) => write!(f, "syslog://{}", p.display()),
            SinkSpec::SyslogUdp(a) => write!(f, "syslog+udp://{a}"),
            SinkSpec::SyslogTcp(a) => write!(f, "syslog+tcp://{a}"),
            SinkSpec::SyslogRelp(a) => write!(f, "syslog+relp://{a}"),
        }
    }
}

/// One formatted record on its way to a sink, borrowed from the [`Block`] it was rendered in.
#[derive(Clone, Copy, Debug)]
pub struct Line<'a> {
    /// The record, one line without its newline.
    pub bytes: &'a [u8],
    /// `eventName` (the syslog MSGID).
    pub name: &'static str,
    /// Syslog severity.
    pub severity: u8,
    /// Wall-clock ns.
    pub timestamp: u64,
    /// The caller (host pids) of a `sendfile` event.
    pub caller: Option<(u32, u32)>,
}

impl Line<'_> {
    /// Who this record is about, to name it in a loss report.
    pub fn identity(&self) -> Identity {
        Identity {
            event_name: self.name,
            timestamp: self.timestamp,
            host_process_id: self.caller.map(|c| c.0),
            host_thread_id: self.caller.map(|c| c.1),
            bytes: self.bytes.len(),
        }
    }
}

/// What a [`Line`] says beside its bytes, kept per record in a [`Block`].
#[derive(Clone, Copy, Debug)]
struct Meta {
    /// End offset of the record in [`Block::bytes`].
    end: usize,
    name: &'static str,
    severity: u8,
    timestamp: u64,
    caller: Option<(u32, u32)>,
}

/// Records rendered once, one after the other in one buffer, and handed to every sink together
/// (shared, behind an `Arc`): one allocation and one queue message per block, not per record.
#[derive(Debug, Default)]
pub struct Block {
    bytes: Vec<u8>,
    lines: Vec<Meta>,
}

impl Block {
    /// Bytes a block holds before it is handed over.
    pub const BYTES: usize = 1 << 16;
    /// Records a block holds before it is handed over.
    pub const RECORDS: usize = 512;

    /// An empty block.
    pub fn new() -> Block {
        Block {
            bytes: Vec::with_capacity(Self::BYTES + 4096),
            lines: Vec::with_capacity(Self::RECORDS),
        }
    }

    /// The buffer the next record is rendered into (appended; see [`Block::commit`]).
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Makes what was appended to [`Block::buf`] since the last record one record.
    pub fn commit(
        &mut self,
        name: &'static str,
        severity: u8,
        timestamp: u64,
        caller: Option<(u32, u32)>,
    ) {
        self.lines.push(Meta {
            end: self.bytes.len(),
            name,
            severity,
            timestamp,
            caller,
        });
    }

    /// Drops what was appended to [`Block::buf`] since the last record (a render that failed).
    pub fn rollback(&mut self) {
        let end = self.lines.last().map_or(0, |m| m.end);
        self.bytes.truncate(end);
    }

    /// Records in the block.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Bytes of the records in the block.
    pub fn bytes(&self) -> usize {
        self.lines.last().map_or(0, |m| m.end)
    }

    /// Empties the block, keeping its buffers.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.lines.clear();
    }

    /// Record `i`.
    pub fn line(&self, i: usize) -> Line<'_> {
        let m = self.lines[i];
        let start = i.checked_sub(1).map_or(0, |p| self.lines[p].end);
        Line {
            bytes: &self.bytes[start..m.end],
            name: m.name,
            severity: m.severity,
            timestamp: m.timestamp,
            caller: m.caller,
        }
    }
}

/// The records `next..end` of a shared block: what one queue message gives a sink.
#[derive(Debug)]
pub struct Chunk {
    /// The block.
    pub block: Arc<Block>,
    /// The next record to take.
    pub next: usize,
    /// One past the last record for this sink.
    pub end: usize,
}

impl Chunk {
    /// Records not taken yet.
    pub fn left(&self) -> u64 {
        (self.end - self.next) as u64
    }
}

/// Counters of one sink, shared with the metrics endpoint.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Records dropped because the queue was full (or the sink failed to take them).
    pub dropped: Counter,
    /// Write and connection errors.
    pub errors: Counter,
    /// Records waiting in the queue.
    pub queued: Gauge,
}

/// Settings shared by file and syslog sinks.
#[derive(Clone, Debug)]
pub struct SinkOptions {
    /// Rotate a file sink when it would grow past this many bytes (0: never).
    pub rotate_size: u64,
    /// Rotated files kept (`FILE.1` … `FILE.N`).
    pub rotate_keep: u32,
    /// Syslog facility number (3 = daemon).
    pub facility: u8,
    /// Host name in the syslog header.
    pub host_name: String,
}

/// What a sink does with records; each runs on its own thread.
///
/// A sink accounts for every record it is given: `write` and `flush` either succeed or say, in
/// [`Failure::lost`], how many records they lost for good (the one being written, the buffered
/// ones, the unacknowledged ones given up); [`Sink::pending`] says how many it still holds.
pub trait Sink: Send {
    /// Takes one record (buffered writes are fine).
    fn write(&mut self, line: &Line) -> Result<(), Failure>;
    /// Pushes buffered records out; called when the queue is empty.
    fn flush(&mut self) -> Result<(), Failure>;
    /// Records taken but not delivered yet (buffered, or sent and not acknowledged).
    fn pending(&self) -> u64 {
        0
    }
    /// Delivers what it holds before the tracer exits (waits for acknowledgements where there
    /// are some); `give_up` turns true when the output stops waiting.
    fn finish(&mut self, give_up: &dyn Fn() -> bool) -> Result<(), Failure> {
        let _ = give_up;
        self.flush()
    }
    /// Reopens after SIGHUP (files); a no-op elsewhere.
    fn reopen(&mut self) -> Result<(), Failure> {
        Ok(())
    }
    /// Whether the sink can take a record now (false while a TCP sink waits to reconnect).
    fn ready(&mut self) -> bool {
        true
    }
}

/// A sink's failed write or flush.
#[derive(Debug)]
pub struct Failure {
    /// Why.
    pub error: io::Error,
    /// Records lost for good by this failure.
    pub lost: u64,
}

impl Failure {
    /// A failure that lost `lost` records.
    pub fn new(error: io::Error, lost: u64) -> Failure {
        Failure { error, lost }
    }
}

impl From<Torn> for Failure {
    fn from(t: Torn) -> Failure {
        Failure::new(t.error, t.lost)
    }
}

/// Who a record is about, for a loss report that names the record (not its content, which may
/// be what made it too large).
pub type Identity = crate::event::lifecycle::LostRecord;

/// State a sink's thread shares with the output: what it holds, and how to stop it.
#[derive(Debug, Default)]
pub struct SinkShared {
    /// Records the sink took and has not delivered (buffered, or awaiting acknowledgement).
    pub pending: AtomicU64,
    /// The reader closed this output (stdout's EPIPE): nothing more is queued to it.
    pub closed: AtomicBool,
    /// The output gave up on this sink while stopping: it drops what it holds, counted.
    pub abandon: AtomicBool,
    /// Set by whichever side (the thread, or the output when the thread is stuck) counts the
    /// records left when the sink is given up, so that they are counted once.
    pub remainder_counted: AtomicBool,
    /// The sink's current connection, which the output shuts down to unblock a thread stuck in a
    /// write to a peer that does not read.
    pub socket: Mutex<Option<OwnedFd>>,
    /// Records dropped because they could not be sent whole even in their cut form, named for
    /// the next loss report (at most [`SinkShared::UNFIT_KEPT`] kept between reports).
    pub unfit: Mutex<Vec<Identity>>,
}

impl SinkShared {
    /// Unfit records named per loss report; more are counted but not named.
    pub const UNFIT_KEPT: usize = 16;

    /// Keeps the connection `fd` (a duplicate) so that [`SinkShared::interrupt`] can shut it.
    pub fn set_socket(&self, fd: Option<BorrowedFd<'_>>) {
        let dup = fd.and_then(|fd| fd.try_clone_to_owned().ok());
        *self.socket.lock().unwrap_or_else(|p| p.into_inner()) = dup;
    }

    /// Shuts the sink's connection down, so that a write blocked on it returns at once.
    pub fn interrupt(&self) {
        if let Some(fd) = &*self.socket.lock().unwrap_or_else(|p| p.into_inner()) {
            // SAFETY: shutdown(2) on a descriptor we own (a duplicate of the connection); it
            // changes no memory, and an error (not a socket any more) is harmless here.
            unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR) };
        }
    }

    /// Names a record dropped as too large for the next loss report.
    pub fn unfit(&self, who: Identity) {
        let mut v = self.unfit.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() < Self::UNFIT_KEPT {
            v.push(who);
        }
    }
}

/// Opens the sink `spec` names (files are created now, so a bad path fails at start).
pub fn open(
    spec: &SinkSpec,
    opts: &SinkOptions,
    shared: &Arc<SinkShared>,
) -> io::Result<Box<dyn Sink>> {
    Ok(match spec {
        SinkSpec::Stdout => Box::new(Stdout {
            batch: Batch::new(),
        }),
        SinkSpec::File(path) => Box::new(RotatingFile::open(path, opts)?),
        SinkSpec::SyslogUnix(path) => Box::new(Syslog::new(
            Transport::Unix(UnixDatagram::unbound()?, path.clone()),
            opts,
            shared.clone(),
        )),
        SinkSpec::SyslogUdp(addr) => {
            let target = resolve(addr)?;
            let bind = if target.is_ipv6() {
                "[::]:0"
            } else {
                "0.0.0.0:0"
            };
            let sock = UdpSocket::bind(bind)?;
            sock.connect(target)?;
            Box::new(Syslog::new(Transport::Udp(sock), opts, shared.clone()))
        }
        SinkSpec::SyslogTcp(addr) => Box::new(Syslog::new(
            Transport::Tcp(Tcp::new(addr.clone()), Batch::new()),
            opts,
            shared.clone(),
        )),
        SinkSpec::SyslogRelp(addr) => Box::new(Relp::new(addr.clone(), opts, shared.clone())),
    })
}

/// Standard output, as lines, written whole: a write that fails part-way takes the torn line
/// back when stdout is a regular file.
struct Stdout {
    batch: Batch,
}

impl Sink for Stdout {
    fn write(&mut self, line: &Line) -> Result<(), Failure> {
        let flushed = if self.batch.would_overflow(line.bytes.len() + 1) {
            self.flush()
        } else {
            Ok(())
        };
        self.batch.push(&[line.bytes, b"\n"]);
        flushed
    }
    fn flush(&mut self) -> Result<(), Failure> {
        let stdout = io::stdout();
        let fd = stdout.as_fd();
        self.batch.write_to(&mut FdWriter(fd)).map_err(|t| {
            if t.torn_bytes > 0 {
                take_back(fd, t.torn_bytes, false);
            }
            t.into()
        })
    }
    fn pending(&self) -> u64 {
        self.batch.records()
    }
}

/// Unbuffered writes to a descriptor (std's `Stdout` buffers lines of its own).
struct FdWriter<'a>(BorrowedFd<'a>);

impl Write for FdWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        nix::unistd::write(self.0, buf).map_err(io::Error::from)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Cuts the last `torn` bytes (the start of a record whose write failed) off a regular file, so
/// that it ends with a whole line; `append` says whether the descriptor writes at the end by
/// itself (otherwise its offset is moved back too).
pub(super) fn take_back(fd: BorrowedFd<'_>, torn: u64, append: bool) {
    let result = (|| -> nix::Result<()> {
        let st = nix::sys::stat::fstat(fd)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Ok(());
        }
        let len = (st.st_size as u64).saturating_sub(torn) as libc::off_t;
        nix::unistd::ftruncate(fd, len)?;
        if !append {
            nix::unistd::lseek(fd, len, nix::unistd::Whence::SeekSet)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        log::warn!("cannot cut a torn record off the output ({e}): its last line is partial");
    }
}

/// Sets by SIGHUP; file sinks reopen when they see it.
#[derive(Clone, Debug)]
pub struct Hangup(pub Arc<AtomicBool>);

/// Counts errors without flooding stderr: the first, then one in a thousand.
fn log_error(name: &str, stats: &SinkStats, f: &Failure) {
    let n = stats.errors.inc();
    if n.is_multiple_of(1000) {
        let what = if f.lost == 0 {
            "this one lost no record: they are held"
        } else {
            "records are dropped and counted"
        };
        log::warn!(
            "output {name}: {} ({} errors so far; {what})",
            f.error,
            n + 1
        );
    }
}

/// The sink thread: takes records from the queue until it closes, flushing whenever the queue
/// runs dry; a sink that cannot take records (TCP backing off) leaves them queued. Every record
/// it takes is delivered or counted in `stats.dropped`.
///
/// The queue carries [`Chunk`]s (many records each); the sink still takes them one record at a
/// time, with the same checks (given up, SIGHUP, ready) before each.
pub fn run(
    name: String,
    mut sink: Box<dyn Sink>,
    rx: Receiver<Chunk>,
    stats: Arc<SinkStats>,
    shared: Arc<SinkShared>,
    hangup: Option<Hangup>,
    stopping: Arc<AtomicBool>,
) {
    let fail = |f: Failure| {
        stats.dropped.inc_by(f.lost);
        log_error(&name, &stats, &f);
    };
    // Records still queued: the rest of the chunk being taken and the chunks behind it.
    let queued_left = |chunk: &Option<Chunk>| {
        chunk.as_ref().map_or(0, Chunk::left) + rx.try_iter().map(|c| c.left()).sum::<u64>()
    };
    // Given up (while stopping): what the sink and its queue hold is lost, counted once.
    let give_up = |sink: &dyn Sink, chunk: &Option<Chunk>| {
        if !shared.remainder_counted.swap(true, Ordering::SeqCst) {
            let left = queued_left(chunk);
            stats.queued.dec_by(left as i64);
            stats.dropped.inc_by(left + sink.pending());
        }
    };
    let mut dirty = false;
    let mut chunk: Option<Chunk> = None;
    loop {
        if shared.abandon.load(Ordering::SeqCst) {
            return give_up(&*sink, &chunk);
        }
        if let Some(h) = &hangup
            && h.0.swap(false, Ordering::Relaxed)
        {
            match sink.reopen() {
                Ok(()) => log::info!("output {name}: reopened on SIGHUP"),
                Err(f) => fail(f),
            }
        }
        if !sink.ready() {
            if stopping.load(Ordering::Relaxed) {
                // Shutting down with no connection: what is queued is lost, and counted.
                return give_up(&*sink, &chunk);
            }
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        if chunk.as_ref().is_none_or(|c| c.left() == 0) {
            chunk = if dirty {
                match rx.try_recv() {
                    Ok(c) => Some(c),
                    Err(std::sync::mpsc::TryRecvError::Empty) => None,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
                }
            } else {
                match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(c) => Some(c),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            };
        }
        let result = match &mut chunk {
            Some(c) if c.left() > 0 => {
                let i = c.next;
                c.next += 1;
                stats.queued.dec();
                dirty = true;
                sink.write(&c.block.line(i))
            }
            _ => {
                dirty = false;
                sink.flush()
            }
        };
        shared.pending.store(sink.pending(), Ordering::SeqCst);
        if let Err(f) = result {
            if f.error.kind() == io::ErrorKind::BrokenPipe && name == "-" {
                // The reader went away: nothing more goes to stdout. What the failed write held
                // is lost, and so is what was still queued for it; records after this are not
                // queued here (see `Output::write`).
                stats.dropped.inc_by(f.lost);
                shared.closed.store(true, Ordering::SeqCst);
                log::info!("output -: closed by its reader");
                let left = queued_left(&chunk);
                stats.queued.dec_by(left as i64);
                stats.dropped.inc_by(left);
                return;
            }
            fail(f);
        }
    }
    let give_up_now = || shared.abandon.load(Ordering::SeqCst);
    if let Err(f) = sink.finish(&give_up_now) {
        fail(f);
    }
    shared.pending.store(sink.pending(), Ordering::SeqCst);
    if sink.pending() > 0 {
        give_up(&*sink, &None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        fs::OpenOptions,
        os::unix::fs::{MetadataExt, OpenOptionsExt},
        path::Path,
    };

    use super::syslog::header_field;

    #[test]
    fn specs_parse_and_bad_ones_say_what_to_write() {
        assert_eq!("-".parse(), Ok(SinkSpec::Stdout));
        assert_eq!(
            "/var/log/x.jsonl".parse(),
            Ok(SinkSpec::File("/var/log/x.jsonl".into()))
        );
        assert_eq!(
            "syslog:///dev/log".parse(),
            Ok(SinkSpec::SyslogUnix("/dev/log".into()))
        );
        assert_eq!(
            "syslog+udp://127.0.0.1:514".parse(),
            Ok(SinkSpec::SyslogUdp("127.0.0.1:514".into()))
        );
        assert_eq!(
            "syslog+tcp://[::1]:6514".parse(),
            Ok(SinkSpec::SyslogTcp("[::1]:6514".into()))
        );
        let e = "syslog+tcp://host".parse::<SinkSpec>().unwrap_err();
        assert!(e.contains("syslog+tcp://HOST:PORT"), "{e}");
        let e = "syslog+tls://h:1".parse::<SinkSpec>().unwrap_err();
        assert!(e.contains("unknown syslog transport"), "{e}");
        for s in [
            "-",
            "syslog:///dev/log",
            "syslog+udp://h:1",
            "syslog+tcp://h:2",
        ] {
            assert_eq!(s.parse::<SinkSpec>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn rfc5424_header() {
        let line = Line {
            bytes: b"{\"a\":1}",
            name: "sendfile",
            severity: 6,
            timestamp: 1_795_322_042_051_880_948,
            caller: None,
        };
        let mut out = Vec::new();
        rfc5424(3, &line, &header_field("web 1\n", 255), "42", &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<30>1 2026-11-22T04:34:02.051880Z web1 sendfile-trace 42 sendfile - {\"a\":1}"
        );
    }

    fn line(n: usize) -> Line<'static> {
        static XS: [u8; 1024] = [b'x'; 1024];
        Line {
            bytes: &XS[..n],
            name: "sendfile",
            severity: 6,
            timestamp: 0,
            caller: None,
        }
    }

    #[test]
    fn files_rotate_by_size_and_keep_n() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let opts = SinkOptions {
            rotate_size: 100,
            rotate_keep: 2,
            facility: 3,
            host_name: "h".into(),
        };
        let mut f = RotatingFile::open(&path, &opts).unwrap();
        for _ in 0..10 {
            f.write(&line(39)).unwrap(); // 40 bytes a line: 2 per file
        }
        f.flush().unwrap();
        let len = |p: &Path| std::fs::metadata(p).unwrap().len();
        assert_eq!(len(&path), 80);
        // copytruncate: the file emptied under us is written from its new end, not rotated.
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.write(&line(39)).unwrap();
        f.write(&line(39)).unwrap();
        f.flush().unwrap();
        assert_eq!(len(&path), 80);
        // 4 rotations made FILE.1 … FILE.4; the newest 2 are kept.
        assert_eq!(len(&dir.path().join("events.jsonl.3")), 80);
        assert_eq!(len(&dir.path().join("events.jsonl.4")), 80);
        for n in [1, 2, 5] {
            assert!(
                !dir.path().join(format!("events.jsonl.{n}")).exists(),
                "{n}"
            );
        }
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A new run continues the numbering, and trims what is beyond `keep` at once.
        drop(f);
        std::fs::write(dir.path().join("events.jsonl.1"), "old\n").unwrap();
        let mut f = RotatingFile::open(&path, &opts).unwrap();
        assert!(!dir.path().join("events.jsonl.1").exists());
        f.write(&line(39)).unwrap();
        f.flush().unwrap();
        assert_eq!(len(&dir.path().join("events.jsonl.5")), 80);
        assert_eq!(len(&path), 40);
        assert!(!dir.path().join("events.jsonl.3").exists());
    }

    #[test]
    fn a_rotation_costs_the_same_whatever_keep_is() {
        // The work of a rotation is two renames/removals: a huge keep cannot make it spin.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.jsonl");
        let opts = SinkOptions {
            rotate_size: 40,
            rotate_keep: MAX_ROTATE_KEEP,
            facility: 3,
            host_name: "h".into(),
        };
        let mut f = RotatingFile::open(&path, &opts).unwrap();
        let t = std::time::Instant::now();
        for _ in 0..200 {
            f.write(&line(39)).unwrap();
        }
        f.flush().unwrap();
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 200);
        eprintln!(
            "200 rotations with keep {MAX_ROTATE_KEEP}: {:?}",
            t.elapsed()
        );
    }

    /// A file on a tmpfs of `kib` KiB (made here: the test runs as root).
    struct SmallFs(tempfile::TempDir);

    impl SmallFs {
        fn new(kib: u32) -> SmallFs {
            let dir = tempfile::tempdir().unwrap();
            nix::mount::mount(
                Some("tmpfs"),
                dir.path(),
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some(format!("size={kib}k").as_str()),
            )
            .expect("mounting a tmpfs (run the tests as root)");
            SmallFs(dir)
        }
    }

    impl Drop for SmallFs {
        fn drop(&mut self) {
            let _ = nix::mount::umount(self.0.path());
        }
    }

    #[test]
    fn a_full_disk_loses_no_record_uncounted_and_leaves_whole_lines() {
        let fs = SmallFs::new(64);
        let path = fs.0.path().join("events.jsonl");
        let opts = SinkOptions {
            rotate_size: 0,
            rotate_keep: 0,
            facility: 3,
            host_name: "h".into(),
        };
        let mut f = RotatingFile::open(&path, &opts).unwrap();
        let (mut lost, mut failures) = (0, 0);
        let total = 1000u64;
        for _ in 0..total {
            // 301 bytes a line: lines straddle the 4 KiB pages the disk fills by.
            if let Err(e) = f.write(&line(300)) {
                lost += e.lost;
                failures += 1;
            }
        }
        if let Err(e) = f.flush() {
            lost += e.lost;
            failures += 1;
        }
        let text = std::fs::read(&path).unwrap();
        assert!(failures > 0, "the disk did not fill");
        assert!(text.ends_with(b"\n"), "a torn line was left at the end");
        let lines = text.split(|&c| c == b'\n').filter(|l| !l.is_empty());
        let mut written = 0u64;
        for l in lines {
            assert_eq!(l.len(), 300, "every line whole");
            written += 1;
        }
        assert_eq!(written + lost, total, "{written} written, {lost} lost");
        eprintln!("{written} written, {lost} lost and counted, in {failures} failed writes");
    }

    #[test]
    fn dev_full_loses_every_record_counted() {
        // stdout is the sink that can be /dev/full; its flush path is the one the file uses.
        let mut b = Batch::new();
        for _ in 0..10 {
            b.push(&[b"{}", b"\n"]);
        }
        let mut full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let t = b.write_to(&mut full).unwrap_err();
        assert_eq!((t.lost, t.torn_bytes), (10, 0));
        assert_eq!(t.error.raw_os_error(), Some(libc::ENOSPC));
    }

    #[test]
    fn files_refuse_symlinks_and_fifos() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(open_log_file(&link).is_err());
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // No reader: refused at open (ENXIO) instead of blocking.
        assert!(open_log_file(&fifo).is_err());
        // With a reader: opened, then refused as not a regular file.
        let _reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let e = open_log_file(&fifo).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }
}
