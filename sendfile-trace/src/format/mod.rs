//! Output formats (`--format`): the tracee JSON contract, Elastic Common Schema 8.x, OCSF 1.2
//! and a one-line human form in the spirit of `strace -yy`.
//!
//! Every format renders one record as exactly one line (no newline inside), whatever bytes a
//! process puts in its name or a path: JSON formats escape every string through
//! [`json::write_str`] (serde_json's escapes, and the deceptive characters as `\u` escapes),
//! the text format escapes control and bidirectional characters the way strace does. The calls
//! of the JSON formats are written by hand (`direct`), byte for byte what their `Serialize`
//! path ([`Format::render_serde`]) writes; the other records go through serde.

mod direct;
mod ecs;
pub mod json;
mod ocsf;
mod text;
mod tracee;

pub use self::{
    ecs::ecs,
    ocsf::ocsf,
    text::{escape_text, text},
};

use std::io;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    event::flow::{FlowEvent, Throttled},
    event::lifecycle::{EventsLost, TracerStart, TracerStop},
    event::{Endpoint, FdInfo, FdKind, PathInfo, SendfileEvent, SocketInfo},
};

/// ECS version the `ecs` format follows.
pub const ECS_VERSION: &str = "8.17.0";
/// OCSF version the `ocsf` format follows.
pub const OCSF_VERSION: &str = "1.2.0";

/// An output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The JSON contract (Tracee's field names); the default when stdout is not a terminal.
    Tracee,
    /// Elastic Common Schema 8.x JSON.
    Ecs,
    /// OCSF 1.x JSON: File System Activity (1001), or Network Activity (4001) for sockets.
    Ocsf,
    /// One readable line per call, like `strace -yy`; the default on a terminal.
    Text,
}

impl Format {
    /// The format to use when none is asked for: `text` on a terminal, `tracee` otherwise.
    pub fn default_for_stdout() -> Format {
        if io::IsTerminal::is_terminal(&io::stdout()) {
            Format::Text
        } else {
            Format::Tracee
        }
    }
}

/// Any record of the stream, borrowed.
#[derive(Clone, Copy, Debug)]
pub enum Record<'r> {
    /// One sendfile call.
    Sendfile(&'r SendfileEvent<'r>),
    /// The tracer started.
    Start(&'r TracerStart<'r>),
    /// Events were lost.
    Lost(&'r EventsLost),
    /// The tracer stopped.
    Stop(&'r TracerStop<'r>),
    /// The calls of one flow (`--mode flows`, or folded by the rate limit).
    Flow(&'r FlowEvent<'r>),
    /// A process went past `--max-events-per-process`.
    Throttled(&'r Throttled<'r>),
}

/// Records that can be written to the output.
pub trait AsRecord {
    /// This record, for the formatters.
    fn as_record(&self) -> Record<'_>;
}

impl AsRecord for SendfileEvent<'_> {
    fn as_record(&self) -> Record<'_> {
        Record::Sendfile(self)
    }
}
impl AsRecord for TracerStart<'_> {
    fn as_record(&self) -> Record<'_> {
        Record::Start(self)
    }
}
impl AsRecord for EventsLost {
    fn as_record(&self) -> Record<'_> {
        Record::Lost(self)
    }
}
impl AsRecord for TracerStop<'_> {
    fn as_record(&self) -> Record<'_> {
        Record::Stop(self)
    }
}
impl AsRecord for FlowEvent<'_> {
    fn as_record(&self) -> Record<'_> {
        Record::Flow(self)
    }
}
impl AsRecord for Throttled<'_> {
    fn as_record(&self) -> Record<'_> {
        Record::Throttled(self)
    }
}

/// Syslog severities used for the records (RFC 5424 numbers).
pub mod severity {
    /// A record about lost events.
    pub const WARNING: u8 = 4;
    /// A failed call, or the tracer starting and stopping.
    pub const NOTICE: u8 = 5;
    /// A successful call.
    pub const INFO: u8 = 6;
}

impl Record<'_> {
    /// The record's `eventName` (`sendfile`, `tracer_start`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Record::Sendfile(_) => "sendfile",
            Record::Start(_) => "tracer_start",
            Record::Lost(_) => "events_lost",
            Record::Stop(_) => "tracer_stop",
            Record::Flow(_) => "sendfile_flow",
            Record::Throttled(_) => "throttled",
        }
    }

    /// Wall-clock ns since the epoch.
    pub fn timestamp(&self) -> u64 {
        match self {
            Record::Sendfile(e) => e.timestamp,
            Record::Start(s) => s.timestamp,
            Record::Lost(l) => l.timestamp,
            Record::Stop(s) => s.timestamp,
            Record::Flow(f) => f.timestamp,
            Record::Throttled(t) => t.timestamp,
        }
    }

    /// Its syslog severity.
    pub fn severity(&self) -> u8 {
        match self {
            Record::Sendfile(e) if e.errno.is_some() => severity::NOTICE,
            Record::Sendfile(_) => severity::INFO,
            Record::Lost(_) | Record::Throttled(_) => severity::WARNING,
            Record::Flow(f) if f.failed_calls > 0 => severity::NOTICE,
            Record::Flow(_) => severity::INFO,
            Record::Start(_) | Record::Stop(_) => severity::NOTICE,
        }
    }
}

impl Format {
    /// Appends one record as one line (without the trailing newline) to `out`.
    pub fn render(&self, rec: Record<'_>, out: &mut Vec<u8>) -> serde_json::Result<()> {
        match self {
            // The calls (the hot record) through the hand-written writers of `direct`, which
            // write the bytes of the `Serialize` path below (the tests compare the two); the
            // other records through serde.
            Format::Tracee => match rec {
                Record::Sendfile(e) => {
                    direct::tracee(e, out);
                    Ok(())
                }
                _ => tracee::write(rec, out),
            },
            Format::Ecs => match rec {
                Record::Sendfile(e) => {
                    direct::ecs(e, out);
                    Ok(())
                }
                _ => json::write(out, &ecs(rec)),
            },
            Format::Ocsf => match rec {
                Record::Sendfile(e) => {
                    direct::ocsf(e, out);
                    Ok(())
                }
                _ => json::write(out, &ocsf(rec)),
            },
            Format::Text => {
                out.extend_from_slice(text(rec).as_bytes());
                Ok(())
            }
        }
    }
}

