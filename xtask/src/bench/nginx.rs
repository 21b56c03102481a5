//! The nginx row of `cargo xtask bench`: what a SIEM ingests per GB that a real nginx serves with
//! `sendfile on`, in calls mode (one `sendfile` event per call) and in flows mode (one
//! `sendfile_flow` record per file and connection).
//!
//! One nginx (master and one worker, pinned to the workload's CPU) serves four files of 4 KiB,
//! 256 KiB, 4 MiB and 64 MiB from a private directory; a client of our own (HTTP/1.1 keep-alive
//! over [`CONNECTIONS`] connections, each answer read by its `Content-Length`) fetches them until
//! about `--nginx-bytes` have been served, the same byte volume from each file. The tracer (ours,
//! release build, default settings but `--comm nginx`, and in calls mode
//! `--max-events-per-process off`) writes tracee JSON to a file, once per mode. Its records of nginx's processes are counted and measured, and checked against what the
//! client received: the bytes their calls returned must equal the body bytes the client counted,
//! file by file, and the tracer must report nothing lost nor incomplete. A run that fails a
//! check is INVALID: its volume is not reported.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{HOOKS, Ready, WORKLOAD_CPU, bench_dir, start, stop};
use crate::{compile, run::interrupt};

/// The files served: name and size.
const FILES: [(&str, u64); 4] = [
    ("4k.bin", 4 << 10),
    ("256k.bin", 256 << 10),
    ("4m.bin", 4 << 20),
    ("64m.bin", 64 << 20),
];
/// Client connections, each kept alive for all its requests.
const CONNECTIONS: usize = 4;
/// A GB, as in "records per GB": 10^9 bytes.
const GB: f64 = 1e9;
/// A MB of JSON: 10^6 bytes.
const MB: f64 = 1e6;

/// nginx's configuration: master and one worker (root, as the bench runs), `sendfile on`, every
/// path in `dir`, listening on 127.0.0.1:`port`; keep-alive connections are never closed by the
/// server's request limit.
fn config(dir: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\nuser root root;\n\
         pid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  keepalive_requests 10000000;\n\
         keepalive_timeout 300s;\n  default_type application/octet-stream;\n\
         client_body_temp_path {d}/tmp/body;\n  proxy_temp_path {d}/tmp/proxy;\n\
         fastcgi_temp_path {d}/tmp/fastcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n\
         scgi_temp_path {d}/tmp/scgi;\n\
         server {{\n    listen 127.0.0.1:{port};\n    root {d}/www;\n  }}\n}}\n"
    )
}

/// nginx's command, from the usual places.
fn nginx_binary() -> Result<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .context("nginx is missing (cargo xtask installs the Debian package nginx)")
}

/// A port free on 127.0.0.1 (nothing holds it once returned; nginx binds it next).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Children of `pid`, from /proc/*/stat.
fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|stat| {
                stat.rfind(')').is_some_and(|close| {
                    stat[close + 1..].split_whitespace().nth(1) == Some(&pid.to_string())
                })
            })
        })
        .collect()
}

/// A running nginx; stopped (SIGINT: fast shutdown) when dropped, so that none outlives the bench.
struct Nginx {
    child: Child,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = interrupt(self.child.id());
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Writes the site into `dir` and starts nginx on it, pinned to [`WORKLOAD_CPU`]; returns it with
/// its port and its processes (master and worker) once it accepts connections.
fn serve(dir: &Path) -> Result<(Nginx, u16, Vec<u32>)> {
    let www = dir.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::create_dir_all(dir.join("tmp"))?;
    for (name, size) in FILES {
        // Not all zeroes, so that nothing along the way can make the bytes cheaper.
        let data: Vec<u8> = (0..size).map(|i| (i * 13 % 251) as u8).collect();
        std::fs::write(www.join(name), data)?;
    }
    let port = free_port()?;
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, config(dir, port))?;
    // taskset execs nginx: the child's pid is the master's.
    let child = Command::new("taskset")
        .args(["-c", WORKLOAD_CPU])
        .arg(nginx_binary()?)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start nginx")?;
    let mut nginx = Nginx { child };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(addr).is_err() {
        if let Some(status) = nginx.child.try_wait()? {
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            bail!("nginx exited {status} before listening on {addr}: {log}");
        }
        if Instant::now() > deadline {
            bail!("nginx never listened on {addr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let master = nginx.child.id();
    let workers = children(master);
    if workers.is_empty() {
        bail!("nginx {master} has no worker");
    }
    let pids = [master].into_iter().chain(workers).collect();
    Ok((nginx, port, pids))
}

/// What one client received: per file, requests answered and body bytes.
type Received = BTreeMap<&'static str, (u64, u64)>;

/// How the client spreads its requests over connections.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// [`CONNECTIONS`] connections, each kept alive for all its requests.
    KeepAlive,
    /// A new connection for every request (`Connection: close`), [`CONNECTIONS`] at a time.
    PerRequest,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::KeepAlive => "keep-alive",
            Shape::PerRequest => "per-request",
        }
    }
}

