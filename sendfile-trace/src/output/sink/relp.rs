//! `syslog+relp://HOST:PORT`: RFC 5424 messages over RELP, the Reliable Event Logging Protocol
//! of rsyslog (`imrelp`). Each message carries a transaction number and stays held until the
//! receiver answers `rsp 200` for it; after a broken connection every unacknowledged message is
//! sent again on the next one (so the receiver may see a message twice, never zero times
//! without the tracer counting it). A message the receiver refuses, one sent
//! [`MAX_SENDS`] times without an answer, and what is still unacknowledged when the tracer
//! stops are dropped and counted.
//!
//! The sink thread never waits for the receiver while it has room to hold records: at most
//! [`WINDOW`] messages are on the wire, the rest wait in the hold (up to [`HOLD_BYTES`]), and
//! records keep coming off the queue into it while the receiver is slow, restarting or
//! unreachable. Only a full hold makes the sink wait (and its queue fill, then drop and count).
//!
//! The protocol is small (frames `TXNR SP COMMAND SP DATALEN [SP DATA] LF`; commands `open`,
//! `syslog`, `close`, answered by `rsp`; `serverclose` from the receiver) and no maintained Rust
//! crate implements its client, so it is written here (see docs/output-losses.md).

use std::{
    collections::VecDeque,
    io::{self, Read, Write},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use super::{syslog::Tcp, *};

/// Messages on the wire without an answer, at most. librelp's default is 128; this is larger
/// so that a backlog (held during an outage) drains in few round trips, and the window is
/// refilled only when half of it has been answered, in batches, so that answers trickling in
/// one by one do not make the two ends trade small packets (Nagle against delayed ACKs).
pub const WINDOW: usize = 1024;
/// Sends of one message (the first and re-sends after reconnects) before it is given up.
pub const MAX_SENDS: u32 = 5;
/// How long the receiver may take to answer before the connection is called broken.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// One step of a blocking read, so that giving up is noticed.
const READ_STEP: Duration = Duration::from_millis(100);
/// The largest transaction number (RELP wraps to 1 after it).
const TXNR_MAX: u32 = 999_999_999;
/// The largest answer frame accepted from the receiver.
const MAX_FRAME: usize = 1 << 16;
/// Message bytes held for the receiver while it is unreachable (about 50,000 records): during an
/// outage the sink keeps taking records from its queue into this hold, so a receiver restart
/// costs memory, not records. Beyond it the sink stops taking records and its queue
/// (`--queue-size`) fills, then drops and counts.
pub const HOLD_BYTES: usize = 64 << 20;

/// One message not acknowledged yet.
struct Unacked {
    /// Its transaction number in this session (meaningful only while in flight).
    txnr: u32,
    msg: Vec<u8>,
    /// Sessions it was sent in.
    sends: u32,
}

/// A RELP client session with reconnects.
pub(super) struct Relp {
    tcp: Tcp,
    facility: u8,
    host_name: String,
    proc_id: String,
    shared: Arc<SinkShared>,
    /// Every record not acknowledged yet, oldest first: the first `in_flight` were sent in this
    /// session and await their `rsp`; the others are held until the window has room.
    unacked: VecDeque<Unacked>,
    /// How many of `unacked` (at its front) are on the wire in this session.
    in_flight: usize,
    /// Bytes of the messages in `unacked`.
    held_bytes: usize,
    /// Frames to write.
    out: Vec<u8>,
    /// Bytes read from the receiver, not yet parsed.
    inbuf: Vec<u8>,
    txnr: u32,
    /// Since when the receiver owes an answer (the last answer, or the first send after none
    /// was in flight): [`ANSWER_TIMEOUT`] past it, the connection is called broken.
    waiting_since: Instant,
    /// Messages given up or refused outside `write`/`flush`, not reported yet.
    given_up: u64,
    /// The receiver is unreachable (said once per outage).
    down: bool,
}

impl Relp {
    pub(super) fn new(addr: String, opts: &SinkOptions, shared: Arc<SinkShared>) -> Relp {
        Relp {
            tcp: Tcp::new(addr),
            facility: opts.facility,
            host_name: syslog::header_field(&opts.host_name, 255),
            proc_id: std::process::id().to_string(),
            shared,
            unacked: VecDeque::new(),
            in_flight: 0,
            held_bytes: 0,
            out: Vec::new(),
            inbuf: Vec::new(),
            txnr: 1,
            waiting_since: Instant::now(),
            given_up: 0,
            down: false,
        }
    }

    /// Adds the messages given up since the last report to `r`.
    fn with_given_up(&mut self, r: Result<(), Failure>) -> Result<(), Failure> {
        let n = std::mem::take(&mut self.given_up);
        match r {
            Ok(()) if n == 0 => Ok(()),
            Ok(()) => Err(Failure::new(
                io::Error::other(format!(
                    "records refused, or given up after {MAX_SENDS} sends"
                )),
                n,
            )),
            Err(f) => Err(Failure::new(f.error, f.lost + n)),
        }
    }

    fn next_txnr(&mut self) -> u32 {
        let t = self.txnr;
        self.txnr = if t >= TXNR_MAX { 1 } else { t + 1 };
        t
    }

    fn frame(out: &mut Vec<u8>, txnr: u32, command: &str, data: &[u8]) {
        let _ = write!(out, "{txnr} {command} {}", data.len());
        if !data.is_empty() {
            out.push(b' ');
            out.extend_from_slice(data);
        }
        out.push(b'\n');
    }

    /// The connection broke: unacknowledged messages stay held for the next one.
    fn broken(&mut self) {
        self.tcp.failed(&self.shared);
        self.out.clear();
        self.inbuf.clear();
        self.in_flight = 0;
    }

    /// Connects and opens a session if there is none; re-sends what is unacknowledged. Returns
    /// the messages given up (sent [`MAX_SENDS`] times).
    fn ensure_open(&mut self) -> Result<u64, io::Error> {
        if self.tcp.conn.is_some() {
            return Ok(0);
        }
        self.tcp.connect(&self.shared)?;
        self.out.clear();
        self.inbuf.clear();
        self.txnr = 1;
        let opened = (|| {
            let conn = self.tcp.conn.as_mut().expect("connected");
            conn.set_read_timeout(Some(READ_STEP))?;
            let offer = format!(
                "relp_version=0\nrelp_software=sendfile-trace,{},-\ncommands=syslog",
                env!("CARGO_PKG_VERSION")
            );
            let txnr = self.next_txnr();
            let mut open = Vec::new();
            Self::frame(&mut open, txnr, "open", offer.as_bytes());
            self.tcp
                .conn
                .as_mut()
                .expect("connected")
                .write_all(&open)?;
            let deadline = Instant::now() + ANSWER_TIMEOUT;
            loop {
                if let Some((t, cmd, data)) = self.parse_one()? {
                    if t == txnr && cmd == "rsp" {
                        if data.starts_with(b"200") {
                            return Ok(());
                        }
                        return Err(io::Error::other(format!(
                            "the receiver refused the RELP session: {}",
                            String::from_utf8_lossy(&data).lines().next().unwrap_or("")
                        )));
                    }
                    continue;
                }
                if Instant::now() > deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no answer to the RELP open command",
                    ));
                }
                self.read_some(true)?;
            }
        })();
        if let Err(e) = opened {
            self.broken();
            return Err(e);
        }
        self.in_flight = 0;
        self.waiting_since = Instant::now();
        let before = self.unacked.len();
        let mut dropped_bytes = 0;
        self.unacked.retain(|u| {
            let keep = u.sends < MAX_SENDS;
            if !keep {
                dropped_bytes += u.msg.len();
            }
            keep
        });
        self.held_bytes -= dropped_bytes;
        let given_up = (before - self.unacked.len()) as u64;
        log::info!(
            "syslog+relp://{}: session open ({} unacknowledged records sent again{})",
            self.tcp.addr,
            self.unacked.len(),
            if given_up > 0 {
                format!(", {given_up} given up after {MAX_SENDS} sends")
            } else {
                String::new()
            }
        );
        Ok(given_up)
    }

    /// Frames held records while the window has room.
    fn pump(&mut self) {
        if self.in_flight > WINDOW / 2 {
            return;
        }
        if self.in_flight == 0 && !self.unacked.is_empty() {
            self.waiting_since = Instant::now();
        }
        while self.in_flight < WINDOW && self.in_flight < self.unacked.len() {
            let txnr = self.next_txnr();
            let u = &mut self.unacked[self.in_flight];
            u.txnr = txnr;
            u.sends += 1;
            Self::frame(&mut self.out, txnr, "syslog", &u.msg);
            self.in_flight += 1;
        }
    }

    /// Reads what the receiver sent: waiting up to [`READ_STEP`] if `wait`, else only what is
    /// there already.
    fn read_some(&mut self, wait: bool) -> io::Result<()> {
        let Some(conn) = self.tcp.conn.as_mut() else {
            return Ok(());
        };
        let mut chunk = [0u8; 4096];
        loop {
            let n = if wait {
                match conn.read(&mut chunk) {
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        return Ok(());
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            } else {
                // SAFETY: recv(2) into a stack buffer of the given length, on the open
                // connection's descriptor; MSG_DONTWAIT only makes this one call non-blocking.
                let n = unsafe {
                    libc::recv(
                        conn.as_raw_fd(),
                        chunk.as_mut_ptr().cast(),
                        chunk.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    match e.kind() {
                        io::ErrorKind::WouldBlock => return Ok(()),
                        io::ErrorKind::Interrupted => continue,
                        _ => return Err(e),
                    }
                }
                n as usize
            };
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the receiver closed the connection",
                ));
            }
            self.inbuf.extend_from_slice(&chunk[..n]);
            if self.inbuf.len() > MAX_FRAME * 4 || wait {
                return Ok(());
            }
        }
    }

    /// Parses one frame from what was read: `Ok(None)` if it is not all there yet.
    fn parse_one(&mut self) -> io::Result<Option<(u32, String, Vec<u8>)>> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("RELP: {what}"));
        let b = &self.inbuf;
        let Some(sp1) = b.iter().position(|&c| c == b' ') else {
            return if b.len() > 16 {
                Err(bad("no transaction number"))
            } else {
                Ok(None)
            };
        };
        let txnr: u32 = std::str::from_utf8(&b[..sp1])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad transaction number"))?;
        let rest = &b[sp1 + 1..];
        let Some(sp2) = rest.iter().position(|&c| c == b' ') else {
            return if rest.len() > 32 {
                Err(bad("no command"))
            } else {
                Ok(None)
            };
        };
        let cmd = String::from_utf8_lossy(&rest[..sp2]).into_owned();
        let rest = &rest[sp2 + 1..];
        let Some(end) = rest.iter().position(|&c| c == b' ' || c == b'\n') else {
            return if rest.len() > 10 {
                Err(bad("no data length"))
            } else {
                Ok(None)
            };
        };
        let len: usize = std::str::from_utf8(&rest[..end])
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&l| l <= MAX_FRAME)
            .ok_or_else(|| bad("bad data length"))?;
        let head = sp1 + 1 + sp2 + 1 + end;
        let (data, total) = if len == 0 {
            (Vec::new(), head + 1)
        } else {
            // SP DATA LF
            let start = head + 1;
            if b.len() < start + len + 1 {
                return Ok(None);
            }
            (b[start..start + len].to_vec(), start + len + 1)
        };
        if b.len() < total {
            return Ok(None);
        }
        if b[total - 1] != b'\n' {
            return Err(bad("frame without its trailer"));
        }
        self.inbuf.drain(..total);
        Ok(Some((txnr, cmd, data)))
    }

    /// Applies the answers read so far; returns the messages the receiver refused.
    fn take_answers(&mut self) -> io::Result<u64> {
        let mut refused = 0;
        while let Some((txnr, cmd, data)) = self.parse_one()? {
            match cmd.as_str() {
                "rsp" => {
                    // Only the ones in flight carry this session's numbers.
                    let Some(i) = self
                        .unacked
                        .iter()
                        .take(self.in_flight)
                        .position(|u| u.txnr == txnr)
                    else {
                        continue;
                    };
                    let u = self.unacked.remove(i).expect("an index found in it");
                    self.in_flight -= 1;
                    self.held_bytes -= u.msg.len();
                    self.waiting_since = Instant::now();
                    if !data.starts_with(b"200") {
                        refused += 1;
                        log::warn!(
                            "syslog+relp://{}: the receiver refused a record: {}",
                            self.tcp.addr,
                            String::from_utf8_lossy(&data).lines().next().unwrap_or("")
                        );
                    }
                }
                "serverclose" => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the receiver closed the RELP session",
                    ));
                }
                _ => {}
            }
        }
        Ok(refused)
    }

    /// On an open connection: sends what the window allows, takes the answers there (waiting up
    /// to [`READ_STEP`] for one if `wait` and some are in flight), and refills the window.
    /// Breaks the connection on an error or when the receiver owes an answer for longer than
    /// [`ANSWER_TIMEOUT`]; the records stay held either way.
    fn step(&mut self, wait: bool) -> Result<(), Failure> {
        let mut lost = 0;
        let result = (|| {
            self.pump();
            self.write_out()?;
            self.read_some(false)?;
            lost += self.take_answers()?;
            if wait && self.in_flight > 0 {
                self.read_some(true)?;
                self.read_some(false)?;
                lost += self.take_answers()?;
            }
            self.pump();
            self.write_out()?;
            if self.in_flight > 0 && self.waiting_since.elapsed() > ANSWER_TIMEOUT {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer from the receiver within {ANSWER_TIMEOUT:?}"),
                ));
            }
            Ok(())
        })();
        match result {
            Ok(()) if lost == 0 => Ok(()),
            Ok(()) => Err(Failure::new(io::Error::other("records refused"), lost)),
            Err(e) => {
                self.broken();
                Err(Failure::new(e, lost))
            }
        }
    }

    fn write_out(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            let conn = self.tcp.conn.as_mut().expect("open");
            conn.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }

    /// Connects and opens a session when the backoff allows; says a failure once per outage.
    fn connect(&mut self) {
        if self.tcp.conn.is_some() || !self.tcp.ready() {
            return;
        }
        match self.ensure_open() {
            Ok(given_up) => {
                // Reported with the next write or flush.
                self.given_up += given_up;
                self.down = false;
            }
            Err(e) => {
                if !self.down {
                    log::warn!(
                        "syslog+relp://{}: {e} ({} records held for the next session)",
                        self.tcp.addr,
                        self.unacked.len()
                    );
                }
                self.down = true;
            }
        }
    }
}