impl Format {
    /// Appends one record as [`Format::render`] does, every record through serde (each record's
    /// own `Serialize`, or the typed ECS and OCSF documents): the reference the hand-written
    /// writers of the calls are tested against, byte for byte.
    pub fn render_serde(&self, rec: Record<'_>, out: &mut Vec<u8>) -> serde_json::Result<()> {
        match (self, rec) {
            (Format::Tracee, Record::Sendfile(e)) => json::write_reference(out, e),
            (Format::Ecs, Record::Sendfile(e)) => json::write_reference(out, &ecs::EcsDoc::of(e)),
            (Format::Ocsf, Record::Sendfile(e)) => {
                json::write_reference(out, &ocsf::OcsfDoc::of(e))
            }
            _ => self.render(rec, out),
        }
    }
}

/// RFC 3339 UTC with nanoseconds, e.g. `2026-11-22T05:27:09.123456789Z`.
pub fn rfc3339(ns: u64) -> String {
    match jiff::Timestamp::from_nanosecond(ns as i128) {
        Ok(t) => t.strftime("%Y-%m-%dT%H:%M:%S%.9fZ").to_string(),
        Err(_) => "1970-01-01T00:00:00.000000000Z".into(),
    }
}

/// `strerror`-like description of an errno name, for the human forms.
fn errno_description(ret: i64) -> String {
    if (-4095..0).contains(&ret) {
        let s = io::Error::from_raw_os_error((-ret) as i32).to_string();
        match s.split_once(" (os error") {
            Some((desc, _)) => desc.to_owned(),
            None => s,
        }
    } else {
        String::new()
    }
}

/// The path of a descriptor that has one.
fn path_of(fd: &FdInfo) -> Option<&PathInfo> {
    match &fd.kind {
        FdKind::File(p) | FdKind::Chardev(p) | FdKind::Other(p) => Some(p),
        _ => None,
    }
}

fn socket_of(fd: &FdInfo) -> Option<&SocketInfo> {
    match &fd.kind {
        FdKind::Socket(s) => Some(s),
        _ => None,
    }
}

/// The `type` tag of a descriptor in the tracee contract (`file`, `socket`, ...).
fn fd_type(fd: &FdInfo) -> &'static str {
    match fd.kind {
        FdKind::File(_) => "file",
        FdKind::Chardev(_) => "chardev",
        FdKind::Other(_) => "other",
        FdKind::Pipe { .. } => "pipe",
        FdKind::Socket(_) => "socket",
        FdKind::AnonInode { .. } => "anon_inode",
        FdKind::Unknown { .. } => "unknown",
    }
}

/// Whether a socket is IP (source/destination mapping applies).
fn is_inet(s: &SocketInfo) -> bool {
    s.family == "AF_INET" || s.family == "AF_INET6"
}

/// A path as the flat schemas' `file.path` / `process.executable` carry it: a truncated one
/// (the leaf end of a longer path) starts with `...`, so it cannot pass for an absolute path.
fn shown_path(path: &str, truncated: bool) -> std::borrow::Cow<'_, str> {
    if truncated {
        format!("...{path}").into()
    } else {
        path.into()
    }
}

/// Base name of a path.
fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The sendfile-specific fields, shared by ECS (`sendfile.*`) and OCSF (`unmapped.sendfile`).
fn sendfile_details(e: &SendfileEvent<'_>) -> Value {
    let mut d = json!({
        "syscall": e.syscall,
        "syscall_nr": e.syscall_nr,
        "out_fd": e.out_fd.fd,
        "in_fd": e.in_fd.fd,
        "out_fd_type": fd_type(&e.out_fd),
        "in_fd_type": fd_type(&e.in_fd),
        "offset_ptr": e.args[2].value_u64(),
        "offset_before": e.offset_value,
        "offset_after": e.offset_after,
        "count": e.args[3].value_u64(),
        "return_value": e.return_value,
        "bytes": (e.return_value >= 0).then_some(e.return_value),
        "compat": e.context_flags.is_compat,
        "hook": e.hook,
        "cpu": e.processor_id,
        "cgroup_id": e.cgroup_id,
        "schema_version": e.schema_version,
    });
    let m = d.as_object_mut().expect("object");
    if let Some(hex) = &e.process_name_hex {
        m.insert("process_name_hex".into(), json!(hex));
    }
    // What the output is when it is not a socket or file (pipe inode, anon inode name, ...).
    for (key, fd) in [("out", &e.out_fd), ("in", &e.in_fd)] {
        let v = serde_json::to_value(fd).unwrap_or(Value::Null);
        m.insert(format!("{key}_fd_info"), v);
    }
    d
}

// ---------------------------------------------------------------------------------------------
// Typed documents: the hot path. Borrowed structs whose fields are declared in the order the
// tree above serializes them (serde_json's map sorts keys), so the bytes are the same; a unit
// test compares the two for every kind of descriptor.

/// The fields shared by ECS (`sendfile.*`) and OCSF (`unmapped.sendfile`), keys in sorted order.
#[derive(Serialize)]
pub(super) struct Details<'a> {
    bytes: Option<i64>,
    cgroup_id: u64,
    compat: bool,
    count: u64,
    cpu: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    gid: Option<u32>,
    hook: &'a str,
    in_fd: i32,
    in_fd_info: SortedFd<'a>,
    in_fd_type: &'static str,
    offset_after: Option<i64>,
    offset_before: Option<i64>,
    offset_ptr: u64,
    out_fd: i32,
    out_fd_info: SortedFd<'a>,
    out_fd_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    process_name_hex: Option<&'a str>,
    return_value: i64,
    schema_version: u32,
    syscall: &'a str,
    syscall_nr: u32,
}

