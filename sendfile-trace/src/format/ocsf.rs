//! OCSF 1.2: File System Activity (1001), Network Activity (4001), Base Event (0).

use serde::Serialize;
use serde_json::{Value, json};

use super::*;

/// OCSF class uids used.
mod ocsf_class {
    /// Base Event (category Other), for the tracer's own records.
    pub const BASE: u32 = 0;
    /// File System Activity.
    pub const FILE_SYSTEM: u32 = 1001;
    /// Network Activity.
    pub const NETWORK: u32 = 4001;
}

fn ocsf_endpoint(end: &Option<Endpoint>) -> Value {
    match end {
        Some(Endpoint::Inet { ip, port }) => json!({ "ip": ip, "port": port }),
        Some(Endpoint::Unix { path, .. }) => json!({ "name": path }),
        None => json!({}),
    }
}

/// A flow record's OCSF fields (class chosen by the caller as for a call): the actor, the file
/// or the endpoints, `start_time`/`end_time`, `count` (calls) and, for Network Activity,
/// `traffic.bytes_out`.
fn ocsf_flow(m: &mut serde_json::Map<String, Value>, f: &crate::event::flow::FlowEvent<'_>) {
    let (status_id, status) = match (f.failed_calls, f.calls) {
        (0, _) => (1, "Success"),
        (failed, calls) if failed == calls => (2, "Failure"),
        _ => (0, "Unknown"),
    };
    m.insert("status_id".into(), json!(status_id));
    m.insert("status".into(), json!(status));
    if let Some(errno) = &f.last_errno
        && f.failed_calls > 0
    {
        m.insert("status_code".into(), json!(errno));
    }
    m.insert("count".into(), json!(f.calls));
    m.insert("start_time".into(), json!(f.first_timestamp / 1_000_000));
    m.insert("end_time".into(), json!(f.last_timestamp / 1_000_000));
    let mut process = json!({
        "pid": f.host_process_id,
        "tid": f.host_thread_id,
        "name": f.process_name,
        "user": { "uid": f.user_id.to_string() },
    });
    let p = process.as_object_mut().expect("object");
    if let Some(exe) = &f.executable {
        p.insert(
            "file".into(),
            json!({ "path": exe.path, "name": base_name(&exe.path), "type_id": 1 }),
        );
    }
    if let Some(ppid) = f.host_parent_process_id {
        p.insert("parent_process".into(), json!({ "pid": ppid }));
    }
    if let Some(id) = &f.container_id {
        p.insert("container".into(), json!({ "uid": id }));
    }
    m.insert("actor".into(), json!({ "process": process }));
    m.insert(
        "device".into(),
        json!({ "hostname": f.host_name, "type_id": 0 }),
    );
    match socket_of(&f.out_fd) {
        Some(s) => {
            m.insert("src_endpoint".into(), ocsf_endpoint(&s.local));
            m.insert("dst_endpoint".into(), ocsf_endpoint(&s.remote));
            let mut conn = json!({ "direction_id": 0 });
            if is_inet(s) {
                conn["protocol_name"] = json!(s.protocol.to_ascii_lowercase());
            }
            m.insert("connection_info".into(), conn);
            m.insert(
                "traffic".into(),
                json!({ "bytes_out": f.bytes, "bytes": f.bytes }),
            );
        }
        None => {
            let file = match path_of(&f.in_fd) {
                Some(p) => json!({
                    "path": p.path,
                    "name": base_name(&p.path),
                    "type_id": if matches!(f.in_fd.kind, FdKind::File(_)) { 1 } else { 99 },
                    "uid": p.inode.to_string(),
                }),
                None => json!({ "name": "", "type_id": 0 }),
            };
            m.insert("file".into(), file);
        }
    }
    let mut unmapped = flow_details(f);
    unmapped["gid"] = json!(f.group_id);
    m.insert("unmapped".into(), json!({ "sendfile": unmapped }));
}

