//! Into the SIEM, against the real things: ECS and OCSF output of a real run checked against the
//! published schemas (a copy of the facts in tests/schema/, with their source), the text format,
//! syslog into a real rsyslogd (UNIX socket, UDP, TCP with octet counting) read back from what it
//! stored, a dead TCP sink that must not stall anything, file rotation and SIGHUP, metrics over
//! HTTP, the config file, the systemd unit (systemd-analyze verify, and its capabilities really
//! suffice) and the Kubernetes manifest.

mod support;

use std::{
    collections::{BTreeMap, HashMap},
    ffi::OsStr,
    io::{BufRead, BufReader, Read},
    net::{IpAddr, TcpListener},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;
use support::*;

/// The workload cases used here: a file, IPv4 and IPv6 TCP, a UNIX socket, and an error.
const CASES: [&str; 5] = [
    "file_to_file_offset",
    "file_to_tcp",
    "file_to_tcp6",
    "file_to_unix",
    "ebadf",
];

fn workload(extra: &[&str]) -> Vec<Value> {
    let mut args: Vec<&OsStr> = Vec::new();
    for c in CASES {
        args.push(OsStr::new("--case"));
        args.push(OsStr::new(c));
    }
    args.extend(extra.iter().map(OsStr::new));
    run_workload(&workload_bin(), &args)
}

/// A tracer started with arbitrary arguments (any format), its stdout and stderr collected.
struct Run {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Run {
    fn start(args: &[&str]) -> Run {
        let mut child = Command::new(tracer_bin())
            .args(args)
            .env_remove("SENDFILE_TRACE_HOOK")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start sendfile-trace");
        let collect = |mut r: Box<dyn Read + Send>, into: Arc<Mutex<String>>| {
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                loop {
                    match r.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => into
                            .lock()
                            .unwrap()
                            .push_str(&String::from_utf8_lossy(&buf[..n])),
                    }
                }
            })
        };
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let threads = vec![
            collect(Box::new(child.stdout.take().unwrap()), stdout.clone()),
            collect(Box::new(child.stderr.take().unwrap()), stderr.clone()),
        ];
        Run {
            child,
            stdout,
            stderr,
            threads,
        }
    }

    /// Waits until `ready()` holds (failing if the tracer exits first or [`start_timeout`] passes).
    fn wait(&mut self, what: &str, ready: impl Fn(&Run) -> bool) {
        let deadline = Instant::now() + start_timeout();
        while !ready(self) {
            if let Some(s) = self.child.try_wait().unwrap() {
                panic!(
                    "the tracer exited ({s}) before {what}: {}",
                    self.stderr.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {:?}",
                start_timeout()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// SIGINT, wait, and return (stdout, stderr); the tracer must exit 0.
    fn stop(mut self) -> (String, String) {
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = wait_timeout(&mut self.child, Duration::from_secs(30));
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
        let (out, err) = (self.stdout(), self.stderr.lock().unwrap().clone());
        assert!(status.success(), "tracer exit {status}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        (out, err)
    }
}

fn file_has(path: &Path, needle: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|s| s.contains(needle))
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON line ({e}): {l}")))
        .collect()
}

fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/schema")
}

/// Flattens nested objects into dotted keys (arrays are leaves).
fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        _ => {
            out.insert(prefix.to_owned(), v.clone());
        }
    }
}

/// ECS field → type, from the copy of the published fields.csv.
fn ecs_fields() -> HashMap<String, String> {
    let text = std::fs::read_to_string(schema_dir().join("ecs-8.17.0-fields.csv")).unwrap();
    let mut lines = text.lines().filter(|l| !l.starts_with('#'));
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let (fi, ti) = (
        header.iter().position(|h| *h == "Field").unwrap(),
        header.iter().position(|h| *h == "Type").unwrap(),
    );
    lines
        .map(|l| {
            let cols: Vec<&str> = l.split(',').collect();
            (cols[fi].to_owned(), cols[ti].to_owned())
        })
        .collect()
}

/// Checks one ECS document against the published field definitions.
fn check_ecs(doc: &Value, fields: &HashMap<String, String>, allowed: &Value) {
    let mut flat = BTreeMap::new();
    flatten("", doc, &mut flat);
    for (key, value) in &flat {
        if key.starts_with("sendfile.") {
            continue; // our own namespace
        }
        let ty = fields
            .get(key)
            .unwrap_or_else(|| panic!("{key} is not an ECS 8.17 field: {doc}"));
        let values: Vec<&Value> = match value {
            Value::Array(a) => a.iter().collect(),
            v => vec![v],
        };
        for v in values {
            let ok = match ty.as_str() {
                "keyword" | "match_only_text" => v.is_string(),
                "long" => v.is_i64() || v.is_u64(),
                "ip" => v.as_str().is_some_and(|s| s.parse::<IpAddr>().is_ok()),
                "date" => v
                    .as_str()
                    .is_some_and(|s| s.parse::<jiff::Timestamp>().is_ok()),
                other => panic!("type {other} of {key} not handled by this test"),
            };
            assert!(ok, "{key} ({ty}) has value {v} in {doc}");
        }
    }
    for f in [
        "event.kind",
        "event.category",
        "event.type",
        "event.outcome",
    ] {
        if let Some(v) = flat.get(f) {
            let vals: Vec<&str> = match v {
                Value::Array(a) => a.iter().map(|x| x.as_str().unwrap()).collect(),
                v => vec![v.as_str().unwrap()],
            };
            for val in vals {
                assert!(
                    allowed[f].get(val).is_some(),
                    "{f}: {val} is not an allowed value"
                );
            }
        }
    }
    // Every category expects the event types used with it.
    let types = flat["event.type"].as_array().unwrap();
    for cat in flat["event.category"].as_array().unwrap() {
        let expected = &allowed["event.category"][cat.as_str().unwrap()];
        for t in types {
            assert!(
                expected.as_array().unwrap().contains(t),
                "event.type {t} is not expected with category {cat}"
            );
        }
    }
}

