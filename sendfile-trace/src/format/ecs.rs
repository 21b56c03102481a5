//! Elastic Common Schema 8.x: the record as an ECS document (`event.*`, `process.*`, `file.*`,
//! `source`/`destination` for sockets).

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::*;

/// Inserts `value` at a dotted `path` in a JSON object, creating objects on the way.
fn put(obj: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        Some((head, rest)) => {
            let child = obj.entry(head).or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = child {
                put(m, rest, value);
            }
        }
        None => {
            obj.insert(path.to_owned(), value);
        }
    }
}

/// An ECS endpoint (`source` or `destination`) from a socket end.
fn ecs_endpoint(obj: &mut Map<String, Value>, prefix: &str, end: &Endpoint) {
    match end {
        Endpoint::Inet { ip, port } => {
            put(obj, &format!("{prefix}.address"), json!(ip));
            put(obj, &format!("{prefix}.ip"), json!(ip));
            put(obj, &format!("{prefix}.port"), json!(port));
        }
        Endpoint::Unix { path, .. } => put(obj, &format!("{prefix}.address"), json!(path)),
    }
}

/// A flow record's ECS fields: the process, file and endpoints as for a call, the flow's time
/// span as `event.start`/`event.end`, and its bytes as `network.bytes` when it goes to a socket.
fn ecs_flow(o: &mut Map<String, Value>, f: &crate::event::flow::FlowEvent<'_>) {
    let out_socket = socket_of(&f.out_fd);
    let mut category = vec!["file"];
    if out_socket.is_some() {
        category.push("network");
    }
    put(o, "event.kind", json!("event"));
    put(o, "event.category", json!(category));
    put(o, "event.type", json!(["access"]));
    let outcome = match (f.failed_calls, f.calls) {
        (0, _) => "success",
        (failed, calls) if failed == calls => "failure",
        _ => "unknown",
    };
    put(o, "event.outcome", json!(outcome));
    put(o, "event.reason", json!(f.reason));
    put(o, "event.start", json!(rfc3339(f.first_timestamp)));
    put(o, "event.end", json!(rfc3339(f.last_timestamp)));
    put(
        o,
        "event.duration",
        json!(f.last_timestamp.saturating_sub(f.first_timestamp)),
    );
    put(o, "process.pid", json!(f.host_process_id));
    put(o, "process.thread.id", json!(f.host_thread_id));
    put(o, "process.name", json!(f.process_name));
    if let Some(exe) = &f.executable {
        put(o, "process.executable", json!(exe.path));
    }
    if let Some(ppid) = f.host_parent_process_id {
        put(o, "process.parent.pid", json!(ppid));
    }
    put(o, "user.id", json!(f.user_id.to_string()));
    put(o, "group.id", json!(f.group_id.to_string()));
    put(o, "host.name", json!(f.host_name));
    if let Some(id) = &f.container_id {
        put(o, "container.id", json!(id));
    }
    if let Some(p) = path_of(&f.in_fd) {
        put(o, "file.path", json!(p.path));
        put(o, "file.inode", json!(p.inode.to_string()));
        put(o, "file.device", json!(p.dev.to_string()));
    }
    if let Some(s) = out_socket {
        if let Some(l) = &s.local {
            ecs_endpoint(o, "source", l);
        }
        if let Some(r) = &s.remote {
            ecs_endpoint(o, "destination", r);
        }
        if is_inet(s) {
            put(
                o,
                "network.transport",
                json!(s.protocol.to_ascii_lowercase()),
            );
            let ty = if s.family == "AF_INET6" {
                "ipv6"
            } else {
                "ipv4"
            };
            put(o, "network.type", json!(ty));
        }
        put(o, "network.bytes", json!(f.bytes));
    }
    if let Some(errno) = &f.last_errno
        && f.failed_calls > 0
    {
        put(o, "error.code", json!(errno));
    }
    put(o, "sendfile", flow_details(f));
}