impl Sink for Relp {
    fn write(&mut self, line: &Line) -> Result<(), Failure> {
        let mut msg = Vec::with_capacity(line.bytes.len() + 96);
        rfc5424(
            self.facility,
            line,
            &self.host_name,
            &self.proc_id,
            &mut msg,
        )
        .map_err(|e| Failure::new(e, 1))?;
        // Held until acknowledged (sent again on the next session if need be); sent now when
        // the window has room, written in batches.
        self.held_bytes += msg.len();
        self.unacked.push_back(Unacked {
            txnr: 0,
            msg,
            sends: 0,
        });
        let mut result = Ok(());
        if self.tcp.conn.is_some() {
            self.pump();
            if self.out.len() >= Batch::CAPACITY || self.in_flight >= WINDOW {
                result = self.step(false);
            }
        }
        self.with_given_up(result)
    }
    fn flush(&mut self) -> Result<(), Failure> {
        let r = if self.tcp.conn.is_some() {
            self.step(true)
        } else {
            Ok(())
        };
        self.with_given_up(r)
    }
    fn pending(&self) -> u64 {
        self.unacked.len() as u64
    }
    fn finish(&mut self, give_up: &dyn Fn() -> bool) -> Result<(), Failure> {
        let mut lost = std::mem::take(&mut self.given_up);
        let mut last = None;
        while !self.unacked.is_empty() && !give_up() {
            if self.tcp.conn.is_none() {
                if !self.tcp.ready() {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                match self.ensure_open() {
                    Ok(n) => lost += n,
                    Err(e) => {
                        last = Some(e);
                        continue;
                    }
                }
            }
            if let Err(f) = self.step(true) {
                lost += f.lost;
                last = Some(f.error);
            }
        }
        if self.unacked.is_empty() && self.tcp.conn.is_some() {
            // A polite close; the receiver's answer is not waited for.
            let mut close = Vec::new();
            let txnr = self.next_txnr();
            Self::frame(&mut close, txnr, "close", b"");
            if let Some(conn) = self.tcp.conn.as_mut() {
                let _ = conn.write_all(&close);
            }
        }
        match last {
            _ if lost == 0 => Ok(()),
            Some(e) => Err(Failure::new(e, lost)),
            None => Err(Failure::new(io::Error::other("records refused"), lost)),
        }
    }
    /// Connected or not, the sink takes records while its hold has room ([`HOLD_BYTES`]); a
    /// full hold waits here for answers (connected) or for the next attempt to connect.
    fn ready(&mut self) -> bool {
        self.connect();
        if self.held_bytes >= HOLD_BYTES
            && self.tcp.conn.is_some()
            && let Err(f) = self.step(true)
        {
            self.given_up += f.lost;
            log::warn!("syslog+relp://{}: {}", self.tcp.addr, f.error);
        }
        self.held_bytes < HOLD_BYTES
    }
}