impl<'a> Details<'a> {
    /// The details of `e`, with `gid` (OCSF) or without (ECS).
    pub(super) fn of(e: &'a SendfileEvent<'a>, gid: Option<u32>) -> Details<'a> {
        Details {
            bytes: (e.return_value >= 0).then_some(e.return_value),
            cgroup_id: e.cgroup_id,
            compat: e.context_flags.is_compat,
            count: e.args[3].value_u64(),
            cpu: e.processor_id,
            gid,
            hook: e.hook,
            in_fd: e.in_fd.fd,
            in_fd_info: SortedFd(&e.in_fd),
            in_fd_type: fd_type(&e.in_fd),
            offset_after: e.offset_after,
            offset_before: e.offset_value,
            offset_ptr: e.args[2].value_u64(),
            out_fd: e.out_fd.fd,
            out_fd_info: SortedFd(&e.out_fd),
            out_fd_type: fd_type(&e.out_fd),
            process_name_hex: e.process_name_hex.as_deref(),
            return_value: e.return_value,
            schema_version: e.schema_version,
            syscall: e.syscall,
            syscall_nr: e.syscall_nr,
        }
    }
}

/// A descriptor as the tracee contract writes it (`FdInfo`), keys in sorted order.
pub(super) struct SortedFd<'a>(&'a FdInfo);

impl Serialize for SortedFd<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let fd = self.0;
        let ty = fd_type(fd);
        let mut m = s.serialize_map(None)?;
        match &fd.kind {
            FdKind::File(p) | FdKind::Chardev(p) | FdKind::Other(p) => {
                m.serialize_entry("deleted", &p.deleted)?;
                m.serialize_entry("dev", &p.dev)?;
                m.serialize_entry("fd", &fd.fd)?;
                m.serialize_entry("inode", &p.inode)?;
                m.serialize_entry("path", &p.path)?;
                if let Some(hex) = &p.path_hex {
                    m.serialize_entry("pathHex", hex)?;
                }
                m.serialize_entry("truncated", &p.truncated)?;
            }
            FdKind::Pipe { inode } => {
                m.serialize_entry("fd", &fd.fd)?;
                m.serialize_entry("inode", inode)?;
            }
            FdKind::Socket(so) => {
                m.serialize_entry("family", &so.family)?;
                m.serialize_entry("fd", &fd.fd)?;
                m.serialize_entry("inode", &so.inode)?;
                m.serialize_entry("local", &so.local)?;
                m.serialize_entry("protocol", &so.protocol)?;
                m.serialize_entry("remote", &so.remote)?;
            }
            FdKind::AnonInode { name } => {
                m.serialize_entry("fd", &fd.fd)?;
                m.serialize_entry("name", name)?;
            }
            FdKind::Unknown { reason } => {
                m.serialize_entry("fd", &fd.fd)?;
                m.serialize_entry("reason", reason)?;
            }
        }
        m.serialize_entry("type", ty)?;
        m.end()
    }
}

/// A protocol name in lower case (`tcp`), without allocating for the usual ones.
pub(super) fn lower(protocol: &str) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    match protocol {
        "TCP" => Cow::Borrowed("tcp"),
        "UDP" => Cow::Borrowed("udp"),
        p if p.bytes().any(|b| b.is_ascii_uppercase()) => Cow::Owned(p.to_ascii_lowercase()),
        p => Cow::Borrowed(p),
    }
}

/// A number written as a JSON string (`"33"`), without allocating.
pub(super) struct Decimal(pub u64);

impl Serialize for Decimal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(itoa::Buffer::new().format(self.0))
    }
}

/// A timestamp written as [`rfc3339`] writes it, without allocating.
pub(super) struct Rfc3339(pub u64);

impl Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 30];
        s.serialize_str(rfc3339_into(self.0, &mut buf))
    }
}

/// Writes `ns` since the epoch as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` into `buf` (a u64 of ns
/// ends in 2554, so the year has four digits).
pub(super) fn rfc3339_into(ns: u64, buf: &mut [u8; 30]) -> &str {
    let secs = ns / 1_000_000_000;
    let frac = ns % 1_000_000_000;
    let days = secs / 86_400;
    let sod = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm, for days >= 0).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let put = |buf: &mut [u8; 30], at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(buf, 0, 4, year);
    buf[4] = b'-';
    put(buf, 5, 2, month);
    buf[7] = b'-';
    put(buf, 8, 2, day);
    buf[10] = b'T';
    put(buf, 11, 2, sod / 3600);
    buf[13] = b':';
    put(buf, 14, 2, sod / 60 % 60);
    buf[16] = b':';
    put(buf, 17, 2, sod % 60);
    buf[19] = b'.';
    put(buf, 20, 9, frac);
    buf[29] = b'Z';
    // Only ASCII digits and separators were written.
    std::str::from_utf8(&buf[..]).unwrap_or("1970-01-01T00:00:00.000000000Z")
}

