//! Syslog sinks: RFC 5424 over a UNIX datagram socket, UDP, or TCP with octet counting (RFC 6587).

use std::{
    io::{self, Write},
    net::{TcpStream, ToSocketAddrs, UdpSocket},
    os::unix::net::UnixDatagram,
    path::PathBuf,
    time::{Duration, Instant},
};

use super::*;

pub(super) fn resolve(addr: &str) -> io::Result<std::net::SocketAddr> {
    addr.to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other(format!("{addr} resolves to no address")))
}

/// A TCP connection that reconnects with exponential backoff.
pub(super) struct Tcp {
    pub(super) addr: String,
    pub(super) conn: Option<TcpStream>,
    backoff: Duration,
    next_attempt: Instant,
}

impl Tcp {
    const BACKOFF_MIN: Duration = Duration::from_millis(100);
    const BACKOFF_MAX: Duration = Duration::from_secs(30);

    /// A connection to `addr`, made on the first write.
    pub(super) fn new(addr: String) -> Tcp {
        Tcp {
            addr,
            conn: None,
            backoff: Tcp::BACKOFF_MIN,
            next_attempt: Instant::now(),
        }
    }

    /// Connects now; `shared` keeps a handle to shut the connection down when giving up.
    pub(super) fn connect(&mut self, shared: &SinkShared) -> io::Result<&mut TcpStream> {
        let attempt = (|| {
            let addr = resolve(&self.addr)?;
            let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_write_timeout(Some(Duration::from_secs(5)))?;
            s.set_nodelay(true)?;
            Ok(s)
        })();
        match attempt {
            Ok(s) => {
                shared.set_socket(Some(s.as_fd()));
                self.backoff = Self::BACKOFF_MIN;
                Ok(self.conn.insert(s))
            }
            Err(e) => {
                self.failed(shared);
                Err(e)
            }
        }
    }

    /// Drops the connection and waits (exponential backoff) before the next attempt.
    pub(super) fn failed(&mut self, shared: &SinkShared) {
        self.conn = None;
        shared.set_socket(None);
        self.next_attempt = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(Self::BACKOFF_MAX);
    }

    /// Whether a record can be sent now (connected, or time to try again).
    pub(super) fn ready(&self) -> bool {
        self.conn.is_some() || Instant::now() >= self.next_attempt
    }
}

pub(super) enum Transport {
    Unix(UnixDatagram, PathBuf),
    Udp(UdpSocket),
    Tcp(Tcp, Batch),
}

/// The largest syslog message sent in one datagram (UNIX or UDP), header included: the default
/// `maxMessageSize` of rsyslog, which cuts longer messages without a mark. A longer record is
/// sent in its cut form (see `cut`).
pub const DATAGRAM_MAX: usize = 8192;

/// RFC 5424 syslog over a datagram socket, UDP or TCP (RFC 6587 octet counting).
pub(super) struct Syslog {
    transport: Transport,
    facility: u8,
    host_name: String,
    proc_id: String,
    buf: Vec<u8>,
    shared: Arc<SinkShared>,
    /// Records sent in their cut form so far.
    cut: u64,
}

/// The RFC 5424 HOSTNAME: printable US-ASCII, at most 255 characters, or `-`.
pub(super) fn header_field(s: &str, max: usize) -> String {
    let clean: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if clean.is_empty() { "-".into() } else { clean }
}

impl Syslog {
    pub(super) fn new(transport: Transport, opts: &SinkOptions, shared: Arc<SinkShared>) -> Syslog {
        Syslog {
            transport,
            facility: opts.facility,
            host_name: header_field(&opts.host_name, 255),
            proc_id: std::process::id().to_string(),
            buf: Vec::with_capacity(4096),
            shared,
            cut: 0,
        }
    }

