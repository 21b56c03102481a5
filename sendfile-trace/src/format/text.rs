//! The human form: one line per record in the spirit of `strace -yy -t`.
//!
//! Every line parses back unambiguously, whatever bytes a process puts in its name, its paths or
//! its socket names: such strings are written in double quotes with [`escape_text`]'s escapes
//! (so a quote inside is `\"` and the string ends at the first bare `"`), bytes that are not
//! UTF-8 as `\xNN` (never replaced), and what the tracer knows about a path follows the closing
//! quote as markers: `"/srv/x" (deleted)`, `"/d9/d10/x.bin" (truncated)`,
//! `"/memfd:x (deleted)" (deleted pseudo)`, `"/etc/passwd" (detached)`, `"/x" (outside-root)`.
//! A file really named `x (deleted)` is `"x (deleted)"`, inside the quotes.

use std::fmt::Write as _;

use super::*;

/// Escapes a string for one line of text the way strace does: `\n`, `\t`, `\\`, `\"`, other
/// C0 controls and DEL as `\xNN` (C1 and other controls as `\u{NNNN}`), and the Unicode characters that
/// reorder or break a terminal line (bidi marks, line separators) as `\u{NNNN}`.
pub fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(&mut out, s);
    out
}

fn escape_into(out: &mut String, s: &str) {
    // Printable ASCII other than `\` and `"` stands for itself: the usual string in one copy.
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'\\' && b != b'"')
    {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            // C0 controls and DEL as \xNN; C1 controls as \u{NNNN}, so that \x80..\xff always
            // stand for raw bytes that are not UTF-8 (escape_bytes).
            c if (c as u32) < 0x80 && json::is_deceptive(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() || json::is_deceptive(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// Raw bytes as [`escape_text`] writes text, with each byte of an invalid UTF-8 sequence as
/// `\xNN` (distinct from a real U+FFFD, which stays as it is).
fn escape_bytes_into(out: &mut String, bytes: &[u8]) {
    for chunk in bytes.utf8_chunks() {
        escape_into(out, chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

/// The exact bytes of an attacker-controlled string: from its hex when it was not UTF-8.
fn exact<'a>(text: &'a str, hex: Option<&str>) -> std::borrow::Cow<'a, [u8]> {
    let decoded = hex.and_then(|h| {
        (0..h.len())
            .step_by(2)
            .map(|i| h.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
            .collect::<Option<Vec<u8>>>()
    });
    match decoded {
        Some(b) => b.into(),
        None => text.as_bytes().into(),
    }
}

/// An attacker-controlled string, quoted and escaped (see the module doc).
fn quoted_into(s: &mut String, text: &str, hex: Option<&str>) {
    s.push('"');
    match hex {
        None => escape_into(s, text),
        Some(_) => escape_bytes_into(s, &exact(text, hex)),
    }
    s.push('"');
}

fn text_endpoint_into(s: &mut String, end: &Option<Endpoint>) {
    match end {
        Some(Endpoint::Inet { ip, port }) if ip.contains(':') => {
            let _ = write!(s, "[{ip}]:{port}");
        }
        Some(Endpoint::Inet { ip, port }) => {
            s.push_str(ip);
            s.push(':');
            s.push_str(itoa::Buffer::new().format(*port));
        }
        Some(Endpoint::Unix { path, path_hex }) => quoted_into(s, path, path_hex.as_deref()),
        None => s.push('?'),
    }
}

/// A path, quoted, with its markers.
fn text_path_into(s: &mut String, p: &PathInfo) {
    quoted_into(s, &p.path, p.path_hex.as_deref());
    let marks: Vec<&str> = [
        (p.truncated, "truncated"),
        (p.deleted, "deleted"),
        (p.pseudo, "pseudo"),
        (p.detached, "detached"),
        (p.outside_root, "outside-root"),
    ]
    .into_iter()
    .filter_map(|(on, m)| on.then_some(m))
    .collect();
    if !marks.is_empty() {
        let _ = write!(s, " ({})", marks.join(" "));
    }
}

/// A descriptor as `strace -yy` shows it: `29<TCP:10.0.0.5:80->203.0.113.7:51234>`, with paths
/// and names quoted: `30<"/srv/a.jpg">`.
fn text_fd(fd: &FdInfo) -> String {
    let mut s = String::with_capacity(64);
    text_fd_into(&mut s, fd);
    s
}

fn text_fd_into(out: &mut String, fd: &FdInfo) {
    out.push_str(itoa::Buffer::new().format(fd.fd));
    if let FdKind::Unknown { .. } = fd.kind {
        return;
    }
    out.push('<');
    match &fd.kind {
        FdKind::File(p) | FdKind::Chardev(p) | FdKind::Other(p) => text_path_into(out, p),
        FdKind::Pipe { inode } => {
            let _ = write!(out, "pipe:[{inode}]");
        }
        FdKind::Socket(s) if is_inet(s) => {
            out.push_str(&s.protocol);
            if s.family == "AF_INET6" {
                out.push_str("v6");
            }
            out.push(':');
            text_endpoint_into(out, &s.local);
            out.push_str("->");
            text_endpoint_into(out, &s.remote);
        }
        FdKind::Socket(s) => {
            let _ = write!(
                out,
                "{}-{}:[",
                s.family.trim_start_matches("AF_"),
                s.protocol
            );
            text_endpoint_into(out, &s.local);
            out.push_str("->");
            text_endpoint_into(out, &s.remote);
            out.push(']');
        }
        FdKind::AnonInode { name } => {
            out.push_str("anon_inode:");
            quoted_into(out, name, None);
        }
        FdKind::Unknown { .. } => {}
    }
    out.push('>');
}

/// Local wall-clock time of day with milliseconds (`12:01:02.345`), as `strace -t` shows it.
fn time_of_day(ns: u64) -> String {
    match jiff::Timestamp::from_nanosecond(ns as i128) {
        Ok(t) => t
            .to_zoned(jiff::tz::TimeZone::system())
            .strftime("%H:%M:%S%.3f")
            .to_string(),
        Err(_) => "??:??:??.???".into(),
    }
}

/// A flow as one line: `nginx[4242] sendfile_flow#7(29<TCP:…>, 30</srv/a.jpg>) 12 calls
/// 262144 bytes, 1 failed {EAGAIN:1} [0]→[262144] 1.204s idle`.
fn text_flow(t: &str, f: &crate::event::flow::FlowEvent<'_>) -> String {
    let mut s = format!(
        "{t} {}[{}] sendfile_flow#{}({}, {}) {} calls {} bytes",
        escape_text(&f.process_name),
        f.host_process_id,
        f.flow_id,
        text_fd(&f.out_fd),
        text_fd(&f.in_fd),
        f.calls,
        f.bytes,
    );
    if f.failed_calls > 0 {
        let errnos: Vec<String> = f.errnos.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        let _ = write!(s, ", {} failed {{{}}}", f.failed_calls, errnos.join(","));
    }
    match (f.offset_first, f.offset_last) {
        (Some(a), Some(b)) => {
            let _ = write!(s, " [{a}]\u{2192}[{b}]");
        }
        (Some(a), None) => {
            let _ = write!(s, " [{a}]");
        }
        _ => {}
    }
    let secs = f.last_timestamp.saturating_sub(f.first_timestamp) as f64 / 1e9;
    let _ = write!(s, " {secs:.3}s {}", f.reason.name());
    if !f.is_final {
        let _ = write!(
            s,
            " (so far {} calls {} bytes)",
            f.total_calls, f.total_bytes
        );
    }
    if f.throttled {
        s.push_str(" throttled");
    }
    s
}

/// The record as one human-readable line.
pub fn text(rec: Record<'_>) -> String {
    let t = time_of_day(rec.timestamp());
    match rec {
        Record::Sendfile(e) => {
            let offset = match (e.args[2].value_u64(), e.offset_value, e.offset_after) {
                (0, _, _) => "NULL".to_string(),
                (_, Some(b), Some(a)) if b == a => format!("[{b}]"),
                (_, Some(b), Some(a)) => format!("[{b}]\u{2192}[{a}]"),
                (_, Some(b), None) => format!("[{b}]"),
                (ptr, None, _) => format!("{ptr:#x}"),
            };
            let result = match &e.errno {
                Some(name) => format!("-1 {name} ({})", errno_description(e.return_value)),
                None => e.return_value.to_string(),
            };
            let name = if e.context_flags.is_compat {
                e.syscall
            } else {
                "sendfile"
            };
            let mut s = String::with_capacity(256);
            s.push_str(&t);
            s.push(' ');
            quoted_into(&mut s, &e.process_name, e.process_name_hex.as_deref());
            let _ = write!(s, "[{}/{}] {name}(", e.host_process_id, e.host_thread_id);
            text_fd_into(&mut s, &e.out_fd);
            s.push_str(", ");
            text_fd_into(&mut s, &e.in_fd);
            let _ = write!(s, ", {offset}, {}) = {result}", e.args[3].value_u64());
            s
        }
        Record::Flow(f) => text_flow(&t, f),
        Record::Throttled(th) => format!(
            "{t} --- throttled {}[{}] past {} events/s: further calls folded into flows ---",
            escape_text(&th.process_name),
            th.host_process_id,
            th.limit
        ),
        Record::Start(s) => format!(
            "{t} --- tracer_start hook={} pid={} kernel={} ring_buffer={} version={} ---",
            s.hook,
            s.process_id,
            escape_text(s.kernel_release),
            s.ring_buffer_bytes,
            s.version
        ),
        Record::Lost(l) => match &l.sink {
            Some(sink) => format!(
                "{t} --- events_lost {} ({} {}) ---",
                l.lost,
                l.reason,
                escape_text(sink)
            ),
            None => format!("{t} --- events_lost {} ({}) ---", l.lost, l.reason),
        },
        Record::Stop(s) => format!(
            "{t} +++ tracer_stop {}: {} events, {} lost +++",
            s.reason, s.events, s.lost
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_descriptor_reads_like_strace() {
        let fd = |fd, kind| text_fd(&FdInfo { fd, kind });
        let sock = |family: &'static str, protocol: &'static str, local, remote| {
            FdKind::Socket(SocketInfo {
                family: family.into(),
                protocol: protocol.into(),
                inode: 1,
                local,
                remote,
            })
        };
        let inet = |ip: &str, port| {
            Some(Endpoint::Inet {
                ip: ip.into(),
                port,
            })
        };
        assert_eq!(fd(5, FdKind::Pipe { inode: 123 }), "5<pipe:[123]>");
        assert_eq!(
            fd(
                7,
                FdKind::Unknown {
                    reason: "not open".into()
                }
            ),
            "7"
        );
        assert_eq!(
            fd(
                8,
                FdKind::AnonInode {
                    name: "[event\"fd]".into()
                }
            ),
            "8<anon_inode:\"[event\\\"fd]\">"
        );
        let unix = Some(Endpoint::Unix {
            path: "/run/x\n".into(),
            path_hex: None,
        });
        assert_eq!(
            fd(9, sock("AF_UNIX", "STREAM", unix, None)),
            "9<UNIX-STREAM:[\"/run/x\\n\"->?]>"
        );
        assert_eq!(
            fd(
                10,
                sock("AF_INET6", "TCP", inet("::1", 80), inet("fe80::1", 5))
            ),
            "10<TCPv6:[::1]:80->[fe80::1]:5>"
        );
        assert_eq!(
            fd(-1, sock("AF_INET", "UDP", inet("0.0.0.0", 0), None)),
            "-1<UDP:0.0.0.0:0->?>"
        );
        let bad = Some(Endpoint::Unix {
            path: "\u{fffd}".into(),
            path_hex: Some("ff41".into()),
        });
        assert_eq!(
            fd(3, sock("AF_UNIX", "DGRAM", bad, None)),
            "3<UNIX-DGRAM:[\"\\xffA\"->?]>"
        );
    }
}
