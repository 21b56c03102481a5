//! The human form: one line per record in the spirit of `strace -yy -t`.

use std::fmt::Write as _;

use super::*;

/// Escapes a string for one line of text the way strace does: `\n`, `\t`, `\\`, `\"`, other
/// control characters as `\xNN` (or `\u{NNNN}` beyond Latin-1), and the Unicode characters that
/// reorder or break a terminal line (bidi overrides, line separators) as `\u{NNNN}`.
pub fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if (c as u32) < 0x100 && c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control()
                || matches!(c as u32, 0x200e | 0x200f | 0x202a..=0x202e | 0x2066..=0x2069
                    | 0x2028 | 0x2029 | 0x061c | 0xfeff) =>
            {
                let _ = write!(out, "\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

fn text_endpoint(end: &Option<Endpoint>) -> String {
    match end {
        Some(Endpoint::Inet { ip, port }) if ip.contains(':') => format!("[{ip}]:{port}"),
        Some(Endpoint::Inet { ip, port }) => format!("{ip}:{port}"),
        Some(Endpoint::Unix { path, .. }) => path.clone(),
        None => "?".into(),
    }
}

/// A descriptor as `strace -yy` shows it: `29<TCP:10.0.0.5:80->203.0.113.7:51234>`.
fn text_fd(fd: &FdInfo) -> String {
    let inner = match &fd.kind {
        FdKind::File(p) | FdKind::Chardev(p) | FdKind::Other(p) => {
            let deleted = if p.deleted { " (deleted)" } else { "" };
            format!("{}{deleted}", p.path)
        }
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
        FdKind::AnonInode { name } => format!("anon_inode:{name}"),
        FdKind::Unknown { .. } => return fd.fd.to_string(),
    };
    format!("{}<{}>", fd.fd, escape_text(&inner))
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
                escape_text(&e.process_name),
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