/// The record in OCSF 1.2: File System Activity (1001) for a call whose output is not a socket,
/// Network Activity (4001) when it is; the tracer's own records as Base Event (0).
pub fn ocsf(rec: Record<'_>) -> Value {
    let time_ms = rec.timestamp() / 1_000_000;
    let metadata = json!({
        "version": OCSF_VERSION,
        "product": {
            "name": "sendfile-trace",
            "vendor_name": "sendfile-trace",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "profiles": if matches!(rec, Record::Sendfile(_) | Record::Flow(_)) {
            json!(["host"])
        } else {
            json!([])
        },
        "event_code": rec.name(),
        "original_time": rfc3339(rec.timestamp()),
    });
    let (class_uid, category_uid, class_name, category_name, activity_id, activity_name) = match rec
    {
        Record::Sendfile(e) if socket_of(&e.out_fd).is_some() => (
            ocsf_class::NETWORK,
            4,
            "Network Activity",
            "Network Activity",
            6,
            "Traffic",
        ),
        Record::Flow(f) if socket_of(&f.out_fd).is_some() => (
            ocsf_class::NETWORK,
            4,
            "Network Activity",
            "Network Activity",
            6,
            "Traffic",
        ),
        Record::Sendfile(_) | Record::Flow(_) => (
            ocsf_class::FILE_SYSTEM,
            1,
            "File System Activity",
            "System Activity",
            2,
            "Read",
        ),
        _ => (ocsf_class::BASE, 0, "Base Event", "Other", 99, "Other"),
    };
    let mut o = json!({
        "class_uid": class_uid,
        "class_name": class_name,
        "category_uid": category_uid,
        "category_name": category_name,
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": class_uid * 100 + activity_id,
        "type_name": format!("{class_name}: {activity_name}"),
        "time": time_ms,
        "metadata": metadata,
    });
    let m = o.as_object_mut().expect("object");
    let sev = |id: u8, name: &str| (json!(id), json!(name));
    let (severity_id, severity) = match rec {
        Record::Lost(_) | Record::Throttled(_) => sev(3, "Medium"),
        _ => sev(1, "Informational"),
    };
    m.insert("severity_id".into(), severity_id);
    m.insert("severity".into(), severity);
    match rec {
        Record::Sendfile(e) => {
            let (status_id, status) = if e.errno.is_some() {
                (2, "Failure")
            } else {
                (1, "Success")
            };
            m.insert("status_id".into(), json!(status_id));
            m.insert("status".into(), json!(status));
            if let Some(errno) = &e.errno {
                m.insert("status_code".into(), json!(errno));
                m.insert(
                    "status_detail".into(),
                    json!(errno_description(e.return_value)),
                );
            }
            let mut process = json!({
                "pid": e.host_process_id,
                "tid": e.host_thread_id,
                "name": e.process_name,
                "user": { "uid": e.user_id.to_string() },
            });
            let p = process.as_object_mut().expect("object");
            if let Some(exe) = &e.executable {
                p.insert(
                    "file".into(),
                    json!({
                        "path": shown_path(&exe.path, exe.truncated),
                        "name": base_name(&exe.path),
                        "type_id": 1,
                    }),
                );
            }
            if let Some(ppid) = e.host_parent_process_id {
                p.insert("parent_process".into(), json!({ "pid": ppid }));
            }
            if let Some(id) = &e.container_id {
                p.insert("container".into(), json!({ "uid": id }));
            }
            m.insert("actor".into(), json!({ "process": process }));
            m.insert(
                "device".into(),
                json!({ "hostname": e.host_name, "type_id": 0 }),
            );
            match socket_of(&e.out_fd) {
                Some(s) => {
                    m.insert("src_endpoint".into(), ocsf_endpoint(&s.local));
                    m.insert("dst_endpoint".into(), ocsf_endpoint(&s.remote));
                    let mut conn = json!({ "direction_id": 0 });
                    if is_inet(s) {
                        conn["protocol_name"] = json!(s.protocol.to_ascii_lowercase());
                    }
                    m.insert("connection_info".into(), conn);
                }
                None => {
                    // The file whose data is read: in_fd (sendfile's input is always a file).
                    let file = match path_of(&e.in_fd) {
                        Some(p) => json!({
                            "path": shown_path(&p.path, p.truncated),
                            "name": base_name(&p.path),
                            "type_id": if matches!(e.in_fd.kind, FdKind::File(_)) { 1 } else { 99 },
                            "uid": p.inode.to_string(),
                        }),
                        None => json!({ "name": "", "type_id": 0 }),
                    };
                    m.insert("file".into(), file);
                }
            }
            let mut unmapped = sendfile_details(e);
            unmapped["gid"] = json!(e.group_id);
            m.insert("unmapped".into(), json!({ "sendfile": unmapped }));
        }
        Record::Flow(f) => ocsf_flow(m, f),
        Record::Throttled(t) => {
            m.insert(
                "message".into(),
                json!(format!(
                    "process {} went past {} events per second: further calls folded into flows",
                    t.host_process_id, t.limit
                )),
            );
            m.insert("unmapped".into(), json!({ "throttled": t }));
        }
        Record::Start(s) => {
            m.insert("message".into(), json!("sendfile-trace started"));
            m.insert("unmapped".into(), json!({ "tracer": s }));
        }
        Record::Lost(l) => {
            m.insert(
                "message".into(),
                json!(format!("{} events lost ({})", l.lost, l.reason)),
            );
            m.insert("unmapped".into(), json!({ "lost": l }));
        }
        Record::Stop(s) => {
            m.insert(
                "message".into(),
                json!(format!("sendfile-trace stopped ({})", s.reason)),
            );
            m.insert("unmapped".into(), json!({ "tracer": s }));
        }
    }
    o
}

/// A sendfile call as an OCSF event: the same bytes as [`ocsf`]'s tree, without building it.
/// Fields are declared in sorted key order (the tree's order).
#[derive(Serialize)]
pub(super) struct OcsfDoc<'a> {
    activity_id: u32,
    activity_name: &'static str,
    actor: Actor<'a>,
    category_name: &'static str,
    category_uid: u32,
    class_name: &'static str,
    class_uid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    connection_info: Option<ConnectionInfo<'a>>,
    device: Device<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst_endpoint: Option<OcsfEndpoint<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<OcsfFile<'a>>,
    metadata: Metadata,
    severity: &'static str,
    severity_id: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    src_endpoint: Option<OcsfEndpoint<'a>>,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_detail: Option<String>,
    status_id: u8,
    time: u64,
    type_name: &'static str,
    type_uid: u32,
    unmapped: Unmapped<'a>,
}