/// The flow-specific fields, shared by ECS (`sendfile.*`) and OCSF (`unmapped.sendfile`).
fn flow_details(f: &FlowEvent<'_>) -> Value {
    let mut d = json!({
        "flow_id": f.flow_id,
        "reason": f.reason,
        "final": f.is_final,
        "syscall": f.syscall,
        "out_fd": f.out_fd.fd,
        "in_fd": f.in_fd.fd,
        "out_fd_type": fd_type(&f.out_fd),
        "in_fd_type": fd_type(&f.in_fd),
        "calls": f.calls,
        "bytes": f.bytes,
        "failed_calls": f.failed_calls,
        "errnos": f.errnos,
        "first_errno": f.first_errno,
        "last_errno": f.last_errno,
        "total_calls": f.total_calls,
        "total_bytes": f.total_bytes,
        "total_failed_calls": f.total_failed_calls,
        "offset_first": f.offset_first,
        "offset_last": f.offset_last,
        "compat": f.is_compat,
        "throttled": f.throttled,
        "hook": f.hook,
        "cpu": f.processor_id,
        "cgroup_id": f.cgroup_id,
        "schema_version": f.schema_version,
    });
    let m = d.as_object_mut().expect("object");
    if let Some(n) = f.calls_in_progress {
        m.insert("calls_in_progress".into(), json!(n));
    }
    if let Some(hex) = &f.process_name_hex {
        m.insert("process_name_hex".into(), json!(hex));
    }
    for (key, fd) in [("out", &f.out_fd), ("in", &f.in_fd)] {
        let v = serde_json::to_value(fd).unwrap_or(Value::Null);
        m.insert(format!("{key}_fd_info"), v);
    }
    d
}

impl crate::event::Arg {
    /// The value as an unsigned 64-bit number (descriptors sign-extended).
    pub fn value_u64(&self) -> u64 {
        match self.value {
            crate::event::ArgValue::U64(v) => v,
            crate::event::ArgValue::Int(v) => v as u64,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::event::{Arg, ArgValue, ContextFlags, Executable, errno_name};

    /// A realistic event: nginx sending /srv/a.jpg on a TCP connection.
    pub fn socket_event(host: &str) -> SendfileEvent<'_> {
        SendfileEvent {
            timestamp: 1_795_322_042_051_880_948,
            processor_id: 1,
            process_id: Some(4242),
            thread_id: Some(4243),
            parent_process_id: Some(1),
            host_process_id: 4242,
            host_thread_id: 4243,
            host_parent_process_id: Some(1),
            user_id: 33,
            group_id: 33,
            process_name: Cow::Borrowed("nginx"),
            process_name_hex: None,
            executable: Some(Executable {
                path: "/usr/sbin/nginx".into(),
                path_hex: None,
                truncated: false,
                ..Executable::default()
            }),
            thread_start_time: Some(1_795_322_000_000_000_000),
            mount_namespace: Some(4026531841),
            pid_namespace: Some(4026531836),
            host_name: host,
            cgroup_id: 4321,
            container_id: Some("3f4e5d6c7b8a".into()),
            event_id: "40",
            event_name: "sendfile",
            syscall: "sendfile64",
            syscall_nr: 40,
            return_value: 21952,
            errno: None,
            args_num: 4,
            args: [
                Arg {
                    name: "out_fd",
                    ty: "int",
                    value: ArgValue::Int(29),
                },
                Arg {
                    name: "in_fd",
                    ty: "int",
                    value: ArgValue::Int(30),
                },
                Arg {
                    name: "offset",
                    ty: "off_t*",
                    value: ArgValue::U64(140723599012848),
                },
                Arg {
                    name: "count",
                    ty: "size_t",
                    value: ArgValue::U64(21952),
                },
            ],
            in_fd: FdInfo {
                fd: 30,
                kind: FdKind::File(PathInfo {
                    path: "/srv/a.jpg".into(),
                    path_hex: None,
                    truncated: false,
                    inode: 131074,
                    dev: 2049,
                    deleted: false,
                    ..PathInfo::default()
                }),
            },
            out_fd: FdInfo {
                fd: 29,
                kind: FdKind::Socket(SocketInfo {
                    family: "AF_INET".into(),
                    protocol: "TCP".into(),
                    inode: 98765,
                    local: Some(Endpoint::Inet {
                        ip: "10.0.0.5".into(),
                        port: 80,
                    }),
                    remote: Some(Endpoint::Inet {
                        ip: "203.0.113.7".into(),
                        port: 51234,
                    }),
                }),
            },
            offset_value: Some(0),
            offset_after: Some(21952),
            duration_ns: 22764,
            context_flags: ContextFlags {
                is_compat: false,
                flow_fallback: false,
            },
            hook: "tracepoint",
            schema_version: 1,
        }
    }

    /// A failed file-to-file copy by a process with a hostile name.
    pub fn file_event(host: &str) -> SendfileEvent<'_> {
        let mut e = socket_event(host);
        e.process_name = Cow::Borrowed("a\"b\\c\nd\x1b[31m\u{202e}x");
        e.return_value = -9;
        e.errno = Some(Cow::Borrowed("EBADF"));
        e.offset_after = None;
        e.container_id = None;
        e.out_fd = FdInfo {
            fd: 4,
            kind: FdKind::File(PathInfo {
                path: "/tmp/out\nfake 12:00:00 line".into(),
                path_hex: None,
                truncated: false,
                inode: 77,
                dev: 2049,
                deleted: true,
                ..PathInfo::default()
            }),
        };
        e
    }

    fn line(f: Format, rec: Record<'_>) -> String {
        let mut buf = Vec::new();
        f.render(rec, &mut buf).unwrap();
        let s = String::from_utf8(buf).unwrap();
        assert!(!s.contains('\n') && !s.contains('\r'), "{f:?}: {s:?}");
        s
    }

