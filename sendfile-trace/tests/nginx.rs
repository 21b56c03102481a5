//! A real nginx (master + one worker, `sendfile on`) serving files over IPv4 and IPv6 to a real
//! HTTP client, under `strace -f -yy`: the tracer's events for nginx's processes must match
//! strace's sendfile lines one for one — descriptors, input path, socket endpoints, offsets,
//! count and result — and strace's lines must add up to exactly what the client received.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use support::*;

/// Bigger than nginx's default `sendfile_max_chunk` (2 MiB): served in several calls.
const BIG: usize = 5 * 1024 * 1024 + 123;

/// A command the test needs, or a one-line failure naming the fix.
fn need(tool: &str, package: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(dir).join(tool);
        if p.is_file() {
            return p;
        }
    }
    panic!("{tool} is missing: run `cargo xtask test` (it installs the Debian package {package})");
}

/// A port free on both 127.0.0.1 and ::1.
fn free_port() -> u16 {
    for _ in 0..100 {
        let v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = v4.local_addr().unwrap().port();
        if TcpListener::bind((Ipv6Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free on both 127.0.0.1 and ::1");
}

/// Files nginx serves: name → content.
fn site(root: &Path) -> BTreeMap<&'static str, Vec<u8>> {
    let mut files = BTreeMap::new();
    files.insert("small.txt", b"hello from nginx\n".to_vec());
    files.insert(
        "medium.bin",
        (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect(),
    );
    files.insert("big.bin", (0..BIG).map(|i| (i * 13 % 253) as u8).collect());
    for (name, data) in &files {
        std::fs::write(root.join(name), data).unwrap();
    }
    files
}

fn config(dir: &Path, port: u16) -> String {
    let d = dir.display();
    // Running as root (the suite must): workers stay root, so no other user is needed.
    format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\nuser root root;\n\
         pid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n  default_type application/octet-stream;\n\
         client_body_temp_path {d}/tmp/body;\n  proxy_temp_path {d}/tmp/proxy;\n\
         fastcgi_temp_path {d}/tmp/fastcgi;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n\
         scgi_temp_path {d}/tmp/scgi;\n\
         server {{\n    listen 127.0.0.1:{port};\n    listen [::1]:{port};\n    root {d}/www;\n  }}\n}}\n"
    )
}

/// A client connection to nginx: HTTP/1.1 requests one after another, each answer read by its
/// `Content-Length`.
struct Conn {
    stream: TcpStream,
    /// Bytes read past the previous answer.
    buf: Vec<u8>,
}