/// Checks one OCSF event against the class and object definitions of OCSF 1.2.
fn check_ocsf(doc: &Value, schema: &Value) {
    let class = match doc["class_uid"].as_u64().unwrap() {
        0 => "base_event",
        1001 => "file_activity",
        4001 => "network_activity",
        other => panic!("unexpected class {other}"),
    };
    let c = &schema["classes"][class];
    assert_eq!(doc["category_uid"], c["category_uid"], "{doc}");
    let activity = doc["activity_id"].as_u64().unwrap();
    assert_eq!(
        doc["type_uid"].as_u64().unwrap(),
        doc["class_uid"].as_u64().unwrap() * 100 + activity
    );
    let attrs = c["attributes"].as_object().unwrap();
    let profiles: Vec<&str> = doc["metadata"]["profiles"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, a) in attrs {
        let applies = a
            .get("profile")
            .is_none_or(|p| profiles.contains(&p.as_str().unwrap()));
        if a["requirement"] == "required" && applies {
            assert!(
                doc.get(name).is_some(),
                "{class}: required {name} missing: {doc}"
            );
        }
    }
    for (name, v) in doc.as_object().unwrap() {
        let a = attrs
            .get(name)
            .unwrap_or_else(|| panic!("{class} has no attribute {name}"));
        if let Some(p) = a.get("profile") {
            assert!(
                profiles.contains(&p.as_str().unwrap()),
                "{name} needs profile {p} in metadata.profiles"
            );
        }
        if let Some(e) = a.get("enum") {
            assert!(e.as_array().unwrap().contains(v), "{name}={v} not in {e}");
        }
        check_ocsf_type(name, a["type"].as_str().unwrap_or(""), v, schema);
    }
}

fn check_ocsf_type(name: &str, ty: &str, v: &Value, schema: &Value) {
    if let Value::Array(items) = v {
        // Array attributes (`is_array` in the dictionary): each item has the type.
        for item in items {
            check_ocsf_type(name, ty, item, schema);
        }
        return;
    }
    match ty {
        "integer_t" | "long_t" | "timestamp_t" | "port_t" => {
            assert!(
                v.is_u64() || v.is_i64(),
                "{name}: {v} is not an integer ({ty})"
            )
        }
        "string_t" | "hostname_t" | "process_name_t" | "datetime_t" => {
            assert!(v.is_string(), "{name}: {v} is not a string ({ty})")
        }
        "ip_t" => assert!(
            v.as_str().is_some_and(|s| s.parse::<IpAddr>().is_ok()),
            "{name}: {v} is not an IP"
        ),
        "json_t" => {}
        "boolean_t" => assert!(v.is_boolean()),
        object => {
            let Some(def) = schema["objects"].get(object) else {
                // Objects not in the copy (e.g. unmapped is json_t) are not checked.
                return;
            };
            {
                let item = v;
                let m = item
                    .as_object()
                    .unwrap_or_else(|| panic!("{name}: {item} is not an object"));
                for (k, a) in def.as_object().unwrap() {
                    if a["requirement"] == "required" && a.get("profile").is_none() {
                        assert!(m.contains_key(k), "{name} ({object}): required {k} missing");
                    }
                }
                for (k, sub) in m {
                    let a = def
                        .get(k)
                        .unwrap_or_else(|| panic!("{object} has no attribute {k} ({name})"));
                    check_ocsf_type(
                        &format!("{name}.{k}"),
                        a["type"].as_str().unwrap_or(""),
                        sub,
                        schema,
                    );
                }
            }
        }
    }
}