/// A client connection to nginx.
struct Conn {
    stream: TcpStream,
    /// Bytes read past the previous answer.
    buf: Vec<u8>,
    /// Where reads land.
    chunk: Vec<u8>,
}

impl Conn {
    fn open(port: u16) -> Result<Conn> {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
            chunk: vec![0u8; 1 << 20],
        })
    }

    /// Reads what the server sent next; `what` names what is still missing if it closed.
    fn fill(&mut self, what: &str) -> Result<()> {
        let n = self.stream.read(&mut self.chunk)?;
        if n == 0 {
            bail!("nginx closed the connection before {what}");
        }
        self.buf.extend_from_slice(&self.chunk[..n]);
        Ok(())
    }

    /// One HTTP/1.1 GET of `name` (status 200), its answer read by its `Content-Length`; the
    /// body is counted, not kept. Returns the body's length.
    fn get(&mut self, name: &str, close: bool) -> Result<u64> {
        let connection = if close { "close" } else { "keep-alive" };
        // One write per request (with Nagle's algorithm off): a request in pieces would wait for
        // the server's delayed ACK.
        self.stream.write_all(
            format!("GET /{name} HTTP/1.1\r\nHost: bench\r\nConnection: {connection}\r\n\r\n")
                .as_bytes(),
        )?;
        let end = loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            self.fill("a complete header")?;
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        if !head.starts_with("HTTP/1.1 200 ") {
            bail!("GET /{name}: {head}");
        }
        let len: u64 = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .with_context(|| format!("GET /{name}: no Content-Length: {head}"))?;
        self.buf.drain(..end + 4);
        // The body: what is buffered, then straight from the socket.
        let mut left = len;
        loop {
            let take = left.min(self.buf.len() as u64);
            self.buf.drain(..take as usize);
            left -= take;
            if left == 0 {
                break;
            }
            self.fill("the whole body")?;
        }
        Ok(len)
    }
}

/// One client thread: the GETs of `plan` one after another, on one keep-alive connection or on a
/// new connection each.
fn client(port: u16, plan: &[&'static str], shape: Shape) -> Result<Received> {
    let mut got = Received::new();
    let mut kept = None;
    for &name in plan {
        let len = match shape {
            Shape::KeepAlive => {
                if kept.is_none() {
                    kept = Some(Conn::open(port)?);
                }
                kept.as_mut().map_or(Ok(0), |c| c.get(name, false))?
            }
            Shape::PerRequest => Conn::open(port)?.get(name, true)?,
        };
        let e = got.entry(name).or_default();
        e.0 += 1;
        e.1 += len;
    }
    Ok(got)
}

/// The requests of each connection: the same byte volume from every file (at least one request
/// each), spread over [`CONNECTIONS`], each connection's requests of the files interleaved evenly.
fn plans(total: u64) -> Vec<Vec<&'static str>> {
    let per_file = total / FILES.len() as u64;
    let mut plans = vec![Vec::new(); CONNECTIONS];
    for (c, plan) in plans.iter_mut().enumerate() {
        let mut mine: Vec<(f64, &'static str)> = Vec::new();
        for (name, size) in FILES {
            let requests = (per_file / size).max(1);
            // This connection's share of them: requests c, c + CONNECTIONS, ...
            let n = (requests + (CONNECTIONS - 1 - c) as u64) / CONNECTIONS as u64;
            mine.extend((0..n).map(|k| ((k as f64 + 0.5) / n as f64, name)));
        }
        mine.sort_by(|a, b| a.0.total_cmp(&b.0));
        *plan = mine.into_iter().map(|(_, name)| name).collect();
    }
    plans
}

/// Per file (or in all): what the tracer wrote about nginx's calls of it.
#[derive(Default, Clone, Copy)]
struct Tally {
    /// Records (`sendfile` events, or `sendfile_flow` records plus any per-call fallbacks).
    records: u64,
    /// Their JSON bytes, newline included.
    json_bytes: u64,
    /// sendfile calls they stand for.
    calls: u64,
    /// Bytes those calls returned (positive returns).
    bytes: u64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.records += o.records;
        self.json_bytes += o.json_bytes;
        self.calls += o.calls;
        self.bytes += o.bytes;
    }
}

