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
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        escape_into(&mut out, chunk.valid());
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
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
fn quoted(text: &str, hex: Option<&str>) -> String {
    format!("\"{}\"", escape_bytes(&exact(text, hex)))
}

fn text_endpoint(end: &Option<Endpoint>) -> String {
    match end {
        Some(Endpoint::Inet { ip, port }) if ip.contains(':') => format!("[{ip}]:{port}"),
        Some(Endpoint::Inet { ip, port }) => format!("{ip}:{port}"),
        Some(Endpoint::Unix { path, path_hex }) => quoted(path, path_hex.as_deref()),
        None => "?".into(),
    }
}

/// A path, quoted, with its markers.
fn text_path(p: &PathInfo) -> String {
    let mut s = quoted(&p.path, p.path_hex.as_deref());
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
    s
}

/// A descriptor as `strace -yy` shows it: `29<TCP:10.0.0.5:80->203.0.113.7:51234>`, with paths
/// and names quoted: `30<"/srv/a.jpg">`.
fn text_fd(fd: &FdInfo) -> String {
    let inner = match &fd.kind {
        FdKind::File(p) | FdKind::Chardev(p) | FdKind::Other(p) => text_path(p),
        FdKind::Pipe { inode } => format!("pipe:[{inode}]"),
        FdKind::Socket(s) if is_inet(s) => format!(
            "{}{}:{}->{}",
            s.protocol,
            if s.family == "AF_INET6" { "v6" } else { "" },
            text_endpoint(&s.local),
            text_endpoint(&s.remote)
        ),
        FdKind::Socket(s) => format!(
            "{}-{}:[{}->{}]",
            s.family.trim_start_matches("AF_"),
            s.protocol,
            text_endpoint(&s.local),
            text_endpoint(&s.remote)
        ),
        FdKind::AnonInode { name } => format!("anon_inode:{}", quoted(name, None)),
        FdKind::Unknown { .. } => return fd.fd.to_string(),
    };
    format!("{}<{inner}>", fd.fd)
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
            format!(
                "{t} {}[{}/{}] {name}({}, {}, {offset}, {}) = {result}",
                quoted(&e.process_name, e.process_name_hex.as_deref()),
                e.host_process_id,
                e.host_thread_id,
                text_fd(&e.out_fd),
                text_fd(&e.in_fd),
                e.args[3].value_u64(),
            )
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