#[test]
fn ecs_and_ocsf_of_a_real_run_follow_the_published_schemas() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let ecs_fields = ecs_fields();
    let allowed: Value = serde_json::from_str(
        &std::fs::read_to_string(schema_dir().join("ecs-8.17.0-allowed-values.json")).unwrap(),
    )
    .unwrap();
    let ocsf: Value = serde_json::from_str(
        &std::fs::read_to_string(schema_dir().join("ocsf-1.2.0.json")).unwrap(),
    )
    .unwrap();
    for format in ["ecs", "ocsf"] {
        let path = dir.path().join(format!("{format}.json"));
        let p = path.to_str().unwrap();
        let mut run = Run::start(&["--format", format, "--output", p]);
        run.wait("tracer_start", |_| file_has(&path, "tracer_start"));
        let calls = workload(&[]);
        run.stop();
        let docs = json_lines(&std::fs::read_to_string(&path).unwrap());
        let pid = calls[0]["pid"].as_u64().unwrap();
        let mine: Vec<&Value> = docs
            .iter()
            .filter(|d| match format {
                "ecs" => d["process"]["pid"] == pid && d["event"]["action"] == "sendfile",
                _ => d["actor"]["process"]["pid"] == pid,
            })
            .collect();
        assert_eq!(mine.len(), calls.len(), "{format}: one event per call");
        for d in &docs {
            match format {
                "ecs" => check_ecs(d, &ecs_fields, &allowed),
                _ => check_ocsf(d, &ocsf),
            }
        }
        // Each call's outcome is where the schema puts it.
        for call in &calls {
            let failed = !call["errno"].is_null();
            let found = mine.iter().any(|d| match format {
                "ecs" => {
                    d["sendfile"]["out_fd"] == call["outFd"]
                        && d["sendfile"]["return_value"] == call["ret"]
                        && d["event"]["outcome"] == if failed { "failure" } else { "success" }
                        && (!failed || d["error"]["code"] == call["errno"])
                }
                _ => {
                    d["unmapped"]["sendfile"]["out_fd"] == call["outFd"]
                        && d["unmapped"]["sendfile"]["return_value"] == call["ret"]
                        && d["status_id"] == if failed { 2 } else { 1 }
                }
            });
            assert!(found, "{format}: no event for {call}");
        }
        let first = &docs[0];
        let last = docs.last().unwrap();
        match format {
            "ecs" => {
                assert_eq!(first["event"]["action"], "tracer_start");
                assert_eq!(last["event"]["action"], "tracer_stop");
            }
            _ => {
                assert_eq!(first["metadata"]["event_code"], "tracer_start");
                assert_eq!(last["metadata"]["event_code"], "tracer_stop");
            }
        }
        eprintln!(
            "{format}: {} records checked against the schema",
            docs.len()
        );
    }
}

#[test]
fn flow_records_follow_the_published_schemas() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let ecs_fields = ecs_fields();
    let allowed: Value = serde_json::from_str(
        &std::fs::read_to_string(schema_dir().join("ecs-8.17.0-allowed-values.json")).unwrap(),
    )
    .unwrap();
    let ocsf: Value = serde_json::from_str(
        &std::fs::read_to_string(schema_dir().join("ocsf-1.2.0.json")).unwrap(),
    )
    .unwrap();
    for format in ["ecs", "ocsf", "text"] {
        let path = dir.path().join(format!("flows.{format}"));
        let p = path.to_str().unwrap();
        let mut run = Run::start(&[
            "--mode",
            "flows",
            "--flow-idle",
            "200ms",
            "--format",
            format,
            "--output",
            p,
        ]);
        run.wait("tracer_start", |_| file_has(&path, "tracer_start"));
        let lines = run_workload(&workload_bin(), &[OsStr::new("--flows")]);
        let pid = lines[0]["pid"].as_u64().unwrap();
        let made_bytes: u64 = lines
            .iter()
            .flat_map(|l| l["flows"].as_array().unwrap())
            .map(|f| f["bytes"].as_u64().unwrap())
            .sum();
        let made_flows = lines
            .iter()
            .map(|l| l["flows"].as_array().unwrap().len())
            .sum::<usize>();
        let text_marker = format!("[{pid}] sendfile_flow#");
        let is_mine = |d: &Value| match format {
            "ecs" => d["process"]["pid"] == pid && d["event"]["action"] == "sendfile_flow",
            _ => {
                d["actor"]["process"]["pid"] == pid
                    && d["metadata"]["event_code"] == "sendfile_flow"
            }
        };
        // Every flow's record, written by the idle sweep when the tracer gets the CPU (a
        // line still being written does not parse yet and is not counted).
        run.wait("a record for every flow", |_| {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let written = text
                .lines()
                .filter(|l| match format {
                    "text" => l.contains(&text_marker) && l.ends_with(" idle"),
                    _ => serde_json::from_str::<Value>(l).is_ok_and(|d| is_mine(&d)),
                })
                .count();
            written >= made_flows
        });
        run.stop();
        let text = std::fs::read_to_string(&path).unwrap();
        if format == "text" {
            let mine: Vec<&str> = text.lines().filter(|l| l.contains(&text_marker)).collect();
            assert_eq!(mine.len(), made_flows, "{text}");
            assert!(mine.iter().all(|l| l.ends_with(" idle")), "{mine:#?}");
            continue;
        }
        let docs = json_lines(&text);
        let mine: Vec<&Value> = docs.iter().filter(|d| is_mine(d)).collect();
        assert_eq!(mine.len(), made_flows, "{format}: one record per flow");
        for d in &docs {
            match format {
                "ecs" => check_ecs(d, &ecs_fields, &allowed),
                _ => check_ocsf(d, &ocsf),
            }
        }
        let details = |d: &Value| match format {
            "ecs" => d["sendfile"].clone(),
            _ => d["unmapped"]["sendfile"].clone(),
        };
        let bytes: u64 = mine
            .iter()
            .map(|d| details(d)["bytes"].as_u64().unwrap())
            .sum();
        assert_eq!(bytes, made_bytes, "{format}");
        // Socket flows carry their bytes where the schema puts traffic.
        for d in &mine {
            let to_socket = details(d)["out_fd_type"] == "socket";
            let shown = match format {
                "ecs" => &d["network"]["bytes"],
                _ => &d["traffic"]["bytes_out"],
            };
            if to_socket {
                assert_eq!(*shown, details(d)["bytes"], "{d}");
            } else {
                assert!(shown.is_null(), "{d}");
            }
        }
        eprintln!(
            "{format}: {} flow records checked against the schema",
            mine.len()
        );
    }
}

