//! Elastic Common Schema 8.x: the record as an ECS document (`event.*`, `process.*`, `file.*`,
//! `source`/`destination` for sockets).

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
                put(&mut o, "process.executable", json!(exe.path));
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
                put(&mut o, "file.path", json!(p.path));
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
