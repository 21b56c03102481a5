//! OCSF 1.2: File System Activity (1001), Network Activity (4001), Base Event (0).

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
                        "path": exe.path,
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
                            "path": p.path,
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