#[test]
fn text_is_one_escaped_line_per_call() {
    let _serial = serial();
    require_root();
    let mut run = Run::start(&["--format", "text"]);
    run.wait("tracer_start", |r| r.stdout().contains("tracer_start"));
    let calls = workload(&["--comm", "evil\nname\x1b[2J"]);
    let (out, _) = run.stop();
    let pid = calls[0]["pid"].as_u64().unwrap();
    let mine: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(&format!("[{pid}/")))
        .collect();
    assert_eq!(mine.len(), calls.len(), "one line per call:\n{out}");
    for l in &mine {
        // Quoted, escaped: the name ends at the first bare quote.
        assert!(l.contains(" \"evil\\nname\\x1b[2J\"["), "{l}");
        assert!(!l.contains('\x1b'), "{l:?}");
        let t = &l[..12];
        assert!(
            t.as_bytes()[2] == b':' && t.as_bytes()[8] == b'.' && t.as_bytes()[11].is_ascii_digit(),
            "{l}"
        );
    }
    for call in &calls {
        let out_fd = call["outFd"].as_i64().unwrap();
        let needle = format!("sendfile({out_fd}");
        let ret = match call["errno"].as_str() {
            Some(e) => format!("= -1 {e} ("),
            None => format!("= {}", call["ret"]),
        };
        assert!(
            mine.iter().any(|l| l.contains(&needle) && l.contains(&ret)),
            "no line for {call}:\n{}",
            mine.join("\n")
        );
    }
    assert!(
        out.lines()
            .next()
            .unwrap()
            .contains("--- tracer_start hook=")
    );
    assert!(
        out.lines()
            .last()
            .unwrap()
            .contains("+++ tracer_stop SIGINT")
    );
}

/// A free TCP or UDP port on 127.0.0.1.
fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

/// Whether something listens on 127.0.0.1:port over UDP.
fn udp_bound(port: u16) -> bool {
    let hex = format!(":{port:04X} ");
    std::fs::read_to_string("/proc/net/udp").is_ok_and(|s| s.contains(&hex))
}

/// A real rsyslogd, unprivileged config in a temp dir, listening on loopback only.
struct Rsyslog {
    child: Child,
    store: PathBuf,
    socket: PathBuf,
    udp: u16,
    tcp: u16,
}

impl Rsyslog {
    fn start(dir: &Path) -> Rsyslog {
        let bin = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .expect(
                "rsyslogd is missing: run `cargo xtask test` (it installs rsyslog) or \
                 `apt-get install rsyslog`",
            );
        let (udp, tcp) = (free_port(true), free_port(false));
        let socket = dir.join("log.sock");
        let store = dir.join("stored.log");
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{dir}" maxMessageSize="64k")
module(load="imuxsock" SysSock.Use="off")
module(load="imudp")
module(load="imtcp")
input(type="imuxsock" Socket="{socket}" UseSpecialParser="off" ParseHostname="on"
      RateLimit.Interval="0" CreatePath="on")
input(type="imudp" address="127.0.0.1" port="{udp}" RateLimit.Interval="0")
input(type="imtcp" address="127.0.0.1" port="{tcp}")
template(name="raw" type="string"
         string="%inputname%|%pri%|%hostname%|%app-name%|%procid%|%msgid%|%msg%\n")
action(type="omfile" file="{store}" template="raw" flushOnTXEnd="on" asyncWriting="off")
"#,
                dir = dir.display(),
                socket = socket.display(),
                store = store.display(),
            ),
        )
        .unwrap();
        let mut child = Command::new(bin)
            .args(["-n", "-f"])
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start rsyslogd");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(socket.exists()
            && std::net::TcpStream::connect(("127.0.0.1", tcp)).is_ok()
            && udp_bound(udp))
        {
            if let Some(s) = child.try_wait().unwrap() {
                let mut err = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("rsyslogd exited ({s}): {err}");
            }
            assert!(
                Instant::now() < deadline,
                "rsyslogd did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Rsyslog {
            child,
            store,
            socket,
            udp,
            tcp,
        }
    }

    /// What rsyslogd stored from one input: (pri, hostname, app, procid, msgid, msg).
    fn stored(&self, input: &str) -> Vec<[String; 6]> {
        std::fs::read_to_string(&self.store)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut parts = l.splitn(7, '|');
                if parts.next()? != input {
                    return None;
                }
                let v: Vec<String> = parts.map(str::to_owned).collect();
                v.try_into().ok()
            })
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = wait_timeout(&mut self.child, Duration::from_secs(10));
    }
}

