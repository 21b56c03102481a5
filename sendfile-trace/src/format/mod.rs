//! Output formats (`--format`): the tracee JSON contract, Elastic Common Schema 8.x, OCSF 1.2
//! and a one-line human form in the spirit of `strace -yy`.
//!
//! Every format renders one record as exactly one line (no newline inside), whatever bytes a
//! process puts in its name or a path: JSON formats escape through serde_json, the text format
//! escapes control and bidirectional characters the way strace does.

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
            Format::Tracee => tracee::write(rec, out),
            Format::Ecs => json::write(out, &ecs(rec)),
            Format::Ocsf => json::write(out, &ocsf(rec)),
            Format::Text => {
                out.extend_from_slice(text(rec).as_bytes());
                Ok(())
            }
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
    use crate::event::{Arg, ArgValue, ContextFlags, Executable};

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
            "nginx[4242/4243] sendfile(29<TCP:10.0.0.5:80->203.0.113.7:51234>, 30</srv/a.jpg>, \
             [0]\u{2192}[21952], 21952) = 21952"
        );
        let e = file_event("web-1");
        let s = line(Format::Text, e.as_record());
        let (_time, rest) = s.split_once(' ').unwrap();
        assert_eq!(
            rest,
            "a\\\"b\\\\c\\nd\\x1b[31m\\u{202e}x[4242/4243] sendfile(4</tmp/out\\nfake 12:00:00 \
             line (deleted)>, 30</srv/a.jpg>, [0], 21952) = -1 EBADF (Bad file descriptor)"
        );
        assert!(!s.contains('\x1b') && !s.contains('\u{202e}'));
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
            t.contains("sendfile(29<UNIX-STREAM:[?->/run/app.sock]>, "),
            "{t}"
        );

        e.out_fd.kind = FdKind::Pipe { inode: 4242 };
        assert!(text(e.as_record()).contains("sendfile(29<pipe:[4242]>, "));
        assert_eq!(ocsf(e.as_record())["class_uid"], 1001);
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