/// The record in Elastic Common Schema 8.x.
pub fn ecs(rec: Record<'_>) -> Value {
    let mut o = Map::new();
    put(&mut o, "@timestamp", json!(rfc3339(rec.timestamp())));
    put(&mut o, "ecs.version", json!(ECS_VERSION));
    put(&mut o, "event.module", json!("sendfile_trace"));
    put(
        &mut o,
        "event.dataset",
        json!(format!("sendfile_trace.{}", rec.name())),
    );
    put(&mut o, "event.action", json!(rec.name()));
    match rec {
        Record::Sendfile(e) => {
            let out_socket = socket_of(&e.out_fd);
            let mut category = vec!["file"];
            if out_socket.is_some() {
                category.push("network");
            }
            put(&mut o, "event.kind", json!("event"));
            put(&mut o, "event.category", json!(category));
            put(&mut o, "event.type", json!(["access"]));
            let outcome = if e.errno.is_some() {
                "failure"
            } else {
                "success"
            };
            put(&mut o, "event.outcome", json!(outcome));
            put(&mut o, "event.duration", json!(e.duration_ns));
            put(&mut o, "process.pid", json!(e.host_process_id));
            put(&mut o, "process.thread.id", json!(e.host_thread_id));
            put(&mut o, "process.name", json!(e.process_name));
            if let Some(exe) = &e.executable {
                put(
                    &mut o,
                    "process.executable",
                    json!(shown_path(&exe.path, exe.truncated)),
                );
            }
            if let Some(ppid) = e.host_parent_process_id {
                put(&mut o, "process.parent.pid", json!(ppid));
            }
            put(&mut o, "user.id", json!(e.user_id.to_string()));
            put(&mut o, "group.id", json!(e.group_id.to_string()));
            put(&mut o, "host.name", json!(e.host_name));
            if let Some(id) = &e.container_id {
                put(&mut o, "container.id", json!(id));
            }
            if let Some(p) = path_of(&e.in_fd) {
                put(&mut o, "file.path", json!(shown_path(&p.path, p.truncated)));
                put(&mut o, "file.inode", json!(p.inode.to_string()));
                put(&mut o, "file.device", json!(p.dev.to_string()));
            }
            if let Some(s) = out_socket {
                if let Some(l) = &s.local {
                    ecs_endpoint(&mut o, "source", l);
                }
                if let Some(r) = &s.remote {
                    ecs_endpoint(&mut o, "destination", r);
                }
                if is_inet(s) {
                    put(
                        &mut o,
                        "network.transport",
                        json!(s.protocol.to_ascii_lowercase()),
                    );
                    let ty = if s.family == "AF_INET6" {
                        "ipv6"
                    } else {
                        "ipv4"
                    };
                    put(&mut o, "network.type", json!(ty));
                }
            }
            if let Some(errno) = &e.errno {
                put(&mut o, "error.code", json!(errno));
                put(
                    &mut o,
                    "error.message",
                    json!(errno_description(e.return_value)),
                );
            }
            put(&mut o, "sendfile", sendfile_details(e));
        }
        Record::Flow(f) => ecs_flow(&mut o, f),
        Record::Throttled(t) => {
            put(&mut o, "event.kind", json!("alert"));
            put(&mut o, "event.category", json!(["process"]));
            put(&mut o, "event.type", json!(["info"]));
            put(&mut o, "host.name", json!(t.host_name));
            put(&mut o, "process.pid", json!(t.host_process_id));
            put(&mut o, "process.thread.id", json!(t.host_thread_id));
            put(&mut o, "process.name", json!(t.process_name));
            put(&mut o, "user.id", json!(t.user_id.to_string()));
            put(&mut o, "sendfile", json!({ "throttled": t }));
        }
        Record::Start(s) => {
            put(&mut o, "event.kind", json!("event"));
            put(&mut o, "event.category", json!(["process"]));
            put(&mut o, "event.type", json!(["start"]));
            put(&mut o, "host.name", json!(s.host_name));
            put(&mut o, "process.pid", json!(s.process_id));
            put(&mut o, "sendfile", json!({ "tracer": s }));
        }
        Record::Lost(l) => {
            put(&mut o, "event.kind", json!("metric"));
            put(&mut o, "event.category", json!(["host"]));
            put(&mut o, "event.type", json!(["info"]));
            put(&mut o, "event.reason", json!(l.reason));
            let mut lost = json!({ "lost": l.lost, "reason": l.reason });
            if let Some(sink) = &l.sink {
                lost["sink"] = json!(sink);
            }
            if !l.records.is_empty() {
                lost["records"] = json!(l.records);
            }
            put(&mut o, "sendfile", lost);
        }
        Record::Stop(s) => {
            put(&mut o, "event.kind", json!("event"));
            put(&mut o, "event.category", json!(["process"]));
            put(&mut o, "event.type", json!(["end"]));
            put(&mut o, "event.reason", json!(s.reason));
            put(&mut o, "sendfile", json!({ "tracer": s }));
        }
    }
    Value::Object(o)
}