    #[test]
    fn ecs_maps_socket_output_to_source_and_destination() {
        let e = socket_event("web-1");
        let v: Value = serde_json::from_str(&line(Format::Ecs, e.as_record())).unwrap();
        assert_eq!(v["@timestamp"], "2026-11-22T04:34:02.051880948Z");
        assert_eq!(v["event"]["action"], "sendfile");
        assert_eq!(v["event"]["outcome"], "success");
        assert_eq!(v["event"]["category"], json!(["file", "network"]));
        assert_eq!(v["process"]["pid"], 4242);
        assert_eq!(v["process"]["thread"]["id"], 4243);
        assert_eq!(v["process"]["parent"]["pid"], 1);
        assert_eq!(v["process"]["executable"], "/usr/sbin/nginx");
        assert_eq!(v["user"]["id"], "33");
        assert_eq!(v["group"]["id"], "33");
        assert_eq!(v["host"]["name"], "web-1");
        assert_eq!(v["container"]["id"], "3f4e5d6c7b8a");
        assert_eq!(v["file"]["path"], "/srv/a.jpg");
        assert_eq!(v["file"]["inode"], "131074");
        assert_eq!(v["source"]["ip"], "10.0.0.5");
        assert_eq!(v["source"]["port"], 80);
        assert_eq!(v["destination"]["ip"], "203.0.113.7");
        assert_eq!(v["destination"]["port"], 51234);
        assert_eq!(v["network"]["transport"], "tcp");
        assert_eq!(v["network"]["type"], "ipv4");
        assert!(v.get("error").is_none());
        assert_eq!(v["sendfile"]["bytes"], 21952);
        assert_eq!(v["sendfile"]["out_fd"], 29);
        assert_eq!(v["sendfile"]["offset_before"], 0);
        assert_eq!(v["sendfile"]["offset_after"], 21952);
    }

    #[test]
    fn ecs_failure_has_error_code_and_no_network() {
        let e = file_event("web-1");
        let v: Value = serde_json::from_str(&line(Format::Ecs, e.as_record())).unwrap();
        assert_eq!(v["event"]["outcome"], "failure");
        assert_eq!(v["event"]["category"], json!(["file"]));
        assert_eq!(v["error"]["code"], "EBADF");
        assert_eq!(v["error"]["message"], "Bad file descriptor");
        assert!(v.get("source").is_none() && v.get("network").is_none());
        assert_eq!(v["process"]["name"], "a\"b\\c\nd\x1b[31m\u{202e}x");
        assert_eq!(v["sendfile"]["bytes"], Value::Null);
        assert_eq!(v["sendfile"]["return_value"], -9);
    }

    #[test]
    fn ocsf_picks_the_class_from_the_output() {
        let e = socket_event("web-1");
        let v: Value = serde_json::from_str(&line(Format::Ocsf, e.as_record())).unwrap();
        assert_eq!(v["class_uid"], 4001);
        assert_eq!(v["type_uid"], 400106);
        assert_eq!(v["src_endpoint"], json!({"ip": "10.0.0.5", "port": 80}));
        assert_eq!(
            v["dst_endpoint"],
            json!({"ip": "203.0.113.7", "port": 51234})
        );
        assert_eq!(v["actor"]["process"]["pid"], 4242);
        assert_eq!(v["device"]["hostname"], "web-1");
        assert_eq!(v["time"], 1_795_322_042_051u64);
        assert_eq!(v["status_id"], 1);
        let e = file_event("web-1");
        let v: Value = serde_json::from_str(&line(Format::Ocsf, e.as_record())).unwrap();
        assert_eq!(v["class_uid"], 1001);
        assert_eq!(v["type_uid"], 100102);
        assert_eq!(v["file"]["path"], "/srv/a.jpg");
        assert_eq!(v["file"]["name"], "a.jpg");
        assert_eq!(v["status_id"], 2);
        assert_eq!(v["status_code"], "EBADF");
        assert_eq!(v["unmapped"]["sendfile"]["out_fd"], 4);
    }

    #[test]
    fn text_reads_like_strace() {
        let e = socket_event("web-1");
        let s = line(Format::Text, e.as_record());
        let (_time, rest) = s.split_once(' ').unwrap();
        assert_eq!(
            rest,
            "\"nginx\"[4242/4243] sendfile(29<TCP:10.0.0.5:80->203.0.113.7:51234>, \
             30<\"/srv/a.jpg\">, [0]\u{2192}[21952], 21952) = 21952"
        );
        let e = file_event("web-1");
        let s = line(Format::Text, e.as_record());
        let (_time, rest) = s.split_once(' ').unwrap();
        assert_eq!(
            rest,
            "\"a\\\"b\\\\c\\nd\\x1b[31m\\u{202e}x\"[4242/4243] sendfile(4<\"/tmp/out\\nfake \
             12:00:00 line\" (deleted)>, 30<\"/srv/a.jpg\">, [0], 21952) = -1 EBADF (Bad file \
             descriptor)"
        );
        assert!(!s.contains('\x1b') && !s.contains('\u{202e}'));
    }

