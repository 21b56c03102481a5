//! Shared harness of the integration tests: find the binaries, run the real tracer beside the
//! real workload, and compare every field of every event with what the workload did.
#![allow(dead_code)]

use std::{
    collections::HashSet,
    ffi::OsStr,
    io::{BufRead, BufReader, Read},
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;

/// Finds a binary: `$ENV`, else the workspace's target/release, else PATH.
pub fn bin(env: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/release")
        .join(name);
    if local.is_file() {
        return local;
    }
    PathBuf::from(name)
}

/// The tracer binary.
pub fn tracer_bin() -> PathBuf {
    bin("SENDFILE_TRACE_BIN", "sendfile-trace")
}

/// The 64-bit workload binary.
pub fn workload_bin() -> PathBuf {
    bin("SENDFILE_WORKLOAD_BIN", "sendfile-workload")
}

/// The 32-bit static workload, if it was built (`cargo xtask test` builds it).
pub fn workload32_bin() -> Option<PathBuf> {
    let p = std::env::var_os("SENDFILE_WORKLOAD32_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/i686-unknown-linux-musl/release/sendfile-workload")
        });
    p.is_file().then_some(p)
}

/// Every test traces the whole host, so one test's workload is seen (and can be lost) by another
/// test's tracer: the tests take this lock to run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs the calling test alone among these tests (released when the guard drops).
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// These tests load BPF programs: they must run as root, and fail loudly otherwise.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the integration tests load eBPF programs: run them as root"
    );
}

/// Wall-clock ns now.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// What a hook should do on this kernel: attach, or fail with a known reason.
#[derive(Debug, PartialEq)]
pub enum Expect {
    /// The hook must attach and trace.
    Works,
    /// The hook must refuse with a message containing this text.
    Unsupported(&'static str),
}

/// The expected outcome of each hook on the running kernel, from independent evidence.
pub fn expectation(hook: &str) -> Expect {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    match hook {
        // No kprobe PMU means a kernel without CONFIG_KPROBES.
        "kprobe" if !std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists() => {
            Expect::Unsupported("CONFIG_KPROBES")
        }
        // The Firecracker hosts this project is developed on refuse every tracing program
        // (BPF_PROG_LOAD returns EPERM with an empty verifier log).
        "fentry" if release.contains("-fc-") => Expect::Unsupported("Operation not permitted"),
        _ => Expect::Works,
    }
}

/// The hooks to test: `SENDFILE_TRACE_TEST_HOOKS` (comma-separated) or all three.
pub fn hooks() -> Vec<String> {
    match std::env::var("SENDFILE_TRACE_TEST_HOOKS") {
        Ok(v) if !v.is_empty() => v.split(',').map(str::to_owned).collect(),
        _ => vec!["kprobe".into(), "fentry".into(), "tracepoint".into()],
    }
}

/// A running tracer whose stdout is collected line by line.
pub struct Tracer {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: std::thread::JoinHandle<()>,
    stderr: std::thread::JoinHandle<String>,
}

/// What a stopped tracer left.
pub struct Stopped {
    /// Every stdout line, parsed (the test fails on a line that is not JSON).
    pub records: Vec<Value>,
    /// Raw stdout lines.
    pub lines: Vec<String>,
    /// Its stderr.
    pub stderr: String,
    /// Its exit status.
    pub status: ExitStatus,
}

/// Why a tracer did not start.
#[derive(Debug)]
pub struct StartFailure {
    /// Exit status.
    pub status: ExitStatus,
    /// Everything it wrote on stderr.
    pub stderr: String,
}

impl Tracer {
    /// Starts `sendfile-trace --hook HOOK ARGS…` and waits for its `tracer_start` record on
    /// stdout, or in `--output FILE` when `args` has it.
    pub fn start(hook: &str, args: &[&str]) -> Result<Tracer, StartFailure> {
        let output_file = args
            .iter()
            .position(|a| *a == "--output")
            .map(|i| PathBuf::from(args[i + 1]));
        let mut child = Command::new(tracer_bin())
            .arg("--hook")
            .arg(hook)
            .args(args)
            .env_remove("SENDFILE_TRACE_HOOK")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start sendfile-trace");
        let stdout = child.stdout.take().unwrap();
        let mut stderr_pipe = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr_pipe.read_to_string(&mut s);
            s
        });
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let first = sink.lock().unwrap().is_empty();
                sink.lock().unwrap().push(line);
                if first {
                    let _ = tx.send(());
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                break;
            }
            if let Some(f) = &output_file
                && std::fs::read_to_string(f).is_ok_and(|s| s.contains("\"tracer_start\""))
            {
                return Ok(Tracer {
                    child,
                    lines,
                    reader,
                    stderr,
                });
            }
            if let Some(status) = child.try_wait().unwrap() {
                let _ = reader.join();
                return Err(StartFailure {
                    status,
                    stderr: stderr.join().unwrap(),
                });
            }
            assert!(
                Instant::now() < deadline,
                "the tracer did not start within 60 s"
            );
        }
        let first = lines.lock().unwrap()[0].clone();
        let v: Value = serde_json::from_str(&first).expect("first line is JSON");
        assert_eq!(v["eventName"], "tracer_start", "first record: {first}");
        if hook != "auto" {
            assert_eq!(v["hook"], hook);
        }
        Ok(Tracer {
            child,
            lines,
            reader,
            stderr,
        })
    }

    /// The tracer's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal`, waits for the exit, and returns everything it wrote.
    pub fn stop_with(mut self, signal: i32) -> Stopped {
        // Let the last records of the traced calls reach the ring buffer reader.
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let status = wait_timeout(&mut self.child, Duration::from_secs(30));
        self.reader.join().unwrap();
        let lines = std::mem::take(&mut *self.lines.lock().unwrap());
        let records = lines
            .iter()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON line ({e}): {l:?}"))
            })
            .collect();
        Stopped {
            records,
            lines,
            stderr: self.stderr.join().unwrap(),
            status,
        }
    }

    /// SIGINT, then [`Tracer::stop_with`].
    pub fn stop(self) -> Stopped {
        self.stop_with(libc::SIGINT)
    }
}