#[derive(Serialize)]
struct Actor<'a> {
    process: Process<'a>,
}

#[derive(Serialize)]
struct Process<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<Uid<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<OcsfFile<'a>>,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_process: Option<Pid>,
    pid: u32,
    tid: u32,
    user: Uid<Decimal>,
}

#[derive(Serialize)]
struct Uid<T> {
    uid: T,
}

#[derive(Serialize)]
struct Pid {
    pid: u32,
}

#[derive(Serialize)]
struct ConnectionInfo<'a> {
    direction_id: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    protocol_name: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Serialize)]
struct Device<'a> {
    hostname: &'a str,
    type_id: u8,
}

#[derive(Serialize)]
struct OcsfEndpoint<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
}

impl<'a> OcsfEndpoint<'a> {
    fn of(end: &'a Option<Endpoint>) -> OcsfEndpoint<'a> {
        match end {
            Some(Endpoint::Inet { ip, port }) => OcsfEndpoint {
                ip: Some(ip),
                name: None,
                port: Some(*port),
            },
            Some(Endpoint::Unix { path, .. }) => OcsfEndpoint {
                ip: None,
                name: Some(path),
                port: None,
            },
            None => OcsfEndpoint {
                ip: None,
                name: None,
                port: None,
            },
        }
    }
}

#[derive(Serialize)]
struct OcsfFile<'a> {
    name: &'a str,
    /// Marked with a leading `...` when the walk was cut (allocates only then).
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<std::borrow::Cow<'a, str>>,
    type_id: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<Decimal>,
}

