//! Syslog sinks: RFC 5424 over a UNIX datagram socket, UDP, or TCP with octet counting (RFC 6587).

use std::{
    io::{self, BufWriter, Write},
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

/// A TCP syslog connection that reconnects with exponential backoff.
pub(super) struct Tcp {
    addr: String,
    conn: Option<BufWriter<TcpStream>>,
    backoff: Duration,
    next_attempt: Instant,
}

impl Tcp {
    const BACKOFF_MIN: Duration = Duration::from_millis(100);

    /// A connection to `addr`, made on the first write.
    pub(super) fn new(addr: String) -> Tcp {
        Tcp {
            addr,
            conn: None,
            backoff: Tcp::BACKOFF_MIN,
            next_attempt: Instant::now(),
        }
    }
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

pub(super) enum Transport {
    Unix(UnixDatagram, PathBuf),
    Udp(UdpSocket),
    Tcp(Tcp),
}

/// RFC 5424 syslog over a datagram socket, UDP or TCP (RFC 6587 octet counting).
pub(super) struct Syslog {
    transport: Transport,
    facility: u8,
    host_name: String,
    proc_id: String,
    buf: Vec<u8>,
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
    pub(super) fn new(transport: Transport, opts: &SinkOptions) -> Syslog {
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
    line: &Line<'_>,
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
    fn write(&mut self, line: &Line<'_>) -> io::Result<()> {
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