    /// Sends one datagram; too large, it goes in its cut form (strings cut shorter and shorter)
    /// and, when even that does not fit, is dropped, counted and named in the loss report.
    fn send_datagram(&mut self, line: &Line) -> Result<(), Failure> {
        let send = |t: &Transport, buf: &[u8]| {
            if buf.len() > DATAGRAM_MAX {
                return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
            }
            match t {
                Transport::Unix(sock, path) => sock.send_to(buf, path).map(drop),
                Transport::Udp(sock) => sock.send(buf).map(drop),
                Transport::Tcp(..) => unreachable!("not a datagram transport"),
            }
        };
        let too_large = |e: &io::Error| e.raw_os_error() == Some(libc::EMSGSIZE);
        let mut err = match send(&self.transport, &self.buf) {
            Ok(()) => return Ok(()),
            Err(e) if too_large(&e) => e,
            Err(e) => return Err(Failure::new(e, 1)),
        };
        for max in [1024, 256, 64] {
            let Some(bytes) = cut::cut(line.bytes, max) else {
                break;
            };
            let cut_line = Line {
                bytes: &bytes,
                ..*line
            };
            self.buf.clear();
            rfc5424(
                self.facility,
                &cut_line,
                &self.host_name,
                &self.proc_id,
                &mut self.buf,
            )
            .map_err(|e| Failure::new(e, 1))?;
            match send(&self.transport, &self.buf) {
                Ok(()) => {
                    if self.cut == 0 {
                        log::warn!(
                            "a {} record of {} bytes does not fit a datagram: sent with strings \
                             cut to {max} bytes and marked in `cutToFit` (logged once)",
                            line.name,
                            line.bytes.len()
                        );
                    }
                    self.cut += 1;
                    return Ok(());
                }
                Err(e) if too_large(&e) => err = e,
                Err(e) => return Err(Failure::new(e, 1)),
            }
        }
        self.shared.unfit(line.identity());
        Err(Failure::new(err, 1))
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
    out.extend_from_slice(line.bytes);
    Ok(())
}

impl Sink for Syslog {
    fn write(&mut self, line: &Line) -> Result<(), Failure> {
        self.buf.clear();
        rfc5424(
            self.facility,
            line,
            &self.host_name,
            &self.proc_id,
            &mut self.buf,
        )
        .map_err(|e| Failure::new(e, 1))?;
        if !matches!(self.transport, Transport::Tcp(..)) {
            return self.send_datagram(line);
        }
        let frame_len = self.buf.len().to_string();
        let overflow = match &self.transport {
            Transport::Tcp(_, batch) => batch.would_overflow(frame_len.len() + 1 + self.buf.len()),
            _ => false,
        };
        let flushed = if overflow { self.flush() } else { Ok(()) };
        if let Transport::Tcp(_, batch) = &mut self.transport {
            batch.push(&[frame_len.as_bytes(), b" ", &self.buf]);
        }
        flushed
    }
    fn flush(&mut self) -> Result<(), Failure> {
        let Transport::Tcp(tcp, batch) = &mut self.transport else {
            return Ok(());
        };
        if batch.records() == 0 {
            return Ok(());
        }
        if tcp.conn.is_none() {
            match tcp.connect(&self.shared) {
                Ok(_) => log::info!("syslog+tcp://{}: connected", tcp.addr),
                Err(e) => {
                    // Not connected: the batch cannot go anywhere.
                    let lost = batch.records();
                    let _ = batch.write_to(&mut io::sink());
                    return Err(Failure::new(e, lost));
                }
            }
        }
        let conn = tcp.conn.as_mut().expect("connected");
        // Written to the socket is all plain TCP can know: what the peer had not read when the
        // connection broke is lost without a trace (use syslog+relp:// to know).
        let r = batch.write_to(conn);
        if r.is_err() {
            tcp.failed(&self.shared);
        }
        r.map_err(Failure::from)
    }
    fn pending(&self) -> u64 {
        match &self.transport {
            Transport::Tcp(_, batch) => batch.records(),
            _ => 0,
        }
    }
    fn ready(&mut self) -> bool {
        match &self.transport {
            Transport::Tcp(tcp, _) => tcp.ready(),
            _ => true,
        }
    }
}