    /// Reads back a quoted string of the text form: its exact bytes and what follows it.
    pub(crate) fn unquote(s: &str) -> Option<(Vec<u8>, &str)> {
        let body = s.strip_prefix('"')?;
        let mut out = Vec::new();
        let mut it = body.char_indices();
        while let Some((i, c)) = it.next() {
            match c {
                '"' => return Some((out, &body[i + 1..])),
                '\\' => match it.next()?.1 {
                    'n' => out.push(b'\n'),
                    't' => out.push(b'\t'),
                    'r' => out.push(b'\r'),
                    '\\' => out.push(b'\\'),
                    '"' => out.push(b'"'),
                    'x' => {
                        let h: String = [it.next()?.1, it.next()?.1].iter().collect();
                        out.push(u8::from_str_radix(&h, 16).ok()?);
                    }
                    'u' => {
                        let rest = &body[it.next()?.0 + 1..];
                        let end = rest.find('}')?;
                        let c = char::from_u32(u32::from_str_radix(&rest[..end], 16).ok()?)?;
                        out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                        for _ in 0..=end {
                            it.next();
                        }
                    }
                    _ => return None,
                },
                c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        None
    }

    fn in_fd_text(p: PathInfo) -> String {
        let mut e = socket_event("web-1");
        e.in_fd.kind = FdKind::File(p);
        let t = text(e.as_record());
        let at = t.find("30<").unwrap() + 3;
        let end = t.rfind(">, [0]").unwrap();
        t[at..end].to_string()
    }

    #[test]
    fn text_paths_are_quoted_marked_and_read_back_exactly() {
        // A real file named like a deleted one, and a deleted one: distinct.
        let real = in_fd_text(PathInfo {
            path: "/tmp/x (deleted)".into(),
            ..PathInfo::default()
        });
        let gone = in_fd_text(PathInfo {
            path: "/tmp/x".into(),
            deleted: true,
            ..PathInfo::default()
        });
        assert_eq!(real, "\"/tmp/x (deleted)\"");
        assert_eq!(gone, "\"/tmp/x\" (deleted)");
        // Truncated, pseudo and the rest are marked after the quotes.
        let t = in_fd_text(PathInfo {
            path: "/d9/x".into(),
            truncated: true,
            ..PathInfo::default()
        });
        assert_eq!(t, "\"/d9/x\" (truncated)");
        let t = in_fd_text(PathInfo {
            path: "/memfd:a (deleted)".into(),
            deleted: true,
            pseudo: true,
            ..PathInfo::default()
        });
        assert_eq!(t, "\"/memfd:a (deleted)\" (deleted pseudo)");
        // Delimiters and bytes that are not UTF-8 come back exactly; U+FFFD stays itself.
        let raw = b"/a\">, 31<\"/b\xff\xef\xbf\xbd\\x\x85\xc2\x85";
        let t = in_fd_text(PathInfo {
            path: String::from_utf8_lossy(raw).into_owned(),
            path_hex: Some(crate::event::decode::hex_of(raw)),
            ..PathInfo::default()
        });
        assert!(t.contains("\\xff") && t.contains('\u{fffd}'), "{t}");
        let (bytes, rest) = unquote(&t).unwrap();
        assert_eq!((bytes.as_slice(), rest), (&raw[..], ""));
    }

    #[test]
    fn flat_schemas_mark_truncated_paths() {
        let mut e = socket_event("web-1");
        e.in_fd.kind = FdKind::File(PathInfo {
            path: "/d9/x".into(),
            truncated: true,
            ..PathInfo::default()
        });
        assert_eq!(ecs(e.as_record())["file"]["path"], ".../d9/x");
        // OCSF names the file in File System Activity (output not a socket).
        e.out_fd.kind = FdKind::Pipe { inode: 1 };
        assert_eq!(ocsf(e.as_record())["file"]["path"], ".../d9/x");
    }

    #[test]
    fn ipv6_and_unix_sockets_map_too() {
        let mut e = socket_event("web-1");
        e.out_fd.kind = FdKind::Socket(SocketInfo {
            family: "AF_INET6".into(),
            protocol: "TCP".into(),
            inode: 1,
            local: Some(Endpoint::Inet {
                ip: "::1".into(),
                port: 8080,
            }),
            remote: Some(Endpoint::Inet {
                ip: "2001:db8::7".into(),
                port: 40000,
            }),
        });
        let v = ecs(e.as_record());
        assert_eq!(v["network"]["type"], "ipv6");
        assert_eq!(v["destination"]["ip"], "2001:db8::7");
        let t = text(e.as_record());
        assert!(
            t.contains("sendfile(29<TCPv6:[::1]:8080->[2001:db8::7]:40000>, "),
            "{t}"
        );

        e.out_fd.kind = FdKind::Socket(SocketInfo {
            family: "AF_UNIX".into(),
            protocol: "STREAM".into(),
            inode: 2,
            local: None,
            remote: Some(Endpoint::Unix {
                path: "/run/app.sock".into(),
                path_hex: None,
            }),
        });
        let v = ecs(e.as_record());
        assert_eq!(v["destination"]["address"], "/run/app.sock");
        assert!(v.get("network").is_none() && v.get("source").is_none());
        let v = ocsf(e.as_record());
        assert_eq!(v["class_uid"], 4001);
        assert_eq!(v["dst_endpoint"], json!({"name": "/run/app.sock"}));
        assert_eq!(v["src_endpoint"], json!({}));
        let t = text(e.as_record());
        assert!(
            t.contains("sendfile(29<UNIX-STREAM:[?->\"/run/app.sock\"]>, "),
            "{t}"
        );

        e.out_fd.kind = FdKind::Pipe { inode: 4242 };
        assert!(text(e.as_record()).contains("sendfile(29<pipe:[4242]>, "));
        assert_eq!(ocsf(e.as_record())["class_uid"], 1001);
    }

    /// Every kind of descriptor and the optional parts, present and absent.
    fn variety() -> Vec<SendfileEvent<'static>> {
        let mut all = vec![socket_event("web-1"), file_event("web-1")];
        let mut e = socket_event("h");
        e.out_fd.kind = FdKind::Socket(SocketInfo {
            family: "AF_INET6".into(),
            protocol: "UDP".into(),
            inode: 1,
            local: None,
            remote: Some(Endpoint::Inet {
                ip: "2001:db8::7".into(),
                port: 40000,
            }),
        });
        e.process_name_hex = Some("ff00".into());
        e.executable = None;
        e.host_parent_process_id = None;
        e.offset_value = None;
        all.push(e);
        let mut e = socket_event("h");
        e.out_fd.kind = FdKind::Socket(SocketInfo {
            family: "AF_UNIX".into(),
            protocol: "STREAM".into(),
            inode: 2,
            local: Some(Endpoint::Unix {
                path: "@abs\u{7f}".into(),
                path_hex: Some("00616273".into()),
            }),
            remote: None,
        });
        e.in_fd.kind = FdKind::Chardev(PathInfo {
            path: "/dev/zero".into(),
            path_hex: Some("2f".into()),
            truncated: true,
            inode: 5,
            dev: 6,
            deleted: false,
            ..PathInfo::default()
        });
        all.push(e);
        for kind in [
            FdKind::Pipe { inode: 4242 },
            FdKind::AnonInode {
                name: "[eventfd]".into(),
            },
            FdKind::Unknown {
                reason: "not open".into(),
            },
        ] {
            let mut e = file_event("h");
            e.out_fd.kind = kind.clone();
            e.in_fd.kind = kind;
            e.return_value = -516;
            e.errno = Some(Cow::Borrowed("ERESTART_RESTARTBLOCK"));
            all.push(e);
        }
        let mut e = socket_event("h");
        e.out_fd.kind = FdKind::Socket(SocketInfo {
            family: "AF_INET".into(),
            protocol: "SCTP\u{2028}".into(),
            ..SocketInfo::default()
        });
        e.timestamp = u64::MAX;
        e.context_flags.is_compat = true;
        all.push(e);
        all
    }

    #[test]
    fn the_fast_json_writer_writes_the_bytes_of_serde_json() {
        // Every record kind of every JSON format, typed and as trees: `json::write` against
        // serde_json's own serializer with the same formatter.
        fn same<T: Serialize + ?Sized>(v: &T) {
            let (mut fast, mut reference) = (Vec::new(), Vec::new());
            json::write(&mut fast, v).unwrap();
            json::write_reference(&mut reference, v).unwrap();
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                String::from_utf8(reference).unwrap()
            );
        }
        for e in &variety() {
            same(e);
            same(&ecs::EcsDoc::of(e));
            same(&ocsf::OcsfDoc::of(e));
            same(&ecs(e.as_record()));
            same(&ocsf(e.as_record()));
        }
        let mut lost = EventsLost::new(1_795_322_042_051_880_948, 12, "sink");
        lost.sink = Some("syslog+tcp://10.1.1.1:514\u{2028}\"\\\n".into());
        same(&lost);
        same(&ecs(lost.as_record()));
        same(&ocsf(lost.as_record()));
    }