/// What the tracer wrote in one run.
struct Output {
    /// The records of nginx's processes, per served file (by the input's file name).
    files: BTreeMap<String, Tally>,
    /// `sendfile` and `sendfile_flow` records of other processes (another nginx on the host).
    others: u64,
    /// `sendfile` lines, every process's.
    event_lines: u64,
    /// `sendfile_flow` lines, every process's.
    flow_lines: u64,
    /// The `tracer_stop` record.
    stop: Value,
    /// nginx's flow records by `reason` (idle, interval, stop, evicted).
    reasons: BTreeMap<String, u64>,
    /// nginx's `sendfile` events that stand in for a flow (`contextFlags.flowFallback`).
    fallbacks: u64,
}

/// Reads the tracer's output; `pids` are nginx's processes.
fn tally(path: &Path, pids: &[u32]) -> Result<Output> {
    let mut files: BTreeMap<String, Tally> = BTreeMap::new();
    let (mut others, mut event_lines, mut flow_lines) = (0u64, 0u64, 0u64);
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut fallbacks = 0u64;
    let mut stop = Value::Null;
    let reader = BufReader::new(std::fs::File::open(path)?);
    for line in reader.lines() {
        let line = line?;
        let v: Value = serde_json::from_str(&line)
            .with_context(|| format!("not JSON in the tracer's output: {line}"))?;
        let name = v["eventName"].as_str().unwrap_or("");
        if name == "tracer_stop" {
            stop = v;
            continue;
        }
        match name {
            "sendfile" => event_lines += 1,
            "sendfile_flow" => flow_lines += 1,
            _ => continue,
        }
        let ours = v["hostProcessId"]
            .as_u64()
            .is_some_and(|p| pids.iter().any(|&n| u64::from(n) == p));
        if !ours {
            others += 1;
            continue;
        }
        let file = v["inFd"]["path"]
            .as_str()
            .and_then(|p| p.rsplit('/').next())
            .unwrap_or("?")
            .to_owned();
        let (calls, bytes) = if name == "sendfile" {
            if v["contextFlags"]["flowFallback"] == true {
                fallbacks += 1;
            }
            (1, v["returnValue"].as_i64().unwrap_or(0).max(0) as u64)
        } else {
            *reasons
                .entry(v["reason"].as_str().unwrap_or("?").to_owned())
                .or_default() += 1;
            (
                v["calls"].as_u64().unwrap_or(0),
                v["bytes"].as_u64().unwrap_or(0),
            )
        };
        files.entry(file).or_default().add(&Tally {
            records: 1,
            json_bytes: line.len() as u64 + 1,
            calls,
            bytes,
        });
    }
    if stop.is_null() {
        bail!("no tracer_stop record in {}", path.display());
    }
    Ok(Output {
        files,
        others,
        event_lines,
        flow_lines,
        stop,
        reasons,
        fallbacks,
    })
}