#[test]
fn syslog_reaches_a_real_rsyslogd_over_unix_udp_and_tcp() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let rsyslog = Rsyslog::start(dir.path());
    let copy = dir.path().join("copy.json");
    let outputs = [
        format!("syslog://{}", rsyslog.socket.display()),
        format!("syslog+udp://127.0.0.1:{}", rsyslog.udp),
        format!("syslog+tcp://127.0.0.1:{}", rsyslog.tcp),
        copy.display().to_string(),
    ];
    // Only this test's workload (a comm of its own, filtered in the kernel): other processes
    // calling sendfile on the host meanwhile could flood the UDP receiver, which may then drop
    // the workload's records too.
    let comm = format!("sf-syslog-{}", std::process::id() % 100_000);
    let mut args = vec![
        "--format",
        "tracee",
        "--syslog-facility",
        "local4",
        "--comm",
        &comm,
    ];
    for o in &outputs {
        args.extend(["--output", o]);
    }
    let mut run = Run::start(&args);
    run.wait("tracer_start", |_| file_has(&copy, "tracer_start"));
    let calls = workload(&["--comm", &comm]);
    run.stop();
    let sent = std::fs::read_to_string(&copy).unwrap();
    let sent: Vec<&str> = sent.lines().collect();
    let pid = calls[0]["pid"].as_u64().unwrap();
    let tracer_pid = json_lines(sent[0])[0]["processId"].to_string();
    let host = host_name();
    for input in ["imuxsock", "imudp", "imtcp"] {
        let last = *sent.last().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !rsyslog.stored(input).iter().any(|s| s[5] == last) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let stored = rsyslog.stored(input);
        let msgs: Vec<&str> = stored.iter().map(|s| s[5].as_str()).collect();
        // Our workload's records and the frame must all be there, in order, and everything
        // stored must be exactly something that was sent.
        let ours = |m: &&&str| {
            let v: Value = serde_json::from_str(m).unwrap();
            v["processId"] == pid
                || v["eventName"] == "tracer_stop"
                || v["eventName"] == "tracer_start"
        };
        assert_eq!(
            msgs.iter().filter(ours).collect::<Vec<_>>(),
            sent.iter().filter(ours).collect::<Vec<_>>(),
            "{input}: rsyslogd stored what was sent, in order"
        );
        let sent_set: std::collections::HashSet<&str> = sent.iter().copied().collect();
        assert!(
            msgs.iter().all(|m| sent_set.contains(m)),
            "{input}: stored messages are exactly sent ones"
        );
        if msgs.len() == sent.len() {
            assert_eq!(msgs, sent, "{input}: the whole stream, in order");
        }
        for s in &stored {
            let line = &s[5];
            let v: Value = serde_json::from_str(line).unwrap();
            let failed = v["eventName"] == "sendfile" && !v["errno"].is_null();
            let severity = match v["eventName"].as_str().unwrap() {
                "sendfile" if failed => 5,
                "sendfile" => 6,
                "events_lost" => 4,
                _ => 5,
            };
            assert_eq!(
                s[0],
                (20 * 8 + severity).to_string(),
                "{input}: PRI of {line}"
            );
            assert_eq!(s[1], host, "{input}: HOSTNAME");
            assert_eq!(s[2], "sendfile-trace", "{input}: APP-NAME");
            assert_eq!(s[3], tracer_pid, "{input}: PROCID");
            assert_eq!(s[4], v["eventName"].as_str().unwrap(), "{input}: MSGID");
        }
        let mine = stored
            .iter()
            .filter(|s| serde_json::from_str::<Value>(&s[5]).unwrap()["processId"] == pid)
            .count();
        assert_eq!(mine, calls.len(), "{input}: every call of the workload");
        eprintln!("{input}: {} messages stored by rsyslogd", stored.len());
    }
}

/// Reads RFC 6587 octet-counted frames (`LEN SP MSG`) from a TCP stream.
fn read_frames(stream: std::net::TcpStream, into: Arc<Mutex<Vec<String>>>) {
    let mut r = BufReader::new(stream);
    loop {
        let mut len = Vec::new();
        if r.read_until(b' ', &mut len).unwrap_or(0) == 0 {
            return;
        }
        let n: usize = std::str::from_utf8(&len[..len.len() - 1])
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("not an octet count: {len:?}"));
        let mut msg = vec![0; n];
        if r.read_exact(&mut msg).is_err() {
            return;
        }
        into.lock().unwrap().push(String::from_utf8(msg).unwrap());
    }
}