    /// Asserts that the hand-written writer of every JSON format writes the bytes of serde's.
    fn same_as_serde(e: &SendfileEvent<'_>) {
        for f in [Format::Tracee, Format::Ecs, Format::Ocsf] {
            let (mut direct, mut serde) = (b"prefix".to_vec(), b"prefix".to_vec());
            f.render(e.as_record(), &mut direct).unwrap();
            f.render_serde(e.as_record(), &mut serde).unwrap();
            assert_eq!(
                String::from_utf8(direct).unwrap(),
                String::from_utf8(serde).unwrap(),
                "{f:?}"
            );
        }
    }

    /// Names and paths an attacker can choose, as the decoder hands them over (invalid UTF-8
    /// shown as U+FFFD).
    fn hostile_strings() -> Vec<String> {
        let mut v: Vec<String> = [
            "",
            "nginx",
            "a\"b\\c",
            "\n\r\t\x08\x0c\x00\x01\x1f",
            "x\x1b[31mred\x1b[0m",
            "\u{7f}\u{80}\u{85}\u{9b}\u{9f}\u{a0}",
            "gnp\u{202e}.exe\u{2066}\u{2069}\u{200e}\u{200f}\u{61c}",
            "\u{2028}\u{2029}\u{feff}\u{200b}\u{200d}",
            "é€😀 plain unicode",
            "/srv/www/static/img/a.jpg",
            "/tmp/x (deleted)",
            "/memfd:a (deleted)",
            "@abstract\u{0}name",
        ]
        .map(String::from)
        .to_vec();
        v.push(String::from_utf8_lossy(b"/a\xff\xfe/b\xc3").into_owned());
        v.push("/d".repeat(2100));
        v.push(format!("{}\"\\\u{202e}", "é".repeat(3000)));
        v
    }

    /// The kinds of descriptor, with `s` in every string they hold.
    fn kinds(s: &str, flags: u8) -> Vec<FdKind> {
        let path = PathInfo {
            path: s.to_owned(),
            path_hex: (flags & 1 != 0).then(|| "2f61ff".into()),
            truncated: flags & 2 != 0,
            inode: u64::MAX,
            dev: 0,
            deleted: flags & 4 != 0,
            pseudo: flags & 8 != 0,
            detached: flags & 16 != 0,
            outside_root: flags & 32 != 0,
        };
        let end = |i: u8| match i % 3 {
            0 => None,
            1 => Some(Endpoint::Inet {
                ip: s.to_owned(),
                port: u16::MAX,
            }),
            _ => Some(Endpoint::Unix {
                path: s.to_owned(),
                path_hex: (flags & 1 != 0).then(|| "00".into()),
            }),
        };
        let socket = |family: &str, protocol: &str| SocketInfo {
            family: family.to_owned().into(),
            protocol: protocol.to_owned().into(),
            inode: 7,
            local: end(flags),
            remote: end(flags / 3),
        };
        vec![
            FdKind::File(path.clone()),
            FdKind::Chardev(path.clone()),
            FdKind::Other(path),
            FdKind::Pipe { inode: 0 },
            FdKind::Socket(socket("AF_INET", "TCP")),
            FdKind::Socket(socket("AF_INET6", "udp")),
            FdKind::Socket(socket("AF_UNIX", "STREAM")),
            FdKind::Socket(socket(s, s)),
            FdKind::AnonInode { name: s.to_owned() },
            FdKind::Unknown {
                reason: s.to_owned(),
            },
        ]
    }

