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

/// One HTTP/1.1 GET; returns the client's address and the body (status must be `want`).
fn fetch(
    ip: IpAddr,
    port: u16,
    path: &str,
    range: Option<u64>,
    want: u16,
) -> (SocketAddr, Vec<u8>) {
    let mut s = TcpStream::connect((ip, port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let range = range.map_or(String::new(), |r| format!("Range: bytes={r}-\r\n"));
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: test\r\n{range}Connection: close\r\n\r\n"
    )
    .unwrap();
    let local = s.local_addr().unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    let end = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete HTTP header");
    let head = String::from_utf8_lossy(&reply[..end]).into_owned();
    assert!(
        head.starts_with(&format!("HTTP/1.1 {want} ")),
        "GET /{path}: {head}"
    );
    (local, reply[end + 4..].to_vec())
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

#[test]
fn nginx_sendfile_matches_strace_one_for_one() {
    let _serial = serial();
    require_root();
    let nginx = need("nginx", "nginx");
    let strace_bin = need("strace", "strace");
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

    let start = now_ns();
    let tracer = Tracer::start("auto", &[]).unwrap_or_else(|f| panic!("{f:?}"));
    let traced = strace::command(&strace_bin, &log)
        .arg(&nginx)
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.join("error.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("cannot start strace");
    let mut served = Served {
        strace: traced,
        pid_file: dir.join("nginx.pid"),
    };
    let strace_pid = i64::from(served.strace.id());
    let v4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    wait_listening(SocketAddr::new(v4, port), &mut served.strace, &dir);
    wait_listening(SocketAddr::new(v6, port), &mut served.strace, &dir);

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

    let master: i64 = std::fs::read_to_string(dir.join("nginx.pid"))
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
    let stopped = tracer.stop();
    let window = (start, now_ns());
    check_frame(&stopped);

    let text = std::fs::read_to_string(&log).unwrap();
    let calls = strace::parse_log(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let pids: BTreeSet<i64> = [master].into_iter().chain(workers).collect();
    assert!(
        calls.iter().all(|c| pids.contains(&c.pid)),
        "sendfile only from nginx: {text}"
    );

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
