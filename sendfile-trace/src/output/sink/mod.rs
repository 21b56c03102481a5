//! Sinks (`--output`, repeatable): stdout, a rotating file, syslog over a UNIX socket, UDP or TCP.
//!
//! Each sink runs on its own thread behind a bounded queue: the ring-buffer reader never waits
//! for a slow or absent sink. When a queue is full the record is dropped and counted; the daemon
//! reports those drops in-band as `events_lost` with `"reason":"sink"`.

use std::{
    fmt,
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    net::{TcpStream, ToSocketAddrs, UdpSocket},
    os::unix::{
        fs::{MetadataExt, OpenOptionsExt},
        net::UnixDatagram,
    },
    path::{Path, PathBuf},
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver, RecvTimeoutError},
    },
    time::{Duration, Instant},
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
#[derive(Debug)]
pub struct Line {
    /// The record, one line without its newline.
    pub bytes: Box<[u8]>,
    /// `eventName` (the syslog MSGID).
    pub name: &'static str,
    /// Syslog severity.
    pub severity: u8,
    /// Wall-clock ns.
    pub timestamp: u64,
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
    fn write(&mut self, line: &Line) -> io::Result<()>;
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
        SinkSpec::SyslogTcp(addr) => Box::new(Syslog::new(
            Transport::Tcp(Tcp {
                addr: addr.clone(),
                conn: None,
                backoff: Tcp::BACKOFF_MIN,
                next_attempt: Instant::now(),
            }),
            opts,
        )),
    })
}

fn resolve(addr: &str) -> io::Result<std::net::SocketAddr> {
    addr.to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other(format!("{addr} resolves to no address")))
}

/// Standard output, as lines.
struct Stdout {
    w: BufWriter<io::Stdout>,
}

impl Sink for Stdout {
    fn write(&mut self, line: &Line) -> io::Result<()> {
        self.w.write_all(&line.bytes)?;
        self.w.write_all(b"\n")
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// Opens `path` for appending: created mode 0600, never through a symlink (`O_NOFOLLOW`), and
/// refused unless it is a regular file (an attacker's FIFO or device is not written to).
pub fn open_log_file(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.file_type().is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    // Back to blocking writes now that we know it is a regular file.
    nix::fcntl::fcntl(
        &f,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_APPEND),
    )
    .map_err(io::Error::from)?;
    Ok(f)
}

/// A file rotated by size (`FILE` → `FILE.1` → … → `FILE.N`) and reopened on SIGHUP.
pub struct RotatingFile {
    path: PathBuf,
    w: BufWriter<File>,
    size: u64,
    rotate_size: u64,
    keep: u32,
}

impl RotatingFile {
    /// Opens (or creates) the file.
    pub fn open(path: &Path, opts: &SinkOptions) -> io::Result<RotatingFile> {
        let f = open_log_file(path)?;
        let size = f.metadata()?.size();
        Ok(RotatingFile {
            path: path.to_owned(),
            w: BufWriter::with_capacity(1 << 16, f),
            size,
            rotate_size: opts.rotate_size,
            keep: opts.rotate_keep,
        })
    }

