//! Sinks (`--output`, repeatable): stdout, a rotating file, syslog over a UNIX socket, UDP or TCP.
//!
//! Each sink runs on its own thread behind a bounded queue: the ring-buffer reader never waits
//! for a slow or absent sink. When a queue is full the record is dropped and counted; the daemon
//! reports those drops in-band as `events_lost` with `"reason":"sink"`.

mod file;
mod syslog;

use self::syslog::{Syslog, Tcp, Transport, resolve};
pub use self::{
    file::{RotatingFile, open_log_file},
    syslog::rfc5424,
};

use std::{
    fmt,
    io::{self, BufWriter, Write},
    net::UdpSocket,
    os::unix::net::UnixDatagram,
    path::PathBuf,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
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
        } else if s.starts_with("syslog") && s.contains("://") {
            Err(format!(
                "`{s}`: unknown syslog transport: use syslog:///dev/log, syslog+udp://HOST:PORT \
                 or syslog+tcp://HOST:PORT"
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
        }
    }
}

/// One formatted record on its way to the sinks.
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
}

/// Records rendered once, one after another in one buffer (each followed by its newline), with
/// what syslog needs of each: the unit the output hands to every sink's queue, so that a file
/// or stdout takes a whole batch in one write.
#[derive(Debug, Default)]
pub struct Batch {
    bytes: Vec<u8>,
    lines: Vec<LineMeta>,
}

/// Where a record ends in its batch, and its syslog header facts.
#[derive(Debug)]
struct LineMeta {
    /// Offset of its newline in the batch.
    end: usize,
    name: &'static str,
    severity: u8,
    timestamp: u64,
}

impl Batch {
    /// An empty batch with room for `bytes` bytes.
    pub fn with_capacity(bytes: usize) -> Batch {
        Batch {
            bytes: Vec::with_capacity(bytes),
            lines: Vec::with_capacity(bytes / 512),
        }
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Bytes held (newlines included).
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// Appends one record: `render` writes it (one line, no newline) at the end of the buffer; on
    /// error the buffer is left as it was.
    pub fn push<E>(
        &mut self,
        name: &'static str,
        severity: u8,
        timestamp: u64,
        render: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        let start = self.bytes.len();
        if let Err(e) = render(&mut self.bytes) {
            self.bytes.truncate(start);
            return Err(e);
        }
        self.lines.push(LineMeta {
            end: self.bytes.len(),
            name,
            severity,
            timestamp,
        });
        self.bytes.push(b'\n');
        Ok(())
    }

    /// Offset where record `i` starts.
    fn start(&self, i: usize) -> usize {
        match i {
            0 => 0,
            i => self.lines[i - 1].end + 1,
        }
    }

    /// Record `i`, without its newline.
    pub fn line(&self, i: usize) -> Line<'_> {
        let m = &self.lines[i];
        Line {
            bytes: &self.bytes[self.start(i)..m.end],
            name: m.name,
            severity: m.severity,
            timestamp: m.timestamp,
        }
    }

