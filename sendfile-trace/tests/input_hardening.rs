//! Hostile input to the tracer itself, each class checked against the real binary: its metrics
//! endpoint, its config file and flags, its privileges, its pid namespace, a terminal, and a stop
//! while a traced call is blocked.

mod support;

use std::{
    ffi::OsStr,
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use support::*;

/// A field of /proc/PID/status, in its unit (kB for memory).
fn status_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{field} missing from /proc/{pid}/status"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends one raw request and returns the whole response (the server closes after it).
fn http(addr: &str, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET /metrics` must answer 200 with the exposition.
fn scrape(addr: &str) -> String {
    let r = http(
        addr,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.contains("sendfile_trace_events_lost_total"), "{r}");
    r
}

#[test]
fn the_metrics_endpoint_bounds_memory_threads_time_and_methods() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.json");
    let addr = format!("127.0.0.1:{}", free_port());
    // A comm nobody has: no events, so the daemon's memory moves only with the clients.
    let tracer = Tracer::start(
        "auto",
        &[
            "--output",
            file.to_str().unwrap(),
            "--metrics",
            &addr,
            "--comm",
            "no-such-comm-m",
        ],
    )
    .unwrap();
    let pid = tracer.pid();
    scrape(&addr);
    let rss = status_field(pid, "VmRSS:");
    let threads = status_field(pid, "Threads:");

    // Endless headers: the server stops reading them after its limit; before, it kept them all
    // (hundreds of MB after four such clients).
    let chunk = vec![b'a'; 1 << 20];
    for _ in 0..4 {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ")
            .unwrap();
        let mut sent = 0;
        while sent < 64 && s.write_all(&chunk).is_ok() {
            sent += 1;
        }
        assert!(sent < 64, "the server read 64 MiB of one header");
    }
    let grown = status_field(pid, "VmRSS:").saturating_sub(rss);
    assert!(grown < 16 << 10, "RSS grew by {grown} kB with huge headers");
    scrape(&addr);

    // Many idle connections: no thread each, and a scrape still gets through at once.
    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    scrape(&addr);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "a scrape behind 200 idle connections took {:?}",
        t.elapsed()
    );
    let now = status_field(pid, "Threads:");
    assert!(
        now <= threads + 1,
        "threads went from {threads} to {now} with 200 idle connections"
    );
    // And each idle one is closed within its time limit (or pushed out by newer ones).
    for mut s in idle {
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut b = [0u8; 1];
        match s.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("an idle connection stayed open: {other:?}"),
        }
    }
    let grown = status_field(pid, "VmRSS:").saturating_sub(rss);
    assert!(grown < 16 << 10, "RSS grew by {grown} kB");

    // Only GET and HEAD.
    for method in ["POST", "PUT", "DELETE"] {
        let r = http(
            &addr,
            &format!(
                "{method} /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: \
                 close\r\n\r\nhello"
            ),
        );
        assert!(r.starts_with("HTTP/1.1 405"), "{method}: {r}");
        assert!(r.to_ascii_lowercase().contains("allow: get, head"), "{r}");
    }
    let r = http(
        &addr,
        "HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.ends_with("\r\n\r\n"), "HEAD got a body: {r}");
    let r = http(&addr, "GET /other HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    scrape(&addr);
    let stopped = tracer.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
}

/// Runs the tracer with `args` (it must refuse them at once) and returns its exit code and the
/// first line of its stderr.
fn refused(args: &[&OsStr], cwd: &Path) -> (i32, String) {
    let mut child = Command::new(tracer_bin())
        .args(args)
        .current_dir(cwd)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(10));
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    // Config and filter errors are one line; clap's usage errors add a hint after a blank line.
    let first = err.lines().next().unwrap_or_default().to_owned();
    assert!(
        err.lines().count() == 1 || err.contains("\n\nFor more information"),
        "{err}"
    );
    (status.code().unwrap(), first)
}

#[test]
fn hostile_config_files_and_flags_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let os = |s: &str| OsStr::new(s).to_owned();
    let path = |p: &Path| p.as_os_str().to_owned();
    let run = |args: Vec<std::ffi::OsString>| {
        let args: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        refused(&args, dir.path())
    };

    // A config that is an endless device, a FIFO without writer, a directory.
    let zero = dir.path().join("zero.toml");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let (code, err) = run(vec![os("--config"), path(&zero)]);
    assert_eq!(code, 1);
    assert!(err.contains("it is a character device"), "{err}");
    let fifo = dir.path().join("fifo.toml");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let (code, err) = run(vec![os("--config"), path(&fifo)]);
    assert_eq!(code, 1);
    assert!(err.contains("it is a FIFO"), "{err}");

    // A value of the wrong type is an error at its line, not a file named after it.
    let conf = dir.path().join("c.toml");
    std::fs::write(&conf, "format = \"ecs\"\noutput = 5\n").unwrap();
    let (code, err) = run(vec![os("--config"), path(&conf)]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "sendfile-trace: error: {}:2: output: expected a string or a list of them, got an \
             integer (5)",
            conf.display()
        )
    );
    assert!(!dir.path().join("5").exists());

    // A ring buffer that would take gigabytes.
    let (code, err) = run(vec![os("--ring-buffer-size"), os("2G")]);
    assert_eq!(code, 2);
    assert!(err.contains("at most 256M"), "{err}");

    // A cgroup path that climbs out of the cgroup2 mount, and one that is not a cgroup.
    let (code, err) = run(vec![os("--cgroup"), os("../../../../etc")]);
    assert_eq!(code, 2);
    assert!(err.contains("outside the cgroup2 mount"), "{err}");
    let (code, err) = run(vec![os("--cgroup"), os("/cgroup.procs")]);
    assert_eq!(code, 2);
    assert!(err.contains("is not a cgroup"), "{err}");
}

#[test]
fn without_cap_dac_read_search_the_missing_capability_is_named() {
    let _serial = serial();
    require_root();
    let mode = std::fs::metadata("/sys/kernel/tracing")
        .map(|m| m.permissions().mode())
        .unwrap_or(0);
    if mode & 0o001 != 0 {
        eprintln!("skipped: tracefs is searchable by everyone here (mode {mode:o})");
        return;
    }
    let caps = "+bpf,+perfmon";
    let out = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .args(["--inh-caps", caps, "--ambient-caps", caps])
        .args(["--bounding-set", &format!("-all,{caps}"), "--"])
        .arg(tracer_bin())
        .args(["--hook", "tracepoint"])
        .output()
        .expect("setpriv (util-linux)");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("lacks CAP_DAC_READ_SEARCH"), "{err}");
    assert!(!err.contains("lockdown"), "{err}");
}

/// Pids of the processes whose command line contains `needle`.
fn pids_with(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                c.split(|b| *b == 0)
                    .any(|arg| arg == needle.as_bytes() || arg.ends_with(needle.as_bytes()))
            })
        })
        .collect()
}

#[test]
fn in_its_own_pid_namespace_the_tracer_skips_itself_and_nobody_else() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pidns-events.json");
    let comm = format!("sf-pidns-{}", std::process::id() % 100_000);
    let held = Held::spawn(
        &workload_bin(),
        &[
            OsStr::new("--case"),
            OsStr::new("file_to_pipe"),
            OsStr::new("--comm"),
            OsStr::new(&comm),
        ],
    );
    // The tracer gets, in its new pid namespace, the pid the workload has on the host: a tracer
    // that took its getpid() for the kernel's tgid would skip the workload's calls.
    let script = format!(
        "echo {} > /proc/sys/kernel/ns_last_pid && \"$0\" \"$@\"; exit $?",
        held.pid - 1
    );
    let mut child = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "sh", "-c", &script])
        .arg(tracer_bin())
        .arg("--output")
        .arg(&file)
        // The workload, and the tracer's own probe call (its comm is sendfile-trace).
        .args(["--comm", &comm, "--comm", "sendfile-trace"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare (util-linux)");
    let deadline = Instant::now() + start_timeout();
    while !std::fs::read_to_string(&file).is_ok_and(|s| s.contains("tracer_start")) {
        if let Some(s) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("the tracer failed in a pid namespace ({s}): {err}");
        }
        assert!(
            Instant::now() < deadline,
            "no tracer_start within {:?}",
            start_timeout()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let tracer = pids_with(file.to_str().unwrap())
        .into_iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/status"))
                .is_ok_and(|s| s.lines().any(|l| l.starts_with("NSpid:")))
                && std::fs::read(format!("/proc/{p}/comm")).is_ok_and(|c| c == b"sendfile-trace\n")
        })
        .expect("the tracer's host pid");
    let nspid = std::fs::read_to_string(format!("/proc/{tracer}/status")).unwrap();
    let nspid: Vec<u32> = nspid
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(nspid, [tracer, held.pid], "the set-up failed");
    held.release();
    let calls = held.finish();
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: a signal to the tracer we started (through unshare and sh).
    unsafe { libc::kill(tracer as i32, libc::SIGINT) };
    assert!(wait_timeout(&mut child, Duration::from_secs(30)).success());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let records: Vec<Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |pid: u32| {
        records
            .iter()
            .filter(|r| r["eventName"] == "sendfile" && r["hostProcessId"] == pid)
            .count()
    };
    assert_eq!(of(held_pid(&calls)), calls.len(), "the workload's calls");
    assert_eq!(of(tracer), 0, "the tracer's own probe call was traced");
    assert!(!err.contains("probe call was traced"), "{err}");
}

/// The pid the workload's records carry.
fn held_pid(calls: &[Value]) -> u32 {
    calls[0]["pid"].as_u64().unwrap() as u32
}

#[test]
fn a_file_output_gets_json_even_from_a_terminal() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let tracer = tracer_bin();
    // `script` runs the tracer on a pseudo-terminal (stdin, stdout, stderr).
    let comm = format!("no-such-t{}", std::process::id() % 100_000);
    let run = |out: &str, file: &Path| {
        let cmd = format!("exec {} --comm {comm} --output {out}", tracer.display());
        let mut child = Command::new("script")
            .args(["-qefc", &cmd, "/dev/null"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("script (util-linux)");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let deadline = Instant::now() + start_timeout();
        let pid = loop {
            if let Some(p) = pids_with(&comm).into_iter().find(|p| {
                std::fs::read(format!("/proc/{p}/comm")).is_ok_and(|c| c == b"sendfile-trace\n")
            }) {
                break p;
            }
            assert!(Instant::now() < deadline, "the tracer did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        // The line of `tracer_start` (stderr shares the terminal: log lines come too).
        let mut first = String::new();
        if out == "-" {
            while !first.contains("tracer_start") {
                first.clear();
                assert!(stdout.read_line(&mut first).unwrap() > 0, "no tracer_start");
            }
        } else {
            while !std::fs::read_to_string(file).is_ok_and(|s| s.contains("tracer_start")) {
                assert!(
                    Instant::now() < deadline,
                    "no tracer_start in {}",
                    file.display()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // SAFETY: a signal to the tracer we started (through script).
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        wait_timeout(&mut child, Duration::from_secs(30));
        first
    };
    // The terminal is one: on stdout alone the default is text.
    let first = run("-", dir.path());
    assert!(first.contains("tracer_start"), "{first:?}");
    assert!(
        !first.trim_start().starts_with('{'),
        "text expected: {first:?}"
    );
    // To a file, from the same terminal: JSON.
    let file = dir.path().join("x.json");
    run(file.to_str().unwrap(), &file);
    for line in std::fs::read_to_string(&file).unwrap().lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        assert!(v["eventName"].is_string(), "{line}");
    }
}

/// Traces a perl process (`--pid` and `extra` arguments) whose first sendfile(2) fills a pipe
/// and whose second blocks on it, and stops the tracer while the second is blocked.
fn stop_while_a_call_blocks(extra: &[&str]) -> Stopped {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.bin");
    std::fs::write(&input, vec![7u8; 1 << 20]).unwrap();
    // perl (Debian's essential perl-base) calls sendfile(2) itself: the first call fills a pipe
    // nobody reads (64 KiB), the second blocks until the pipe is read.
    let blocker = r#"
        pipe(my $r, my $w) or die "pipe: $!";
        open(my $in, "<", $ARGV[0]) or die "open: $!";
        $| = 1;
        print "ready\n";
        my $go = <STDIN>;
        my $n = syscall(40, fileno($w), fileno($in), 0, 1 << 20);
        print "first $n\n";
        $n = syscall(40, fileno($w), fileno($in), 0, 1 << 20);
        print "second $n\n";
    "#;
    let mut perl = Command::new("perl")
        .args(["-e", blocker])
        .arg(&input)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("perl");
    let pid = perl.id();
    let mut out = BufReader::new(perl.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    let pid_arg = pid.to_string();
    let mut args = vec!["--pid", pid_arg.as_str()];
    args.extend_from_slice(extra);
    let tracer = Tracer::start("auto", &args).unwrap();
    perl.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "first 65536\n");
    // Blocked in sendfile (x86_64 number 40), as /proc says.
    let deadline = Instant::now() + settle_timeout();
    while !std::fs::read_to_string(format!("/proc/{pid}/syscall"))
        .is_ok_and(|s| s.starts_with("40 "))
    {
        assert!(Instant::now() < deadline, "perl is not blocked in sendfile");
        std::thread::sleep(Duration::from_millis(20));
    }
    let stopped = tracer.stop();
    let _ = perl.kill();
    let _ = perl.wait();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    stopped
}

#[test]
fn a_call_blocked_when_the_tracer_stops_is_counted_unfinished() {
    let _serial = serial();
    require_root();
    let stopped = stop_while_a_call_blocks(&[]);
    let events: Vec<&Value> = stopped
        .records
        .iter()
        .filter(|r| r["eventName"] == "sendfile")
        .collect();
    assert_eq!(events.len(), 1, "{:?}", stopped.lines);
    assert_eq!(events[0]["returnValue"], 65536, "{}", events[0]);
    let lost: Vec<&Value> = stopped
        .records
        .iter()
        .filter(|r| r["eventName"] == "events_lost" && r["reason"] == "unfinished")
        .collect();
    assert_eq!(lost.len(), 1, "{:?}", stopped.lines);
    assert_eq!(lost[0]["lost"], 1);
    let stop = stopped.records.last().unwrap();
    assert_eq!(stop["eventName"], "tracer_stop");
    assert_eq!(stop["lostByReason"]["unfinished"], 1, "{stop}");
    assert!(stop["lost"].as_u64().unwrap() >= 1, "{stop}");
}

/// A call counted in a flow shares the kernel's in-flight map with single calls, marked: blocked
/// at the stop, it is reported in its flow's record as in progress, not as an unfinished call.
#[test]
fn a_flow_call_blocked_when_the_tracer_stops_is_in_progress_not_unfinished() {
    let _serial = serial();
    require_root();
    let stopped = stop_while_a_call_blocks(&["--mode", "flows"]);
    let flows: Vec<&Value> = stopped
        .records
        .iter()
        .filter(|r| r["eventName"] == "sendfile_flow")
        .collect();
    let last = flows.last().expect("a flow record");
    assert_eq!(last["reason"], "stop", "{last}");
    assert_eq!(last["totalCalls"], 1, "{last}");
    assert_eq!(last["totalBytes"], 65536, "{last}");
    assert_eq!(last["callsInProgress"], 1, "{last}");
    assert!(
        !stopped
            .records
            .iter()
            .any(|r| r["eventName"] == "events_lost" && r["reason"] == "unfinished"),
        "{:?}",
        stopped.lines
    );
    let stop = stopped.records.last().unwrap();
    assert_eq!(stop["eventName"], "tracer_stop");
    assert_eq!(stop["lostByReason"]["unfinished"], 0, "{stop}");
}

#[test]
fn the_daemonset_admits_only_prometheus_to_the_metrics_port() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/daemonset.yaml"),
    )
    .unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&text).expect("valid YAML");
    let ds = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("DaemonSet"))
        .unwrap();
    let spec = &ds["spec"]["template"]["spec"];
    // Its own network namespace: 0.0.0.0 there is the pod's address, not the node's.
    assert_ne!(spec["hostNetwork"].as_bool(), Some(true));
    let labels = &ds["spec"]["template"]["metadata"]["labels"];
    let np = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("NetworkPolicy"))
        .expect("a NetworkPolicy");
    assert_eq!(np["metadata"]["namespace"], ds["metadata"]["namespace"]);
    let sel = np["spec"]["podSelector"]["matchLabels"].as_hash().unwrap();
    for (k, v) in sel {
        assert_eq!(
            &labels[k.as_str().unwrap()],
            v,
            "podSelector selects the DaemonSet"
        );
    }
    let types: Vec<&str> = np["spec"]["policyTypes"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|t| t.as_str())
        .collect();
    assert_eq!(types, ["Ingress"]);
    let rules = np["spec"]["ingress"].as_vec().unwrap();
    assert_eq!(rules.len(), 1, "one rule: Prometheus to the metrics port");
    let rule = &rules[0];
    let ports = rule["ports"].as_vec().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["port"].as_i64(), Some(9469));
    let from = rule["from"].as_vec().unwrap();
    assert!(!from.is_empty(), "an empty `from` admits everyone");
    for f in from {
        assert!(
            !f["namespaceSelector"]["matchLabels"].is_badvalue()
                || !f["podSelector"]["matchLabels"].is_badvalue(),
            "each source is selected by labels: {f:?}"
        );
    }
}