    /// `base` with `s` in its strings, the optional parts present or absent by `flags`.
    fn varied<'a>(base: &SendfileEvent<'a>, s: &str, flags: u8) -> SendfileEvent<'a> {
        let mut e = SendfileEvent {
            process_name: Cow::Owned(s.to_owned()),
            process_name_hex: (flags & 1 != 0).then(|| "ff".into()),
            executable: (flags & 2 != 0).then(|| Executable {
                path: s.to_owned(),
                path_hex: (flags & 4 != 0).then(|| "ff".into()),
                truncated: flags & 8 != 0,
                pseudo: flags & 16 != 0,
                detached: flags & 32 != 0,
            }),
            container_id: (flags & 4 != 0).then(|| s.to_owned()),
            process_id: (flags & 8 == 0).then_some(1),
            thread_id: (flags & 8 == 0).then_some(u32::MAX),
            parent_process_id: (flags & 8 == 0).then_some(0),
            host_parent_process_id: (flags & 16 == 0).then_some(7),
            thread_start_time: (flags & 8 == 0).then_some(u64::MAX),
            mount_namespace: (flags & 8 == 0).then_some(4026531841),
            pid_namespace: (flags & 8 == 0).then_some(4026531836),
            offset_value: (flags & 32 == 0).then_some(i64::MIN),
            offset_after: (flags & 64 == 0).then_some(i64::MAX),
            ..socket_event(base.host_name)
        };
        e.timestamp = base.timestamp;
        e.return_value = base.return_value;
        e.errno = base.errno.clone();
        e.in_fd = base.in_fd.clone();
        e.out_fd = base.out_fd.clone();
        e.context_flags.is_compat = flags & 64 != 0;
        e.context_flags.flow_fallback = flags & 128 != 0;
        e
    }

    #[test]
    fn the_hand_written_writers_write_the_bytes_of_serde() {
        for e in &variety() {
            same_as_serde(e);
        }
        let strings = hostile_strings();
        for (i, s) in strings.iter().enumerate() {
            let flags = (i * 37) as u8;
            for (k, kind) in kinds(s, flags).into_iter().enumerate() {
                let mut base = if k % 2 == 0 {
                    socket_event("web-1")
                } else {
                    file_event("h\u{2028}\"")
                };
                if k % 3 == 0 {
                    base.out_fd.kind = kind.clone();
                } else {
                    base.in_fd.kind = kind.clone();
                }
                for flags in [0u8, 0xff, flags, !flags] {
                    same_as_serde(&varied(&base, s, flags));
                }
                for other in kinds(&strings[(i + 1) % strings.len()], !flags) {
                    base.in_fd.kind = kind.clone();
                    base.out_fd.kind = other;
                    same_as_serde(&base);
                }
            }
        }
        // Every errno the decoder can name, failures and successes.
        for ret in [
            -1,
            -9,
            -11,
            -32,
            -104,
            -512,
            -516,
            -4095,
            -4096,
            0,
            i64::MAX,
        ] {
            let mut e = file_event("h");
            e.return_value = ret;
            e.errno = errno_name(ret);
            same_as_serde(&e);
            let mut e = socket_event("h");
            e.return_value = ret;
            e.errno = errno_name(ret);
            same_as_serde(&e);
        }
        // Arguments named otherwise than the decoder names them.
        let mut e = socket_event("h");
        e.args[0].name = "out\"fd\u{2028}";
        e.args[2].ty = "int";
        e.args[3].name = "in_fd";
        same_as_serde(&e);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        #[test]
        fn the_hand_written_writers_write_the_bytes_of_serde_for_any_strings(
            name in "\\PC*|.*",
            raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
            flags in proptest::prelude::any::<u8>(),
            in_kind in 0usize..10,
            out_kind in 0usize..10,
            ret in proptest::prelude::any::<i64>(),
            ts in proptest::prelude::any::<u64>(),
        ) {
            let path = String::from_utf8_lossy(&raw).into_owned();
            let mut base = socket_event("web-1");
            base.in_fd.kind = kinds(&path, flags).swap_remove(in_kind);
            base.out_fd.kind = kinds(&name, !flags).swap_remove(out_kind);
            base.return_value = ret;
            base.errno = errno_name(ret);
            base.timestamp = ts;
            same_as_serde(&varied(&base, &name, flags));
        }
    }

    #[test]
    fn typed_ecs_and_ocsf_write_the_bytes_of_the_trees() {
        // Both through the one JSON writer, which escapes what line readers and terminals
        // misread.
        let written = |v: &Value| {
            let mut out = Vec::new();
            json::write(&mut out, v).unwrap();
            String::from_utf8(out).unwrap()
        };
        for e in &variety() {
            let tree = written(&ecs(e.as_record()));
            assert_eq!(line(Format::Ecs, e.as_record()), tree);
            let tree = written(&ocsf(e.as_record()));
            assert_eq!(line(Format::Ocsf, e.as_record()), tree);
        }
    }

    #[test]
    fn timestamps_are_written_as_jiff_writes_them() {
        let mut buf = [0u8; 30];
        let mut ns = 0u64;
        for i in 0..200_000u64 {
            assert_eq!(rfc3339_into(ns, &mut buf), rfc3339(ns), "{ns}");
            // Spread over the whole u64 range, leap years and month ends included.
            ns = ns.wrapping_add(92_233_720_368_547 + i * 7_919);
        }
        for ns in [
            0,
            951_782_400_000_000_000,
            4_107_542_400_000_000_000,
            u64::MAX,
        ] {
            assert_eq!(rfc3339_into(ns, &mut buf), rfc3339(ns), "{ns}");
        }
    }

    #[test]
    fn lifecycle_records_render_in_every_format() {
        let mut lost = EventsLost::new(1_795_322_042_051_880_948, 12, "sink");
        lost.sink = Some("syslog+tcp://10.1.1.1:514".into());
        for f in [Format::Tracee, Format::Ecs, Format::Ocsf, Format::Text] {
            let s = line(f, lost.as_record());
            if f != Format::Text {
                let _: Value = serde_json::from_str(&s).unwrap();
            }
            assert!(s.contains("syslog+tcp://10.1.1.1:514"), "{f:?}: {s}");
        }
    }
}