#[derive(Serialize)]
struct Metadata {
    event_code: &'static str,
    original_time: Rfc3339,
    product: Product,
    profiles: [&'static str; 1],
    version: &'static str,
}

#[derive(Serialize)]
struct Product {
    name: &'static str,
    vendor_name: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
struct Unmapped<'a> {
    sendfile: Details<'a>,
}

impl<'a> OcsfDoc<'a> {
    /// The event of one call.
    pub(super) fn of(e: &'a SendfileEvent<'a>) -> OcsfDoc<'a> {
        let socket = socket_of(&e.out_fd);
        let (class_uid, category_uid, class_name, category_name, activity_id, activity_name) =
            match socket {
                Some(_) => (
                    ocsf_class::NETWORK,
                    4,
                    "Network Activity",
                    "Network Activity",
                    6,
                    "Traffic",
                ),
                None => (
                    ocsf_class::FILE_SYSTEM,
                    1,
                    "File System Activity",
                    "System Activity",
                    2,
                    "Read",
                ),
            };
        let type_name = match socket {
            Some(_) => "Network Activity: Traffic",
            None => "File System Activity: Read",
        };
        let failed = e.errno.is_some();
        OcsfDoc {
            activity_id,
            activity_name,
            actor: Actor {
                process: Process {
                    container: e.container_id.as_deref().map(|uid| Uid { uid }),
                    file: e.executable.as_ref().map(|x| OcsfFile {
                        name: base_name(&x.path),
                        path: Some(shown_path(&x.path, x.truncated)),
                        type_id: 1,
                        uid: None,
                    }),
                    name: &e.process_name,
                    parent_process: e.host_parent_process_id.map(|pid| Pid { pid }),
                    pid: e.host_process_id,
                    tid: e.host_thread_id,
                    user: Uid {
                        uid: Decimal(e.user_id.into()),
                    },
                },
            },
            category_name,
            category_uid,
            class_name,
            class_uid,
            connection_info: socket.map(|s| ConnectionInfo {
                direction_id: 0,
                protocol_name: is_inet(s).then(|| lower(&s.protocol)),
            }),
            device: Device {
                hostname: e.host_name,
                type_id: 0,
            },
            dst_endpoint: socket.map(|s| OcsfEndpoint::of(&s.remote)),
            file: match socket {
                Some(_) => None,
                // The file whose data is read: in_fd (sendfile's input is always a file).
                None => Some(match path_of(&e.in_fd) {
                    Some(p) => OcsfFile {
                        name: base_name(&p.path),
                        path: Some(shown_path(&p.path, p.truncated)),
                        type_id: if matches!(e.in_fd.kind, FdKind::File(_)) {
                            1
                        } else {
                            99
                        },
                        uid: Some(Decimal(p.inode)),
                    },
                    None => OcsfFile {
                        name: "",
                        path: None,
                        type_id: 0,
                        uid: None,
                    },
                }),
            },
            metadata: Metadata {
                event_code: "sendfile",
                original_time: Rfc3339(e.timestamp),
                product: Product {
                    name: "sendfile-trace",
                    vendor_name: "sendfile-trace",
                    version: env!("CARGO_PKG_VERSION"),
                },
                profiles: ["host"],
                version: OCSF_VERSION,
            },
            severity: "Informational",
            severity_id: 1,
            src_endpoint: socket.map(|s| OcsfEndpoint::of(&s.local)),
            status: if failed { "Failure" } else { "Success" },
            status_code: e.errno.as_deref(),
            status_detail: failed.then(|| errno_description(e.return_value)),
            status_id: if failed { 2 } else { 1 },
            time: e.timestamp / 1_000_000,
            type_name,
            type_uid: class_uid * 100 + activity_id,
            unmapped: Unmapped {
                sendfile: Details::of(e, Some(e.group_id)),
            },
        }
    }
}