/// A sendfile call as an ECS document: the same bytes as [`ecs`]'s tree, without building it.
/// Fields are declared in sorted key order (the tree's order).
#[derive(Serialize)]
pub(super) struct EcsDoc<'a> {
    #[serde(rename = "@timestamp")]
    timestamp: Rfc3339,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<Id<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    destination: Option<EcsEndpoint<'a>>,
    ecs: Version,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<EcsError<'a>>,
    event: EcsEvent,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<EcsFile<'a>>,
    group: Id<Decimal>,
    host: Name<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    network: Option<Network<'a>>,
    process: EcsProcess<'a>,
    sendfile: Details<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<EcsEndpoint<'a>>,
    user: Id<Decimal>,
}

#[derive(Serialize)]
struct Id<T> {
    id: T,
}

#[derive(Serialize)]
struct Name<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct Version {
    version: &'static str,
}

#[derive(Serialize)]
struct EcsEndpoint<'a> {
    address: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
}

impl<'a> EcsEndpoint<'a> {
    fn of(end: &'a Option<Endpoint>) -> Option<EcsEndpoint<'a>> {
        Some(match end.as_ref()? {
            Endpoint::Inet { ip, port } => EcsEndpoint {
                address: ip,
                ip: Some(ip),
                port: Some(*port),
            },
            Endpoint::Unix { path, .. } => EcsEndpoint {
                address: path,
                ip: None,
                port: None,
            },
        })
    }
}

#[derive(Serialize)]
struct EcsError<'a> {
    code: &'a str,
    message: String,
}

#[derive(Serialize)]
struct EcsEvent {
    action: &'static str,
    category: &'static [&'static str],
    dataset: &'static str,
    duration: u64,
    kind: &'static str,
    module: &'static str,
    outcome: &'static str,
    #[serde(rename = "type")]
    ty: [&'static str; 1],
}

#[derive(Serialize)]
struct EcsFile<'a> {
    device: Decimal,
    inode: Decimal,
    /// Marked with a leading `...` when the walk was cut (allocates only then).
    path: std::borrow::Cow<'a, str>,
}

#[derive(Serialize)]
struct Network<'a> {
    transport: std::borrow::Cow<'a, str>,
    #[serde(rename = "type")]
    ty: &'static str,
}

#[derive(Serialize)]
struct EcsProcess<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    executable: Option<std::borrow::Cow<'a, str>>,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: Option<Pid>,
    pid: u32,
    thread: Id<u32>,
}

#[derive(Serialize)]
struct Pid {
    pid: u32,
}

impl<'a> EcsDoc<'a> {
    /// The document of one call.
    pub(super) fn of(e: &'a SendfileEvent<'a>) -> EcsDoc<'a> {
        let socket = socket_of(&e.out_fd);
        let inet = socket.filter(|s| is_inet(s));
        EcsDoc {
            timestamp: Rfc3339(e.timestamp),
            container: e.container_id.as_deref().map(|id| Id { id }),
            destination: socket.and_then(|s| EcsEndpoint::of(&s.remote)),
            ecs: Version {
                version: ECS_VERSION,
            },
            error: e.errno.as_deref().map(|code| EcsError {
                code,
                message: errno_description(e.return_value),
            }),
            event: EcsEvent {
                action: "sendfile",
                category: if socket.is_some() {
                    &["file", "network"]
                } else {
                    &["file"]
                },
                dataset: "sendfile_trace.sendfile",
                duration: e.duration_ns,
                kind: "event",
                module: "sendfile_trace",
                outcome: if e.errno.is_some() {
                    "failure"
                } else {
                    "success"
                },
                ty: ["access"],
            },
            file: path_of(&e.in_fd).map(|p| EcsFile {
                device: Decimal(p.dev),
                inode: Decimal(p.inode),
                path: shown_path(&p.path, p.truncated),
            }),
            group: Id {
                id: Decimal(e.group_id.into()),
            },
            host: Name { name: e.host_name },
            network: inet.map(|s| Network {
                transport: lower(&s.protocol),
                ty: if s.family == "AF_INET6" {
                    "ipv6"
                } else {
                    "ipv4"
                },
            }),
            process: EcsProcess {
                executable: e
                    .executable
                    .as_ref()
                    .map(|x| shown_path(&x.path, x.truncated)),
                name: &e.process_name,
                parent: e.host_parent_process_id.map(|pid| Pid { pid }),
                pid: e.host_process_id,
                thread: Id {
                    id: e.host_thread_id,
                },
            },
            sendfile: Details::of(e, None),
            source: socket.and_then(|s| EcsEndpoint::of(&s.local)),
            user: Id {
                id: Decimal(e.user_id.into()),
            },
        }
    }
}