    fn numbered(&self, n: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    /// Shifts `FILE.i` to `FILE.i+1` (dropping the oldest), `FILE` to `FILE.1`, opens a new one.
    fn rotate(&mut self) -> io::Result<()> {
        self.w.flush()?;
        if self.keep == 0 {
            std::fs::remove_file(&self.path).or_else(ignore_missing)?;
        } else {
            std::fs::remove_file(self.numbered(self.keep)).or_else(ignore_missing)?;
            for i in (1..self.keep).rev() {
                // rename(2) never follows a symlink in its last component.
                std::fs::rename(self.numbered(i), self.numbered(i + 1)).or_else(ignore_missing)?;
            }
            std::fs::rename(&self.path, self.numbered(1)).or_else(ignore_missing)?;
        }
        self.reopen()
    }
}

fn ignore_missing(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

impl Sink for RotatingFile {
    fn write(&mut self, line: &Line) -> io::Result<()> {
        let len = line.bytes.len() as u64 + 1;
        if self.rotate_size > 0 && self.size > 0 && self.size + len > self.rotate_size {
            // logrotate's copytruncate may have emptied the file behind our back: ask first.
            self.w.flush()?;
            self.size = self.w.get_ref().metadata()?.size();
            if self.size > 0 && self.size + len > self.rotate_size {
                self.rotate()?;
            }
        }
        self.w.write_all(&line.bytes)?;
        self.w.write_all(b"\n")?;
        self.size += len;
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
    fn reopen(&mut self) -> io::Result<()> {
        self.w.flush()?;
        let f = open_log_file(&self.path)?;
        self.size = f.metadata()?.size();
        self.w = BufWriter::with_capacity(1 << 16, f);
        Ok(())
    }
}

/// A TCP syslog connection that reconnects with exponential backoff.
struct Tcp {
    addr: String,
    conn: Option<BufWriter<TcpStream>>,
    backoff: Duration,
    next_attempt: Instant,
}

impl Tcp {
    const BACKOFF_MIN: Duration = Duration::from_millis(100);
    const BACKOFF_MAX: Duration = Duration::from_secs(30);

    fn connect(&mut self) -> io::Result<()> {
        let addr = resolve(&self.addr)?;
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        s.set_nodelay(true)?;
        self.conn = Some(BufWriter::with_capacity(1 << 16, s));
        self.backoff = Self::BACKOFF_MIN;
        Ok(())
    }

    fn failed(&mut self) {
        self.conn = None;
        self.next_attempt = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(Self::BACKOFF_MAX);
    }
}

enum Transport {
    Unix(UnixDatagram, PathBuf),
    Udp(UdpSocket),
    Tcp(Tcp),
}

/// RFC 5424 syslog over a datagram socket, UDP or TCP (RFC 6587 octet counting).
struct Syslog {
    transport: Transport,
    facility: u8,
    host_name: String,
    proc_id: String,
    buf: Vec<u8>,
}

/// The RFC 5424 HOSTNAME: printable US-ASCII, at most 255 characters, or `-`.
fn header_field(s: &str, max: usize) -> String {
    let clean: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if clean.is_empty() { "-".into() } else { clean }
}

impl Syslog {
    fn new(transport: Transport, opts: &SinkOptions) -> Syslog {
        Syslog {
            transport,
            facility: opts.facility,
            host_name: header_field(&opts.host_name, 255),
            proc_id: std::process::id().to_string(),
            buf: Vec::with_capacity(4096),
        }
    }
}

/// One RFC 5424 message: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG`.
pub fn rfc5424(
    facility: u8,
    line: &Line,
    host_name: &str,
    proc_id: &str,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let ts = jiff::Timestamp::from_nanosecond(line.timestamp as i128)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .unwrap_or_else(|_| "-".into());
    write!(
        out,
        "<{}>1 {ts} {host_name} sendfile-trace {proc_id} {} - ",
        u32::from(facility) * 8 + u32::from(line.severity),
        line.name
    )?;
    out.extend_from_slice(&line.bytes);
    Ok(())
}

impl Sink for Syslog {
    fn write(&mut self, line: &Line) -> io::Result<()> {
        self.buf.clear();
        rfc5424(
            self.facility,
            line,
            &self.host_name,
            &self.proc_id,
            &mut self.buf,
        )?;
        match &mut self.transport {
            Transport::Unix(sock, path) => sock.send_to(&self.buf, &*path).map(drop),
            Transport::Udp(sock) => sock.send(&self.buf).map(drop),
            Transport::Tcp(tcp) => {
                if tcp.conn.is_none() {
                    if let Err(e) = tcp.connect() {
                        tcp.failed();
                        return Err(e);
                    }
                    log::info!("syslog+tcp://{}: connected", tcp.addr);
                }
                let conn = tcp.conn.as_mut().expect("connected");
                let r =
                    write!(conn, "{} ", self.buf.len()).and_then(|()| conn.write_all(&self.buf));
                if r.is_err() {
                    tcp.failed();
                }
                r
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        if let Transport::Tcp(tcp) = &mut self.transport
            && let Some(c) = &mut tcp.conn
            && let Err(e) = c.flush()
        {
            tcp.failed();
            return Err(e);
        }
        Ok(())
    }
    fn ready(&mut self) -> bool {
        match &self.transport {
            Transport::Tcp(tcp) => tcp.conn.is_some() || Instant::now() >= tcp.next_attempt,
            _ => true,
        }
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

/// The sink thread: takes records from the queue until it closes, flushing whenever the queue
/// runs dry; a sink that cannot take records (TCP backing off) leaves them queued.
pub fn run(
    name: String,
    mut sink: Box<dyn Sink>,
    rx: Receiver<Arc<Line>>,
    stats: Arc<SinkStats>,
    hangup: Option<Hangup>,
    closed: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
) {
    let mut dirty = false;
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
                let left = rx.try_iter().count() as u64;
                stats.dropped.inc_by(left);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let line = if dirty {
            match rx.try_recv() {
                Ok(l) => Some(l),
                Err(std::sync::mpsc::TryRecvError::Empty) => None,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
            }
        } else {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(l) => Some(l),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        };
        let had_line = line.is_some();
        let result = match line {
            Some(l) => {
                stats.queued.dec();
                dirty = true;
                sink.write(&l)
            }
            None => {
                dirty = false;
                sink.flush()
            }
        };
        if let Err(e) = result {
            if e.kind() == io::ErrorKind::BrokenPipe && name == "-" {
                log::info!("output closed by its reader: stopping");
                closed.store(true, Ordering::Relaxed);
                return;
            }
            if had_line {
                // A failed write loses its record: it is not retried.
                stats.dropped.inc();
            }
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
            bytes: b"{\"a\":1}".to_vec().into(),
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

    fn line(n: usize) -> Line {
        Line {
            bytes: vec![b'x'; n].into(),
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