#[test]
fn a_dead_tcp_sink_drops_and_counts_never_stalls_and_reconnects() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port(false);
    let file = dir.path().join("events.json");
    let tcp = format!("syslog+tcp://127.0.0.1:{port}");
    let mut run = Run::start(&[
        "--output",
        file.to_str().unwrap(),
        "--output",
        &tcp,
        "--ring-buffer-size",
        "16M",
        // Every call an event: past the default limit, calls would be folded into a few flow
        // records and never fill the sink's queue.
        "--max-events-per-process",
        "off",
    ]);
    run.wait("tracer_start", |_| file_has(&file, "tracer_start"));
    // Nothing listens: the TCP sink fills its queue (16384 records) and drops the rest, counted,
    // while the file gets every record.
    let started = Instant::now();
    run_workload(
        &workload_bin(),
        &[
            OsStr::new("--loop"),
            OsStr::new("30000"),
            OsStr::new("--size"),
            OsStr::new("1"),
        ],
    );
    run.wait("events_lost for the TCP sink", |_| {
        file_has(&file, &format!("\"reason\":\"sink\",\"sink\":\"{tcp}\""))
    });
    eprintln!("30000 calls with a dead sink in {:?}", started.elapsed());

    // Start listening: the sink reconnects (backoff) and delivers new records.
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    let frames = Arc::new(Mutex::new(Vec::new()));
    let f2 = frames.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().map_while(Result::ok) {
            let f = f2.clone();
            std::thread::spawn(move || read_frames(s, f));
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut wcalls;
    loop {
        wcalls = workload(&[]);
        std::thread::sleep(Duration::from_millis(500));
        let pid = wcalls[0]["pid"].clone();
        let got = frames.lock().unwrap().iter().any(|m| {
            m.split_once(" - ")
                .and_then(|(_, j)| serde_json::from_str::<Value>(j).ok())
                .is_some_and(|v| v["processId"] == pid)
        });
        if got {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the TCP sink did not reconnect within 60 s"
        );
    }
    let (_, stderr) = run.stop();
    let records = json_lines(&std::fs::read_to_string(&file).unwrap());
    let stop = records.last().unwrap();
    assert_eq!(stop["eventName"], "tracer_stop");
    let sink_lost = stop["lostByReason"]["sink"].as_u64().unwrap();
    assert!(sink_lost >= 30000 - 16384, "{stop}");
    assert_eq!(stop["lostByReason"]["ring_buffer_full"], 0, "{stop}");
    let lost_records: Vec<&Value> = records
        .iter()
        .filter(|r| r["eventName"] == "events_lost")
        .collect();
    assert!(
        lost_records
            .iter()
            .all(|r| r["reason"] == "sink" && r["sink"] == tcp.as_str()),
        "only the dead TCP sink dropped: {lost_records:?}"
    );
    let reported: u64 = lost_records
        .iter()
        .map(|r| r["lost"].as_u64().unwrap())
        .sum();
    assert!(
        reported > 0 && reported <= sink_lost,
        "{reported} vs {stop}"
    );
    // The file sink lost nothing: it holds every event the tracer counted.
    let events = records
        .iter()
        .filter(|r| r["eventName"] == "sendfile")
        .count() as u64;
    assert_eq!(stop["events"].as_u64().unwrap(), events, "{stop}");
    assert_eq!(
        stop["lost"].as_u64().unwrap(),
        stop["lostByReason"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>()
    );
    assert!(stderr.contains("connected"), "{stderr}");
    // Every frame is one RFC 5424 message with the tracee JSON as MSG.
    for m in frames.lock().unwrap().iter() {
        assert!(m.starts_with('<') && m.contains(">1 "), "{m}");
        let (_, json) = m.split_once(" - ").unwrap();
        let _: Value = serde_json::from_str(json).unwrap();
    }
}

#[test]
fn files_rotate_by_size_and_reopen_on_sighup() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.json");
    let mut run = Run::start(&[
        "--output",
        file.to_str().unwrap(),
        "--rotate-size",
        "8K",
        "--rotate-keep",
        "2",
        // Only this test's workload: other processes' calls would rotate its records away.
        "--comm",
        "siem-rotate",
    ]);
    run.wait("tracer_start", |_| file_has(&file, "tracer_start"));
    run_workload(
        &workload_bin(),
        &[
            OsStr::new("--loop"),
            OsStr::new("200"),
            OsStr::new("--size"),
            OsStr::new("1"),
            OsStr::new("--comm"),
            OsStr::new("siem-rotate"),
        ],
    );
    // Rotated files are numbered in order (the highest is the newest); 2 are kept.
    let rotated = || {
        let mut n: Vec<u64> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_prefix("events.json.")?.parse().ok()
            })
            .collect();
        n.sort();
        n
    };
    // The last records: once every event of this workload is in the files, the tracer has
    // written everything before them (one reader, one file sink, in order).
    let marker = workload(&["--comm", "siem-rotate"]);
    let marker_pid = marker[0]["pid"].clone();
    let marker_written = || {
        let mut paths = vec![file.clone()];
        paths.extend(
            rotated()
                .iter()
                .map(|n| dir.path().join(format!("events.json.{n}"))),
        );
        let n = paths
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .map(|t| {
                t.lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .filter(|v| v["eventName"] == "sendfile" && v["processId"] == marker_pid)
                    .count()
            })
            .sum::<usize>();
        n == marker.len()
    };
    // Wait for the writes to settle: the marker's events written, FILE and two rotated files
    // there, sizes unchanged for 300 ms (a rotation in progress briefly has no FILE).
    let sizes = || {
        let mut paths = vec![file.clone()];
        paths.extend(
            rotated()
                .iter()
                .map(|n| dir.path().join(format!("events.json.{n}"))),
        );
        paths
            .iter()
            .map(|p| std::fs::metadata(p).map(|m| m.len()).ok())
            .collect::<Option<Vec<u64>>>()
    };
    run.wait("two rotations, settled", |_| {
        if !marker_written() {
            return false;
        }
        let a = sizes();
        std::thread::sleep(Duration::from_millis(300));
        a.as_ref().is_some_and(|v| v.len() == 3) && a == sizes()
    });
    let numbers = rotated();
    assert_eq!(numbers.len(), 2, "{numbers:?}");
    assert_eq!(
        numbers[1],
        numbers[0] + 1,
        "the newest two are kept: {numbers:?}"
    );
    assert!(numbers[1] > 2, "more than two rotations: {numbers:?}");
    let one = dir.path().join(format!("events.json.{}", numbers[0]));
    let two = dir.path().join(format!("events.json.{}", numbers[1]));
    for p in [&file, &one, &two] {
        let m = std::fs::metadata(p).unwrap();
        assert!(m.len() <= 8192, "{} is {} bytes", p.display(), m.len());
        assert_eq!(m.permissions().mode() & 0o777, 0o600, "{}", p.display());
        json_lines(&std::fs::read_to_string(p).unwrap());
    }

    // logrotate's way: move the file away, SIGHUP, the tracer writes a new one.
    let moved = dir.path().join("moved.json");
    std::fs::rename(&file, &moved).unwrap();
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(run.child.id() as i32, libc::SIGHUP) };
    run.wait("a new file after SIGHUP", |_| file.exists());
    let calls = workload(&["--comm", "siem-rotate"]);
    let (_, stderr) = run.stop();
    assert!(stderr.contains("reopened on SIGHUP"), "{stderr}");
    let mut paths = vec![moved, file.clone()];
    paths.extend(
        rotated()
            .iter()
            .map(|n| dir.path().join(format!("events.json.{n}"))),
    );
    let all: String = paths
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect();
    let records = json_lines(&all);
    let pid = calls[0]["pid"].clone();
    let mine = records
        .iter()
        .filter(|r| r["eventName"] == "sendfile" && r["processId"] == pid)
        .count();
    assert_eq!(mine, calls.len(), "calls after SIGHUP are in the new file");
}