/// Waits for a child, killing it (and failing) after `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process {} did not exit within {timeout:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the workload with `args` and returns its per-call records (it must exit 0).
pub fn run_workload(bin: &std::path::Path, args: &[&OsStr]) -> Vec<Value> {
    let out = Command::new(bin)
        .args(args)
        .output()
        .expect("cannot run the workload");
    assert!(
        out.status.success(),
        "workload failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The cgroup v2 id of this process (the inode of its cgroup directory); children inherit it.
pub fn own_cgroup_id() -> u64 {
    let cg = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let path = cg
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("cgroup v2 membership in /proc/self/cgroup");
    std::fs::metadata(format!("/sys/fs/cgroup{path}"))
        .unwrap()
        .ino()
}

/// The host name as the tracer reports it.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buffer and length match.
    unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap();
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// sendfile events of one process.
pub fn events_of(records: &[Value], pid: i64) -> Vec<&Value> {
    records
        .iter()
        .filter(|r| r["eventName"] == "sendfile" && r["processId"] == pid)
        .collect()
}

/// Checks the stream's frame: `tracer_start` first, `tracer_stop` last with exact totals, no
/// loss, every line one JSON object.
pub fn check_frame(stopped: &Stopped) {
    assert!(
        stopped.status.success(),
        "tracer exit {}: {}",
        stopped.status,
        stopped.stderr
    );
    assert!(!stopped.stderr.contains("panicked"), "{}", stopped.stderr);
    let r = &stopped.records;
    assert_eq!(r.first().unwrap()["eventName"], "tracer_start");
    let stop = r.last().unwrap();
    assert_eq!(stop["eventName"], "tracer_stop", "last record");
    let sendfiles = r.iter().filter(|v| v["eventName"] == "sendfile").count() as u64;
    assert_eq!(
        stop["events"], sendfiles,
        "tracer_stop.events counts every event written"
    );
    assert_eq!(stop["lost"], 0, "no loss expected: {stop}");
    assert!(r.iter().all(|v| v["eventName"] != "events_lost"));
    for v in r {
        assert_eq!(v["schemaVersion"], sendfile_trace::SCHEMA_VERSION);
    }
}

/// Compares every field of every event of the workload with the call it describes: each call
/// matches exactly one event and no event is left over.
pub fn compare(records: &[Value], calls: &[Value], hook: &str, comm: &[u8], window: (u64, u64)) {
    assert!(!calls.is_empty(), "the workload made no calls");
    let pid = calls[0]["pid"].as_i64().unwrap();
    let events = events_of(records, pid);
    assert_eq!(
        events.len(),
        calls.len(),
        "one event per call for pid {pid}: events {events:#?}"
    );
    let host = host_name();
    let cgroup = own_cgroup_id();
    // SAFETY: no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let ncpu = std::thread::available_parallelism().unwrap().get() as u64;
    let mut used = HashSet::new();
    for call in calls {
        let args = |e: &Value, i: usize| e["args"][i]["value"].clone();
        let matching: Vec<usize> = events
            .iter()
            .enumerate()
            .filter(|(i, e)| {
                !used.contains(i)
                    && e["threadId"] == call["tid"]
                    && args(e, 0) == call["outFd"]
                    && args(e, 1) == call["inFd"]
                    && args(e, 2) == call["offsetPtr"]
                    && args(e, 3) == call["count"]
                    && e["syscallNr"] == call["syscallNr"]
            })
            .map(|(i, _)| i)
            .collect();
        let Some(&i) = matching.first() else {
            panic!("no event for call {call}\nevents: {events:#?}");
        };
        used.insert(i);
        let e = events[i];
        let ctx = format!("call {call}\nevent {e}");
        assert_eq!(e["eventName"], "sendfile", "{ctx}");
        assert_eq!(e["eventId"], "40", "{ctx}");
        assert_eq!(e["hook"], hook, "{ctx}");
        assert_eq!(e["processId"], call["pid"], "{ctx}");
        assert_eq!(e["threadId"], call["tid"], "{ctx}");
        assert_eq!(e["userId"], uid, "{ctx}");
        assert_eq!(e["groupId"], gid, "{ctx}");
        assert_eq!(e["hostName"], host.as_str(), "{ctx}");
        assert_eq!(e["cgroupId"], cgroup, "{ctx}");
        assert_eq!(e["returnValue"], call["ret"], "{ctx}");
        assert_eq!(e["errno"], call["errno"], "{ctx}");
        assert_eq!(e["offsetValue"], call["offsetBefore"], "{ctx}");
        assert_eq!(e["offsetAfter"], call["offsetAfter"], "{ctx}");
        assert_eq!(e["contextFlags"]["isCompat"], call["compat"], "{ctx}");
        let syscall = if call["syscallNr"] == 187 {
            "sendfile"
        } else {
            "sendfile64"
        };
        assert_eq!(e["syscall"], syscall, "{ctx}");
        assert_eq!(e["argsNum"], 4, "{ctx}");
        let names: Vec<&str> = (0..4)
            .map(|i| e["args"][i]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["out_fd", "in_fd", "offset", "count"], "{ctx}");
        let types: Vec<&str> = (0..4)
            .map(|i| e["args"][i]["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["int", "int", "off_t*", "size_t"], "{ctx}");
        let ts = e["timestamp"].as_u64().unwrap();
        assert!(
            window.0 <= ts && ts <= window.1,
            "timestamp outside the run: {ctx}"
        );
        assert!(e["processorId"].as_u64().unwrap() < ncpu, "{ctx}");
        assert!(e["durationNs"].as_u64().is_some(), "{ctx}");
        // The comm: exact when it is UTF-8, else lossy with the exact bytes in hex.
        match std::str::from_utf8(comm) {
            Ok(s) => {
                assert_eq!(e["processName"], s, "{ctx}");
                assert!(e.get("processNameHex").is_none(), "{ctx}");
            }
            Err(_) => {
                let hex: String = comm.iter().map(|b| format!("{b:02x}")).collect();
                assert_eq!(e["processNameHex"], hex.as_str(), "{ctx}");
                assert_eq!(
                    e["processName"],
                    String::from_utf8_lossy(comm).as_ref(),
                    "{ctx}"
                );
            }
        }
    }
}

/// The comm the kernel keeps for a name: its first 15 bytes.
pub fn kernel_comm(name: &[u8]) -> Vec<u8> {
    name[..name.len().min(15)].to_vec()
}

/// `OsStr` from raw bytes.
pub fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}