/// One mode: the tracer started on nginx's comm, the client's plans run, the tracer stopped and
/// its output checked against what the client received.
fn run_mode(mode: &str, shape: Shape, port: u16, pids: &[u32], total: u64) -> Result<Value> {
    let out = bench_dir().join(format!("nginx-{mode}.jsonl"));
    let _ = std::fs::remove_file(&out);
    let out_s = out.to_string_lossy().into_owned();
    let bin = compile::host_bin("sendfile-trace");
    let mut args = vec![
        "--hook", HOOKS[0], "--mode", mode, "--comm", "nginx", "--format", "tracee", "--output",
        &out_s,
    ];
    if mode == "calls" {
        // Every call an event, the volume calls mode as such sends (past the default limit of
        // 10,000 events a second, nginx's calls would partly be folded into flow records).
        args.extend(["--max-events-per-process", "off"]);
    }
    let tracer = start(
        "sendfile-trace",
        &bin,
        &args,
        Ready::File(out.clone(), "\"tracer_start\""),
    )?;
    let began = Instant::now();
    let results: Vec<Result<Received>> = std::thread::scope(|s| {
        let handles: Vec<_> = plans(total)
            .into_iter()
            .map(|plan| s.spawn(move || client(port, &plan, shape)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a client thread panicked")))
            })
            .collect()
    });
    let elapsed = began.elapsed().as_secs_f64();
    // Past the 250 ms loss poll, so that events_lost records are in before the stop.
    std::thread::sleep(Duration::from_millis(600));
    stop(tracer)?;
    let mut received = Received::new();
    for r in results {
        for (name, (requests, bytes)) in r? {
            let e = received.entry(name).or_default();
            e.0 += requests;
            e.1 += bytes;
        }
    }
    let Output {
        files: traced,
        others,
        event_lines,
        flow_lines,
        stop: stop_rec,
        reasons,
        fallbacks,
    } = tally(&out, pids)?;
    let json_size = std::fs::metadata(&out).map_or(0, |m| m.len());
    let _ = std::fs::remove_file(&out);

    let lost = stop_rec["lost"].as_u64().unwrap_or(0);
    let incomplete = stop_rec["incomplete"].as_u64().unwrap_or(0);
    let mut problems = Vec::new();
    if lost > 0 || incomplete > 0 {
        problems.push(format!("{lost} lost, {incomplete} incomplete"));
    }
    let mut all = Tally::default();
    let mut per_file = Vec::new();
    let served: u64 = received.values().map(|r| r.1).sum();
    for (name, size) in FILES {
        let (requests, bytes) = received.get(name).copied().unwrap_or_default();
        let t = traced.get(name).copied().unwrap_or_default();
        if t.bytes != bytes {
            problems.push(format!(
                "{name}: the calls returned {} bytes, the client got {bytes}",
                t.bytes
            ));
        }
        all.add(&t);
        per_file.push(json!({
            "file": name, "size": size, "requests": requests, "servedBytes": bytes,
            "records": t.records, "jsonBytes": t.json_bytes, "calls": t.calls,
            "sendfileBytes": t.bytes,
            "recordsPerGB": t.records as f64 * GB / bytes.max(1) as f64,
            "jsonMBPerGB": t.json_bytes as f64 / MB * GB / bytes.max(1) as f64,
            "callsPerGB": t.calls as f64 * GB / bytes.max(1) as f64,
        }));
    }
    let unknown: Vec<&String> = traced
        .keys()
        .filter(|k| !FILES.iter().any(|f| f.0 == *k))
        .collect();
    if !unknown.is_empty() {
        problems.push(format!("records of nginx for other files: {unknown:?}"));
    }
    // The tracer's own counts of what it wrote must be what the file holds.
    let events = stop_rec["events"].as_u64();
    if events != Some(event_lines) {
        problems.push(format!(
            "tracer_stop counts {events:?} sendfile events, the file has {event_lines}"
        ));
    }
    let flow_records = stop_rec["flowRecords"].as_u64().unwrap_or(0);
    if flow_records != flow_lines {
        problems.push(format!(
            "tracer_stop counts {flow_records} flow records, the file has {flow_lines}"
        ));
    }
    let valid = problems.is_empty();
    eprintln!(
        "xtask: bench nginx {mode} {}: {served} bytes served in {elapsed:.1} s, {} records, {} JSON \
         bytes, {} calls{}",
        shape.name(),
        all.records,
        all.json_bytes,
        all.calls,
        if valid {
            String::new()
        } else {
            format!(": INVALID ({})", problems.join("; "))
        }
    );
    Ok(json!({
        "mode": mode,
        "shape": shape.name(),
        "valid": valid,
        "problems": problems,
        "servedBytes": served,
        "requests": received.values().map(|r| r.0).sum::<u64>(),
        "clientSeconds": elapsed,
        "records": all.records,
        "jsonBytes": all.json_bytes,
        "calls": all.calls,
        "sendfileBytes": all.bytes,
        "recordsPerGB": if valid { json!(all.records as f64 * GB / served.max(1) as f64) } else { Value::Null },
        "jsonMBPerGB": if valid { json!(all.json_bytes as f64 / MB * GB / served.max(1) as f64) } else { Value::Null },
        "callsPerGB": all.calls as f64 * GB / served.max(1) as f64,
        "perFile": per_file,
        "flowRecordsByReason": reasons,
        "flowFallbackEvents": fallbacks,
        "otherProcessesRecords": others,
        "outputFileBytes": json_size,
        "tracerStop": stop_rec,
    }))
}