fn get(url: &str) -> Result<String, String> {
    ureq::get(url)
        .call()
        .map_err(|e| e.to_string())
        .and_then(|mut r| r.body_mut().read_to_string().map_err(|e| e.to_string()))
}

/// The value of one sample line (`name{labels} value`), 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn metrics_are_served_to_a_real_http_client() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.json");
    let port = free_port(false);
    let addr = format!("127.0.0.1:{port}");
    let mut run = Run::start(&["--output", file.to_str().unwrap(), "--metrics", &addr]);
    run.wait("tracer_start", |_| file_has(&file, "tracer_start"));
    let url = format!("http://{addr}/metrics");
    let before = get(&url).unwrap();
    let hook = json_lines(&std::fs::read_to_string(&file).unwrap())[0]["hook"]
        .as_str()
        .unwrap()
        .to_owned();
    let calls = workload(&[]);
    let failures = calls.iter().filter(|c| !c["errno"].is_null()).count() as f64;
    let successes = calls.len() as f64 - failures;
    let series =
        |o: &str| format!("sendfile_trace_events_total{{hook=\"{hook}\",outcome=\"{o}\"}}");
    // The counters move when the tracer has read the calls' records: scrape until they show
    // them (for at most settle_timeout()), then check that last scrape.
    let counted = |after: &str| {
        sample(after, &series("success")) - sample(&before, &series("success")) >= successes
            && sample(after, &series("failure")) - sample(&before, &series("failure")) >= failures
    };
    let deadline = Instant::now() + settle_timeout();
    let mut after = get(&url).unwrap();
    while !counted(&after) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        after = get(&url).unwrap();
    }
    assert!(
        sample(&after, &series("success")) - sample(&before, &series("success")) >= successes,
        "{after}"
    );
    assert!(
        sample(&after, &series("failure")) - sample(&before, &series("failure")) >= failures,
        "{after}"
    );
    for needle in [
        "# TYPE sendfile_trace_events_lost counter",
        "sendfile_trace_events_lost_total{reason=\"sink\"} 0",
        "sendfile_trace_ring_buffer_size_bytes 4194304",
        "sendfile_trace_ring_buffer_fill_ratio ",
        "sendfile_trace_queue_fill_ratio{sink=",
        "sendfile_trace_sink_errors_total{sink=",
    ] {
        assert!(after.contains(needle), "{needle} missing:\n{after}");
    }
    let fill = sample(&after, "sendfile_trace_ring_buffer_fill_ratio");
    assert!((0.0..=1.0).contains(&fill));
    let e = get(&format!("http://{addr}/other")).unwrap_err();
    assert!(e.contains("404"), "{e}");
    run.stop();
}