impl Conn {
    fn open(ip: IpAddr, port: u16) -> Conn {
        let stream = TcpStream::connect((ip, port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// The client's address.
    fn local(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }

    /// One GET of `path` (from byte `range` on, if any) on this connection, kept alive unless
    /// `close`; returns the body (status must be `want`).
    fn get(&mut self, path: &str, range: Option<u64>, want: u16, close: bool) -> Vec<u8> {
        let range = range.map_or(String::new(), |r| format!("Range: bytes={r}-\r\n"));
        let connection = if close { "close" } else { "keep-alive" };
        write!(
            self.stream,
            "GET /{path} HTTP/1.1\r\nHost: test\r\n{range}Connection: {connection}\r\n\r\n"
        )
        .unwrap();
        let end = loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            self.fill(&format!("GET /{path}: a complete HTTP header"));
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        assert!(
            head.starts_with(&format!("HTTP/1.1 {want} ")),
            "GET /{path}: {head}"
        );
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or_else(|| panic!("GET /{path}: no Content-Length: {head}"));
        while self.buf.len() < end + 4 + len {
            self.fill(&format!("GET /{path}: {len} bytes of body"));
        }
        let body = self.buf[end + 4..end + 4 + len].to_vec();
        self.buf.drain(..end + 4 + len);
        body
    }

    /// Reads what the server sent next; `what` names what is still missing if it closed.
    fn fill(&mut self, what: &str) {
        let mut chunk = [0u8; 65536];
        let n = self.stream.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed before {what}");
        self.buf.extend_from_slice(&chunk[..n]);
    }
}

/// One HTTP/1.1 GET on a connection of its own; returns the client's address and the body
/// (status must be `want`).
fn fetch(
    ip: IpAddr,
    port: u16,
    path: &str,
    range: Option<u64>,
    want: u16,
) -> (SocketAddr, Vec<u8>) {
    let mut c = Conn::open(ip, port);
    (c.local(), c.get(path, range, want, true))
}

/// Waits until nginx accepts on `addr`.
fn wait_listening(addr: SocketAddr, nginx: &mut Child, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while TcpStream::connect(addr).is_err() {
        if let Some(st) = nginx.try_wait().unwrap() {
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            panic!("nginx (under strace) exited {st} before listening on {addr}: {log}");
        }
        assert!(Instant::now() < deadline, "nginx never listened on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// strace running nginx; a test that fails half-way stops nginx (SIGTERM to the master, from its
/// pid file) and strace, so no server outlives it.
struct Served {
    strace: Child,
    pid_file: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Ok(None) = self.strace.try_wait() {
            if let Some(master) = std::fs::read_to_string(&self.pid_file)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
            {
                // SAFETY: a signal to the nginx master this test started.
                unsafe { libc::kill(master, libc::SIGTERM) };
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(self.strace.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.strace.kill();
            let _ = self.strace.wait();
        }
    }
}

/// Children of `pid`, from /proc/*/stat.
fn children(pid: i64) -> Vec<i64> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<i64>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some(close) = stat.iter().rposition(|&b| b == b')') else {
            continue;
        };
        let rest = String::from_utf8_lossy(&stat[close + 1..]);
        if rest.split_whitespace().nth(1).and_then(|v| v.parse().ok()) == Some(pid) {
            out.push(p);
        }
    }
    out
}

/// A site for nginx in a temporary directory (the files of [`site`], a configuration listening on
/// a free port of 127.0.0.1 and ::1), ready to be served under strace.
struct Site {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    nginx: PathBuf,
    strace: PathBuf,
    /// nginx's executable, as the tracer names it.
    exe: String,
    files: BTreeMap<&'static str, Vec<u8>>,
    port: u16,
    conf: PathBuf,
    log: PathBuf,
}

/// What strace saw, once nginx stopped.
struct Oracle {
    master: i64,
    /// The master and its workers.
    pids: BTreeSet<i64>,
    /// strace's pid: the master's parent.
    strace_pid: i64,
    /// The log.
    text: String,
    calls: Vec<strace::Call>,
}

impl Site {
    /// Checks for nginx and strace, writes the site and its configuration.
    fn prepare() -> Site {
        let nginx = need("nginx", "nginx");
        let strace = need("strace", "strace");
        let exe = std::fs::canonicalize(&nginx).unwrap().display().to_string();
        let tmp = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(tmp.path()).unwrap();
        let www = dir.join("www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let files = site(&www);
        let port = free_port();
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config(&dir, port)).unwrap();
        let log = dir.join("strace.log");
        Site {
            _tmp: tmp,
            dir,
            nginx,
            strace,
            exe,
            files,
            port,
            conf,
            log,
        }
    }

    /// Starts nginx under `strace -f -yy` and waits until it accepts on both addresses.
    fn serve(&self) -> Served {
        let traced = strace::command(&self.strace, &self.log)
            .arg(&self.nginx)
            .arg("-p")
            .arg(&self.dir)
            .arg("-c")
            .arg(&self.conf)
            .arg("-e")
            .arg(self.dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("cannot start strace");
        let mut served = Served {
            strace: traced,
            pid_file: self.dir.join("nginx.pid"),
        };
        for ip in [V4, V6] {
            wait_listening(
                SocketAddr::new(ip, self.port),
                &mut served.strace,
                &self.dir,
            );
        }
        served
    }

    /// Stops nginx (SIGTERM to its master), waits for strace, and reads strace's sendfile lines,
    /// which must all be nginx's (one master, one worker).
    fn stop(&self, mut served: Served) -> Oracle {
        let strace_pid = i64::from(served.strace.id());
        let master: i64 = std::fs::read_to_string(self.dir.join("nginx.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let workers = children(master);
        assert_eq!(workers.len(), 1, "one worker: {workers:?}");
        // SAFETY: a signal to the nginx master this test started.
        unsafe { libc::kill(master as i32, libc::SIGTERM) };
        let status = wait_timeout(&mut served.strace, Duration::from_secs(120));
        assert!(status.success(), "strace/nginx exit {status}");
        let text = std::fs::read_to_string(&self.log).unwrap();
        let calls = strace::parse_log(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let pids: BTreeSet<i64> = [master].into_iter().chain(workers).collect();
        assert!(
            calls.iter().all(|c| pids.contains(&c.pid)),
            "sendfile only from nginx: {text}"
        );
        Oracle {
            master,
            pids,
            strace_pid,
            text,
            calls,
        }
    }
}

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

#[test]
fn nginx_sendfile_matches_strace_one_for_one() {
    let _serial = serial();
    require_root();
    let served_site = Site::prepare();
    let (exe, files, port) = (&served_site.exe, &served_site.files, served_site.port);

    let start = now_ns();
    let tracer = Tracer::start("auto", &[]).unwrap_or_else(|f| panic!("{f:?}"));
    let served = served_site.serve();
    let (v4, v6) = (V4, V6);

    // (client address, body length) of every fetch.
    let mut fetched = Vec::new();
    for (ip, name, range) in [
        (v4, "small.txt", None),
        (v4, "medium.bin", None),
        (v4, "big.bin", None),
        (v6, "small.txt", None),
        (v6, "big.bin", None),
        (v6, "big.bin", Some(1000u64)),
    ] {
        let (status, from) = match range {
            Some(r) => (206, r as usize),
            None => (200, 0),
        };
        let (client, body) = fetch(ip, port, name, range, status);
        assert!(
            body == files[name][from..],
            "GET /{name} from {from}: wrong body"
        );
        fetched.push((client, body.len() as i64));
    }

    let oracle = served_site.stop(served);
    let stopped = tracer.stop();
    let window = (start, now_ns());
    check_frame(&stopped);
    let Oracle {
        master,
        strace_pid,
        text,
        calls,
        pids,
        ..
    } = oracle;

    // strace alone accounts for every byte the client received, connection by connection: the
    // fetches ran one after another, so strace's sockets, in order of first use, are the
    // fetches' connections. (Without sock_diag, as in the VM guests, strace names a socket by
    // inode only; with it, by its endpoints, which must then be the client's.)
    let socket_of = |c: &strace::Call| format!("{:?}", c.out_fd.desc);
    let mut connections: Vec<String> = Vec::new();
    for c in &calls {
        if !connections.contains(&socket_of(c)) {
            connections.push(socket_of(c));
        }
    }
    assert_eq!(
        connections.len(),
        fetched.len(),
        "one socket per fetch: {text}"
    );
    for (k, (client, len)) in fetched.iter().enumerate() {
        let mine: Vec<&strace::Call> = calls
            .iter()
            .filter(|c| socket_of(c) == connections[k])
            .collect();
        let sent: i64 = mine.iter().map(|c| c.ret.max(0)).sum();
        assert_eq!(sent, *len, "bytes sent to {client}: {text}");
        for c in mine {
            if let Some(strace::Desc::Tcp { remote, .. }) = &c.out_fd.desc {
                assert_eq!(remote, client, "{c:?}");
            }
        }
    }
    let big_calls = calls
        .iter()
        .filter(|c| matches!(&c.in_fd.desc, Some(strace::Desc::Path { path, .. }) if path.ends_with(b"/big.bin")))
        .count();
    assert!(big_calls >= 6, "big.bin goes out in chunks: {text}");

    // The tracer's events of nginx's processes, one per strace line, in order per thread.
    let mut events: Vec<&Value> = stopped
        .records
        .iter()
        .filter(|r| {
            r["eventName"] == "sendfile"
                && r["processId"].as_i64().is_some_and(|p| pids.contains(&p))
        })
        .collect();
    events.sort_by_key(|e| e["timestamp"].as_u64());
    assert_eq!(
        events.len(),
        calls.len(),
        "one event per strace line\nstrace: {text}\nevents: {events:#?}"
    );
    let mut fd_mismatches = Vec::new();
    for pid in &pids {
        let mine: Vec<&Value> = events
            .iter()
            .copied()
            .filter(|e| e["threadId"] == *pid)
            .collect();
        let theirs: Vec<&strace::Call> = calls.iter().filter(|c| c.pid == *pid).collect();
        assert_eq!(mine.len(), theirs.len(), "calls of thread {pid}");
        for (c, e) in theirs.iter().zip(&mine) {
            let ctx = format!("strace {c:?}\nevent {e}");
            assert_eq!(e["processName"], "nginx", "{ctx}");
            let ts = e["timestamp"].as_u64().unwrap();
            assert!(window.0 <= ts && ts <= window.1, "{ctx}");
            assert_eq!(e["syscall"], "sendfile64", "{ctx}");
            assert!(
                matches!(c.offset, strace::Offset::Value(..)),
                "nginx passes its offset by pointer: {ctx}"
            );
            fd_mismatches.extend(strace_call_mismatch(c, e, &ctx));
            // The endpoints the client saw, whatever strace could tell.
            let k = connections.iter().position(|s| *s == socket_of(c)).unwrap();
            let client = fetched[k].0;
            let server = SocketAddr::new(client.ip(), port);
            let end =
                |a: SocketAddr| serde_json::json!({"ip": a.ip().to_string(), "port": a.port()});
            if e["outFd"]["local"] != end(server) || e["outFd"]["remote"] != end(client) {
                fd_mismatches.push(format!("want outFd {server} -> {client}: {}", e["outFd"]));
            }
            // The master is strace's child, the worker the master's.
            let ppid = if *pid == master { strace_pid } else { master };
            if e["parentProcessId"] != ppid || e["executable"]["path"] != exe.as_str() {
                fd_mismatches.push(format!(
                    "thread {pid}: want parentProcessId {ppid} and executable {exe}: {e}"
                ));
            }
        }
    }
    assert!(
        fd_mismatches.is_empty(),
        "descriptor and process fields: {} fd object(s) of nginx's calls differ from strace -yy:\n{}",
        fd_mismatches.len(),
        fd_mismatches.join("\n")
    );
}

/// `--mode flows` against the same nginx, with strace as the oracle: three files over one
/// keep-alive connection, then a range and a file over a second one. For every (nginx process,
/// file, socket), the flow records (final and interim) add up to exactly strace's count of calls
/// and sum of returns, their paths and endpoints are strace's, their first and last offsets are
/// those of strace's first and last call; no call is left without a flow, no flow without calls,
/// and the bytes of all flows are what the client received.
#[test]
fn nginx_flows_add_up_to_strace_per_file_and_connection() {
    let _serial = serial();
    require_root();
    let served_site = Site::prepare();
    let (files, port) = (&served_site.files, served_site.port);

    let start = now_ns();
    // A short idle time and interval: flows end soon after their last call, and a big file's
    // flow may well get interim records.
    let tracer = Tracer::start(
        "auto",
        &[
            "--mode",
            "flows",
            "--flow-idle",
            "200ms",
            "--flow-interval",
            "20ms",
        ],
    )
    .unwrap_or_else(|f| panic!("{f:?}"));
    let served = served_site.serve();

    // (client address, body bytes) of every connection.
    let mut clients = Vec::new();
    for (ip, gets) in [
        (
            V4,
            &[("small.txt", None), ("medium.bin", None), ("big.bin", None)][..],
        ),
        (V6, &[("big.bin", Some(1000u64)), ("small.txt", None)][..]),
    ] {
        let mut conn = Conn::open(ip, port);
        let mut received = 0;
        for (k, (name, range)) in gets.iter().enumerate() {
            let (status, from) = match range {
                Some(r) => (206, *r as usize),
                None => (200, 0),
            };
            let last = k + 1 == gets.len();
            let body = conn.get(name, *range, status, last);
            assert!(
                body == files[name][from..],
                "GET /{name} from {from}: wrong body"
            );
            received += body.len() as i64;
        }
        clients.push((conn.local(), received));
    }
    let received: i64 = clients.iter().map(|c| c.1).sum();
    // Let the flows go idle and their records be written before anything stops.
    std::thread::sleep(Duration::from_millis(600));

    let oracle = served_site.stop(served);
    let stopped = tracer.stop();
    let window = (start, now_ns());
    check_frame(&stopped);
    let text = &oracle.text;

    // strace's calls by (thread, in-file, socket), in order; strace's sockets are the client's
    // two connections, each kept for all its requests.
    type Key = (i64, String, String);
    let key_of = |c: &strace::Call| -> Key {
        (
            c.pid,
            format!("{:?}", c.in_fd.desc),
            format!("{:?}", c.out_fd.desc),
        )
    };
    let mut groups: BTreeMap<Key, Vec<&strace::Call>> = BTreeMap::new();
    for c in &oracle.calls {
        groups.entry(key_of(c)).or_default().push(c);
    }
    let sockets: BTreeSet<&String> = groups.keys().map(|k| &k.2).collect();
    assert_eq!(sockets.len(), 2, "two connections: {text}");
    assert_eq!(groups.len(), 5, "five (file, connection) pairs: {text}");
    for c in &oracle.calls {
        if let Some(strace::Desc::Tcp { remote, .. }) = &c.out_fd.desc {
            assert!(clients.iter().any(|(client, _)| client == remote), "{c:?}");
        }
    }
    let strace_bytes: i64 = oracle.calls.iter().map(|c| c.ret.max(0)).sum();
    assert_eq!(strace_bytes, received, "strace's returns: {text}");

    // The flow records of nginx's processes, by flowId, in the order written.
    let mut flows: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for r in &stopped.records {
        if r["eventName"] == "sendfile_flow"
            && r["processId"]
                .as_i64()
                .is_some_and(|p| oracle.pids.contains(&p))
        {
            flows
                .entry(r["flowId"].as_u64().unwrap())
                .or_default()
                .push(r);
        }
    }
    assert!(
        !stopped.records.iter().any(|r| r["eventName"] == "sendfile"
            && r["processId"]
                .as_i64()
                .is_some_and(|p| oracle.pids.contains(&p))),
        "flows mode: no per-call event of nginx (a fallback would be one)"
    );

    // Each flow belongs to exactly one strace group: same process, and descriptors equal to
    // strace's -yy view of the group's calls (number, path, endpoints).
    let mut of_group: BTreeMap<&Key, Vec<(&Vec<&Value>, FlowSum)>> = BTreeMap::new();
    let mut mismatches = Vec::new();
    for (id, recs) in &flows {
        let sum = flow_sum(recs);
        let last = recs[recs.len() - 1];
        let ctx = format!("flow {id}: {recs:#?}");
        assert!(
            last["reason"] == "idle" || last["reason"] == "stop",
            "{ctx}"
        );
        assert_eq!(last["processName"], "nginx", "{ctx}");
        assert_eq!(
            last["executable"]["path"],
            served_site.exe.as_str(),
            "{ctx}"
        );
        assert_eq!(last["syscall"], "sendfile64", "{ctx}");
        assert_eq!(last["throttled"], false, "{ctx}");
        assert_eq!(
            last["processId"], last["threadId"],
            "nginx is single-threaded: {ctx}"
        );
        let first_ts = last["firstTimestamp"].as_u64().unwrap();
        let last_ts = last["lastTimestamp"].as_u64().unwrap();
        assert!(
            window.0 <= first_ts && first_ts <= last_ts && last_ts <= window.1,
            "{ctx}"
        );
        let pid = last["processId"].as_i64().unwrap();
        let matching: Vec<&Key> = groups
            .iter()
            .filter(|(k, calls)| {
                k.0 == pid
                    && strace_fd_mismatch(&calls[0].in_fd, &last["inFd"]).is_none()
                    && strace_fd_mismatch(&calls[0].out_fd, &last["outFd"]).is_none()
            })
            .map(|(k, _)| k)
            .collect();
        if matching.len() != 1 {
            // Say how the flow's descriptors differ from those of strace's calls.
            let why: Vec<String> = groups
                .values()
                .filter(|calls| calls[0].pid == pid)
                .flat_map(|calls| {
                    strace_fd_mismatch(&calls[0].in_fd, &last["inFd"])
                        .into_iter()
                        .chain(strace_fd_mismatch(&calls[0].out_fd, &last["outFd"]))
                })
                .collect();
            mismatches.push(format!(
                "flow {id} matches {} strace groups, not 1: {}\n{}",
                matching.len(),
                last,
                why.join("\n")
            ));
            continue;
        }
        of_group.entry(matching[0]).or_default().push((recs, sum));
    }
    assert!(
        mismatches.is_empty(),
        "flows whose descriptors are not strace's:\n{}\nstrace: {text}",
        mismatches.join("\n")
    );

    // Per group: the flows' sums are strace's, to the call and the byte.
    let mut flow_bytes = 0;
    let mut records = 0;
    let mut interim = 0;
    for (key, calls) in &groups {
        let Some(found) = of_group.get_mut(key) else {
            panic!("strace's calls {calls:#?} have no flow: {flows:#?}");
        };
        found.sort_by_key(|(recs, _)| recs[0]["firstTimestamp"].as_u64());
        let ctx = format!("strace {calls:#?}\nflows {found:#?}");
        let calls_n: u64 = found.iter().map(|(_, s)| s.calls).sum();
        let bytes: u64 = found.iter().map(|(_, s)| s.bytes).sum();
        let failed: u64 = found.iter().map(|(_, s)| s.failed).sum();
        let mut errnos: BTreeMap<String, u64> = BTreeMap::new();
        for (_, s) in found.iter() {
            for (k, v) in &s.errnos {
                *errnos.entry(k.clone()).or_default() += v;
            }
        }
        let mut want_errnos: BTreeMap<String, u64> = BTreeMap::new();
        for c in calls {
            if let Some(e) = &c.errno {
                *want_errnos.entry(e.clone()).or_default() += 1;
            }
        }
        assert_eq!(calls_n, calls.len() as u64, "calls: {ctx}");
        assert_eq!(
            bytes as i64,
            calls.iter().map(|c| c.ret.max(0)).sum::<i64>(),
            "bytes: {ctx}"
        );
        assert_eq!(failed, want_errnos.values().sum::<u64>(), "failed: {ctx}");
        assert_eq!(errnos, want_errnos, "errnos: {ctx}");
        let (strace::Offset::Value(first, _), strace::Offset::Value(_, last)) =
            (&calls[0].offset, &calls[calls.len() - 1].offset)
        else {
            panic!("nginx passes its offset by pointer: {ctx}");
        };
        let first_recs = found[0].0;
        let last_recs = found[found.len() - 1].0;
        assert_eq!(first_recs[0]["offsetFirst"], *first, "offsetFirst: {ctx}");
        assert_eq!(
            last_recs[last_recs.len() - 1]["offsetLast"],
            *last,
            "offsetLast: {ctx}"
        );
        flow_bytes += bytes as i64;
        for (recs, _) in found.iter() {
            records += recs.len();
            interim += recs.iter().filter(|r| r["final"] == false).count();
        }
    }
    assert_eq!(
        flow_bytes, received,
        "all flows' bytes: what the client got"
    );
    let most = groups.values().map(Vec::len).max().unwrap();
    assert!(most >= 3, "big.bin goes out in several calls: {text}");
    eprintln!(
        "{} strace calls ({received} bytes) in {} (file, connection) pairs = {} flows, {records} \
         records ({interim} interim)",
        oracle.calls.len(),
        groups.len(),
        flows.len()
    );
}