/// The nginx row: nginx started once, then, for each [`Shape`], traced in calls mode and in flows
/// mode, `total` bytes served each time; the ratio flows ÷ calls when both runs are valid.
pub(super) fn nginx(total: u64) -> Result<Value> {
    let dir = bench_dir().join("nginx");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let dir = std::fs::canonicalize(&dir)?;
    eprintln!(
        "xtask: bench nginx: about {total} bytes served per run, {CONNECTIONS} client threads"
    );
    let result = (|| {
        let (nginx, port, pids) = serve(&dir)?;
        let mut shapes = Vec::new();
        for shape in [Shape::KeepAlive, Shape::PerRequest] {
            let calls = run_mode("calls", shape, port, &pids, total)?;
            let flows = run_mode("flows", shape, port, &pids, total)?;
            let ratio = |key: &str| match (calls[key].as_f64(), flows[key].as_f64()) {
                (Some(c), Some(f)) if c > 0.0 => json!(f / c),
                _ => Value::Null,
            };
            shapes.push(json!({
                "shape": shape.name(),
                "runs": [&calls, &flows],
                "flowsOverCalls": {
                    "records": ratio("recordsPerGB"),
                    "jsonBytes": ratio("jsonMBPerGB"),
                },
            }));
        }
        drop(nginx);
        Ok(json!({
            "files": FILES.iter().map(|(n, s)| json!({"file": n, "size": s})).collect::<Vec<_>>(),
            "clientThreads": CONNECTIONS,
            "targetBytes": total,
            "nginxPids": pids,
            "shapes": shapes,
        }))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The nginx rows: per mode, per file and in all.
pub(super) fn table(n: &Value, table: &mut String) {
    let _ = writeln!(
        table,
        "\nnginx (sendfile on, 1 worker on CPU {WORKLOAD_CPU}) serving the same bytes from files \
         of 4 KiB, 256 KiB, 4 MiB, 64 MiB to {CONNECTIONS} client threads, over one keep-alive \
         connection each or over a new connection per request; ours with --comm nginx (calls mode with --max-events-per-process off) writing tracee JSON to a file; per GB (10^9 B) of \
         body served; a run that lost anything or whose calls do not add up to the bytes the \
         client received is INVALID:"
    );
    let _ = writeln!(
        table,
        "{:<11} {:<6} {:<9} {:>9} {:>10} {:>9} {:>9} {:>10} {:>12} {:>11} {:>10} {:>8}",
        "connections",
        "mode",
        "file",
        "requests",
        "served MB",
        "calls",
        "records",
        "JSON MB",
        "records/GB",
        "JSON MB/GB",
        "calls/GB",
        "valid"
    );
    for sh in n["shapes"].as_array().into_iter().flatten() {
        shape_rows(sh, table);
    }
}

/// The rows of one [`Shape`]: per mode, per file and in all, then the ratio.
fn shape_rows(sh: &Value, table: &mut String) {
    let shape = sh["shape"].as_str().unwrap_or("");
    for r in sh["runs"].as_array().into_iter().flatten() {
        let valid = r["valid"] == true;
        let row = |table: &mut String, file: &str, x: &Value| {
            let served = x["servedBytes"].as_f64().unwrap_or(0.0);
            let records = x["records"].as_f64().unwrap_or(0.0);
            let json_bytes = x["jsonBytes"].as_f64().unwrap_or(0.0);
            let per_gb = |v: f64| v * GB / served.max(1.0);
            let (rec_gb, mb_gb) = if valid {
                (
                    format!("{:.0}", per_gb(records)),
                    format!("{:.2}", per_gb(json_bytes) / MB),
                )
            } else {
                ("INVALID".to_owned(), "INVALID".to_owned())
            };
            let _ = writeln!(
                table,
                "{:<11} {:<6} {:<9} {:>9} {:>10.1} {:>9} {:>9} {:>10.2} {:>12} {:>11} {:>10.0} {:>8}",
                shape,
                r["mode"].as_str().unwrap_or(""),
                file,
                x["requests"].to_string(),
                served / MB,
                x["calls"].to_string(),
                x["records"].to_string(),
                json_bytes / MB,
                rec_gb,
                mb_gb,
                per_gb(x["calls"].as_f64().unwrap_or(0.0)),
                valid,
            );
        };
        for f in r["perFile"].as_array().into_iter().flatten() {
            row(table, f["file"].as_str().unwrap_or(""), f);
        }
        row(table, "all", r);
        if r["mode"] == "flows" {
            let _ = writeln!(
                table,
                "  {shape} flows: nginx's flow records by reason {}, per-call fallback events {}",
                r["flowRecordsByReason"], r["flowFallbackEvents"]
            );
        }
        for p in r["problems"].as_array().into_iter().flatten() {
            let _ = writeln!(
                table,
                "  INVALID {shape} {}: {}",
                r["mode"].as_str().unwrap_or(""),
                p.as_str().unwrap_or("")
            );
        }
    }
    let ratio = &sh["flowsOverCalls"];
    let _ = writeln!(
        table,
        "{shape}: flows ÷ calls, all files: records {}, JSON bytes {}",
        ratio["records"]
            .as_f64()
            .map_or("n/a (a run is INVALID)".into(), |r| format!("{r:.4}")),
        ratio["jsonBytes"]
            .as_f64()
            .map_or("n/a (a run is INVALID)".into(), |r| format!("{r:.4}")),
    );
}