#[test]
fn a_bad_config_stops_the_tracer_with_file_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("c.toml");
    std::fs::write(&conf, "format = \"ecs\"\nrotate-keep = -1\n").unwrap();
    let out = Command::new(tracer_bin())
        .args(["--config", conf.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "sendfile-trace: error: {}:2: rotate-keep: ",
            conf.display()
        )),
        "{err}"
    );
}

#[test]
fn completions_and_man_page_generate_from_the_binary() {
    for args in [
        &["generate", "man"][..],
        &["generate", "completions", "bash"],
        &["generate", "completions", "zsh"],
        &["generate", "completions", "fish"],
    ] {
        let out = Command::new(tracer_bin()).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let s = String::from_utf8(out.stdout).unwrap();
        assert!(s.contains("rotate") && s.contains("syslog"), "{args:?}");
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn the_systemd_unit_verifies_and_its_capabilities_suffice() {
    let _serial = serial();
    require_root();
    let unit = std::fs::read_to_string(repo_root().join("deploy/sendfile-trace.service")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The unit as installed, pointing at the binary under test, and its man page findable.
    let tracer = std::fs::canonicalize(tracer_bin()).unwrap();
    let local = dir.path().join("sendfile-trace.service");
    std::fs::write(
        &local,
        unit.replace("/usr/local/bin/sendfile-trace", tracer.to_str().unwrap()),
    )
    .unwrap();
    let man1 = dir.path().join("man/man1");
    std::fs::create_dir_all(&man1).unwrap();
    let man = Command::new(&tracer)
        .args(["generate", "man"])
        .output()
        .unwrap();
    std::fs::write(man1.join("sendfile-trace.1"), man.stdout).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&local)
        .env("MANPATH", dir.path().join("man"))
        .output()
        .expect(
            "systemd-analyze is missing: run `cargo xtask test` (it installs systemd) or \
             `apt-get install systemd`",
        );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "systemd-analyze: {err}"
    );
    for d in [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
    ] {
        assert!(unit.lines().any(|l| l == d), "{d} missing from the unit");
    }

    // The unit's capabilities, and nothing else, as an unprivileged user: the tracer attaches
    // and traces.
    let caps = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("AmbientCapabilities in the unit");
    let bounding = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("CapabilityBoundingSet in the unit");
    assert_eq!(caps, bounding);
    let setpriv_caps: Vec<String> = caps
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let setpriv_caps = setpriv_caps.join(",");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let file = dir.path().join("events.json");
    let mut child = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .args(["--inh-caps", &setpriv_caps, "--ambient-caps", &setpriv_caps])
        .args(["--bounding-set", &format!("-all,{setpriv_caps}"), "--"])
        .arg(&tracer)
        .args(["--output", file.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv (util-linux) is missing: apt-get install util-linux");
    let deadline = Instant::now() + start_timeout();
    while !file_has(&file, "tracer_start") {
        if let Some(s) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("with only {caps} the tracer failed ({s}): {err}");
        }
        assert!(
            Instant::now() < deadline,
            "no tracer_start within {:?}",
            start_timeout()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let calls = workload(&[]);
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert!(wait_timeout(&mut child, Duration::from_secs(30)).success());
    let records = json_lines(&std::fs::read_to_string(&file).unwrap());
    let pid = calls[0]["pid"].clone();
    let mine = records
        .iter()
        .filter(|r| r["eventName"] == "sendfile" && r["processId"] == pid)
        .count();
    assert_eq!(mine, calls.len(), "traced with only {caps}");
}

#[test]
fn the_kubernetes_daemonset_has_what_the_tracer_needs() {
    let text =
        std::fs::read_to_string(repo_root().join("deploy/kubernetes/daemonset.yaml")).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).expect("valid YAML");
    let ds = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("DaemonSet"))
        .expect("a DaemonSet");
    assert_eq!(ds["apiVersion"].as_str(), Some("apps/v1"));
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["hostPID"].as_bool(), Some(true));
    let c = &spec["containers"][0];
    let add: Vec<&str> = c["securityContext"]["capabilities"]["add"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|y| y.as_str())
        .collect();
    assert_eq!(add, ["BPF", "PERFMON", "DAC_READ_SEARCH"]);
    assert_eq!(c["securityContext"]["privileged"].as_bool(), Some(false));
    let host_paths: Vec<&str> = spec["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    for p in ["/sys/kernel/tracing", "/sys/kernel/btf", "/sys/fs/cgroup"] {
        assert!(host_paths.contains(&p), "{p} not mounted");
    }
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    assert!(mounts.contains(&"/sys/kernel/tracing"));
    // The config it ships parses with the tracer's own config rules.
    let cm = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("ConfigMap"))
        .unwrap();
    let conf = cm["data"]["config.toml"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, conf).unwrap();
    for path in [path, repo_root().join("deploy/config.toml")] {
        let parsed = sendfile_trace::cli::config::parse_from([
            OsStr::new("sendfile-trace"),
            OsStr::new("--config"),
            path.as_os_str(),
        ]);
        assert!(
            matches!(parsed, sendfile_trace::cli::config::Parsed::Cli(_)),
            "{}: {parsed:?}",
            path.display()
        );
    }
}