    /// Records `from..` as they go into a file: each followed by its newline.
    pub fn lines_from(&self, from: usize) -> &[u8] {
        &self.bytes[self.start(from).min(self.bytes.len())..]
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
pub trait Sink: Send {
    /// Takes one record (buffered writes are fine).
    fn write(&mut self, line: &Line<'_>) -> io::Result<()>;
    /// Takes records `from..` of a batch in one go if this sink can (files and stdout, whose
    /// records are just lines); `None` makes the caller hand them over one by one.
    fn write_lines(&mut self, _batch: &Batch, _from: usize) -> Option<io::Result<()>> {
        None
    }
    /// Pushes buffered records out; called when the queue is empty.
    fn flush(&mut self) -> io::Result<()>;
    /// Reopens after SIGHUP (files); a no-op elsewhere.
    fn reopen(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Whether the sink can take a record now (false while a TCP sink waits to reconnect).
    fn ready(&mut self) -> bool {
        true
    }
}

/// Opens the sink `spec` names (files are created now, so a bad path fails at start).
pub fn open(spec: &SinkSpec, opts: &SinkOptions) -> io::Result<Box<dyn Sink>> {
    Ok(match spec {
        SinkSpec::Stdout => Box::new(Stdout {
            w: BufWriter::with_capacity(1 << 16, io::stdout()),
        }),
        SinkSpec::File(path) => Box::new(RotatingFile::open(path, opts)?),
        SinkSpec::SyslogUnix(path) => Box::new(Syslog::new(
            Transport::Unix(UnixDatagram::unbound()?, path.clone()),
            opts,
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
            Box::new(Syslog::new(Transport::Udp(sock), opts))
        }
        SinkSpec::SyslogTcp(addr) => {
            Box::new(Syslog::new(Transport::Tcp(Tcp::new(addr.clone())), opts))
        }
    })
}

/// Standard output, as lines.
struct Stdout {
    w: BufWriter<io::Stdout>,
}

impl Sink for Stdout {
    fn write(&mut self, line: &Line<'_>) -> io::Result<()> {
        self.w.write_all(line.bytes)?;
        self.w.write_all(b"\n")
    }
    fn write_lines(&mut self, batch: &Batch, from: usize) -> Option<io::Result<()>> {
        Some(self.w.write_all(batch.lines_from(from)))
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// Sets by SIGHUP; file sinks reopen when they see it.
#[derive(Clone, Debug)]
pub struct Hangup(pub Arc<AtomicBool>);

/// Counts errors without flooding stderr: the first, then one in a thousand.
fn log_error(name: &str, stats: &SinkStats, e: &io::Error) {
    let n = stats.errors.inc();
    if n.is_multiple_of(1000) {
        log::warn!(
            "output {name}: {e} ({} errors so far; records are dropped and counted)",
            n + 1
        );
    }
}

/// The sink thread: takes batches from the queue until it closes, flushing whenever the queue
/// runs dry; a sink that cannot take records (TCP backing off) leaves them queued.
pub fn run(
    name: String,
    mut sink: Box<dyn Sink>,
    rx: Receiver<Arc<Batch>>,
    stats: Arc<SinkStats>,
    hangup: Option<Hangup>,
    closed: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
) {
    let mut dirty = false;
    // A batch being written and the first of its records not yet taken by the sink.
    let mut pending: Option<(Arc<Batch>, usize)> = None;
    loop {
        if let Some(h) = &hangup
            && h.0.swap(false, Ordering::Relaxed)
        {
            match sink.reopen() {
                Ok(()) => log::info!("output {name}: reopened on SIGHUP"),
                Err(e) => log_error(&name, &stats, &e),
            }
        }
        if !sink.ready() {
            if stopping.load(Ordering::Relaxed) {
                // Shutting down with no connection: what is queued is lost, and counted.
                let held = pending.map_or(0, |(b, from)| b.len() - from);
                let left = held + rx.try_iter().map(|b| b.len()).sum::<usize>();
                stats.dropped.inc_by(left as u64);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        if pending.is_none() {
            pending = if dirty {
                match rx.try_recv() {
                    Ok(b) => Some((b, 0)),
                    Err(std::sync::mpsc::TryRecvError::Empty) => None,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
                }
            } else {
                match rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(b) => Some((b, 0)),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            };
        }
        let (taken, result) = match pending.take() {
            None => {
                dirty = false;
                (0, sink.flush())
            }
            Some((batch, from)) => {
                dirty = true;
                let (taken, result) = match sink.write_lines(&batch, from) {
                    Some(r) => (batch.len() - from, r),
                    None => (1, sink.write(&batch.line(from))),
                };
                stats.queued.dec_by(taken as i64);
                if from + taken < batch.len() {
                    pending = Some((batch, from + taken));
                }
                (taken, result)
            }
        };
        if let Err(e) = result {
            if e.kind() == io::ErrorKind::BrokenPipe && name == "-" {
                log::info!("output closed by its reader: stopping");
                closed.store(true, Ordering::Relaxed);
                return;
            }
            // A failed write loses its records: they are not retried.
            stats.dropped.inc_by(taken as u64);
            log_error(&name, &stats, &e);
        }
    }
    if let Err(e) = sink.flush() {
        log_error(&name, &stats, &e);
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
        };
        let mut out = Vec::new();
        rfc5424(3, &line, &header_field("web 1\n", 255), "42", &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<30>1 2026-11-22T04:34:02.051880Z web1 sendfile-trace 42 sendfile - {\"a\":1}"
        );
    }

    fn line(n: usize) -> Line<'static> {
        Line {
            bytes: vec![b'x'; n].leak(),
            name: "sendfile",
            severity: 6,
            timestamp: 0,
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
        assert_eq!(len(&dir.path().join("events.jsonl.1")), 80);
        assert_eq!(len(&dir.path().join("events.jsonl.2")), 80);
        assert!(!dir.path().join("events.jsonl.3").exists());
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
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
