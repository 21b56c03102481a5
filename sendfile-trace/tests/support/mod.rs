//! Shared harness of the integration tests: find the binaries, run the real tracer beside the
//! real workload, and compare every field of every event with what the workload did.
#![allow(dead_code)]

pub mod strace;

use std::{
    collections::HashSet,
    ffi::OsStr,
    io::{BufRead, BufReader, Read, Write},
    os::unix::{ffi::OsStrExt, fs::MetadataExt},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio},
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
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
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
        // arm64 attaches BPF trampolines to kernel functions through ftrace direct calls, which
        // it has from Linux 6.4: Debian's arm64 6.1 answers ENOTSUPP.
        "fentry" if cfg!(target_arch = "aarch64") && kernel_older_than(&release, (6, 4)) => {
            Expect::Unsupported("cannot attach BPF trampolines")
        }
        _ => Expect::Works,
    }
}

/// How long a tracer may take to load and attach: 60 s, or `SENDFILE_TRACE_TEST_START_SECS`
/// (the matrix gives emulated arm64 guests more: the verifier runs on an emulated CPU there,
/// and on a loaded host one start took over 60 s).
pub fn start_timeout() -> Duration {
    let secs = std::env::var("SENDFILE_TRACE_TEST_START_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

/// How long to wait for something a running tracer writes on its own timers (an idle flow's
/// record, a loss report): as long as a start may take ([`start_timeout`]), which the matrix
/// raises for emulated guests. Waits end as soon as the state is seen: a generous bound costs
/// nothing when all goes well.
pub fn settle_timeout() -> Duration {
    start_timeout()
}

/// Whether kernel release `release` ("6.1.0-56-arm64") is older than `major.minor`.
fn kernel_older_than(release: &str, (major, minor): (u32, u32)) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) < (major, minor)
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
        Tracer::start_command(Command::new(tracer_bin()), hook, args)
    }

    /// [`Tracer::start`] with the tracer run by `command` (a wrapper such as a container
    /// runtime's `run … sendfile-trace`), which gets `--hook HOOK ARGS…` appended.
    pub fn start_command(
        mut command: Command,
        hook: &str,
        args: &[&str],
    ) -> Result<Tracer, StartFailure> {
        let output_file = args
            .iter()
            .position(|a| *a == "--output")
            .map(|i| PathBuf::from(args[i + 1]));
        let mut child = command
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
        let timeout = start_timeout();
        let deadline = Instant::now() + timeout;
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
                "the tracer did not start within {timeout:?} (SENDFILE_TRACE_TEST_START_SECS)"
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

    /// Waits until the records written so far on stdout satisfy `ready`, for at most
    /// [`settle_timeout`]: what the tracer writes on its own (flows retired when idle, losses,
    /// events of a running process) comes when its timers and the scheduler allow, which on an
    /// emulated or loaded machine can be far later than on an idle one. Fails, naming `what`,
    /// when the time is up or the tracer exits first.
    pub fn wait_for(&mut self, what: &str, ready: impl Fn(&[Value]) -> bool) {
        let timeout = settle_timeout();
        let deadline = Instant::now() + timeout;
        let mut parsed: Vec<Value> = Vec::new();
        loop {
            {
                let lines = self.lines.lock().unwrap();
                // Only the lines not parsed yet (the last may still be partial: the reader
                // pushes whole lines only).
                for l in &lines[parsed.len()..] {
                    parsed.push(
                        serde_json::from_str(l)
                            .unwrap_or_else(|e| panic!("not one JSON line ({e}): {l:?}")),
                    );
                }
            }
            if ready(&parsed) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the tracer exited ({status}) before {what}");
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {timeout:?} (SENDFILE_TRACE_TEST_START_SECS)"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
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

/// Runs the workload with `args` and returns its per-call records (it must exit 0). It runs
/// with `--hold`, so its process facts are checked against /proc while it is alive (see
/// [`Held::finish`]).
pub fn run_workload(bin: &Path, args: &[&OsStr]) -> Vec<Value> {
    let held = Held::spawn(bin, args);
    held.release();
    held.finish()
}

/// A workload started with `--hold`: it waits for [`Held::release`] before its calls and for
/// [`Held::finish`] after them.
pub struct Held {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    stderr: Option<std::thread::JoinHandle<String>>,
    /// Its pid.
    pub pid: u32,
}

impl Drop for Held {
    /// A test that fails before [`Held::finish`] kills its workload (unreleased, it would run
    /// its calls unobserved once stdin closes).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Held {
    /// Starts `bin --hold ARGS…` and waits until it is ready (no call made yet).
    pub fn spawn(bin: &Path, args: &[&OsStr]) -> Held {
        let mut child = Command::new(bin)
            .arg("--hold")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run the workload {}: {e}", bin.display()));
        let mut stderr_pipe = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr_pipe.read_to_string(&mut s);
            s
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let ready: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                let _ = child.kill();
                panic!(
                    "workload did not get ready ({e}): {line:?} {}",
                    stderr.join().unwrap()
                )
            }
        };
        assert_eq!(ready["hold"], "ready", "{line}");
        assert_eq!(ready["pid"], child.id(), "{line}");
        Held {
            pid: child.id(),
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr: Some(stderr),
        }
    }

    /// Lets it make its calls.
    pub fn release(&self) {
        let mut stdin = self.stdin.as_ref().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Collects its records; once it reports "done", checks its ppid, exe and namespaces
    /// against /proc/PID (it is still alive), then lets it exit (it must exit 0).
    pub fn finish(mut self) -> Vec<Value> {
        let mut records = Vec::new();
        let mut done = None;
        let mut line = String::new();
        while self.stdout.read_line(&mut line).unwrap() > 0 {
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("workload line is not JSON ({e}): {line:?}"));
            line.clear();
            if v["hold"] == "done" {
                done = Some(v);
                break;
            }
            records.push(v);
        }
        let proc_facts = done
            .as_ref()
            .map(|d| (d.clone(), ProcFacts::read(self.pid)));
        drop(self.stdin.take());
        let status = wait_timeout(&mut self.child, Duration::from_secs(600));
        let stderr = self.stderr.take().unwrap().join().unwrap();
        assert!(status.success(), "workload failed ({status}): {stderr}");
        let (done, proc_facts) = proc_facts.expect("the workload never reported done");
        proc_facts.check(&done, self.pid);
        for r in records.iter().filter(|r| r.get("ppid").is_some()) {
            for key in ["ppid", "exe", "mntNs", "pidNs", "uid", "gid", "cgroupId"] {
                assert_eq!(r[key], done[key], "{key} changed during the run: {r}");
            }
        }
        records
    }
}

/// Process facts read from outside, in /proc/PID.
#[derive(Debug)]
pub struct ProcFacts {
    /// Field 4 of /proc/PID/stat.
    pub ppid: i64,
    /// Target of /proc/PID/exe.
    pub exe: PathBuf,
    /// Inode of /proc/PID/ns/mnt.
    pub mnt_ns: u64,
    /// Inode of /proc/PID/ns/pid.
    pub pid_ns: u64,
}

impl ProcFacts {
    /// Reads them for a live `pid`.
    pub fn read(pid: u32) -> ProcFacts {
        // The comm may hold any bytes, ')' included: the fields resume after the last ')'.
        let stat = std::fs::read(format!("/proc/{pid}/stat")).unwrap();
        let close = stat.iter().rposition(|&b| b == b')').unwrap();
        let after_comm = std::str::from_utf8(&stat[close + 1..]).unwrap();
        let ppid = after_comm
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let ns = |n: &str| {
            std::fs::metadata(format!("/proc/{pid}/ns/{n}"))
                .unwrap()
                .ino()
        };
        ProcFacts {
            ppid,
            exe: std::fs::read_link(format!("/proc/{pid}/exe")).unwrap(),
            mnt_ns: ns("mnt"),
            pid_ns: ns("pid"),
        }
    }

    /// Checks what a workload said of itself (its "done" line) against these, and that its
    /// parent is this test process.
    pub fn check(&self, said: &Value, pid: u32) {
        let ctx = format!("workload {pid} said {said}, /proc says {self:?}");
        assert_eq!(said["ppid"], self.ppid, "{ctx}");
        assert_eq!(self.ppid, i64::from(std::process::id()), "{ctx}");
        let exe = expected_text(&said["exe"], &said["exeHex"]);
        assert_eq!(exe, self.exe.as_os_str().as_bytes(), "{ctx}");
        assert_eq!(said["mntNs"], self.mnt_ns, "{ctx}");
        assert_eq!(said["pidNs"], self.pid_ns, "{ctx}");
    }
}

/// The exact bytes of a `(text, hex)` pair: the hex when present, else the text.
pub fn expected_text(text: &Value, hex: &Value) -> Vec<u8> {
    match hex.as_str() {
        Some(h) => (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect(),
        None => text.as_str().unwrap().as_bytes().to_vec(),
    }
}

/// Where cgroup2 is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on hybrid hosts).
pub fn cgroup2_mount() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split(' ').next() == Some("cgroup2"))
                .then(|| PathBuf::from(left.split(' ').nth(4).unwrap()))
        })
        .expect("a cgroup2 mount in /proc/self/mountinfo")
}

/// This process's cgroup v2 directory.
pub fn own_cgroup_dir() -> PathBuf {
    let cg = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let path = cg
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("cgroup v2 membership in /proc/self/cgroup");
    cgroup2_mount().join(path.trim_start_matches('/'))
}

/// The cgroup v2 id of this process (the inode of its cgroup directory); children inherit it.
pub fn own_cgroup_id() -> u64 {
    std::fs::metadata(own_cgroup_dir()).unwrap().ino()
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
    // The tracer traces the whole (shared) host: another process's call blocked in sendfile when
    // it stops is rightly counted as `unfinished`; every other loss is a failure. The workload's
    // own calls are each matched to an event by the tests.
    let unfinished = stop["lostByReason"]["unfinished"].as_u64().unwrap_or(0);
    assert_eq!(stop["lost"], unfinished, "no loss expected: {stop}");
    assert!(
        r.iter()
            .all(|v| v["eventName"] != "events_lost" || v["reason"] == "unfinished")
    );
    for v in r {
        assert_eq!(v["schemaVersion"], sendfile_trace::SCHEMA_VERSION);
    }
}

/// Inode of the initial (host) pid namespace (`PROC_PID_INIT_INO`).
pub const INIT_PID_NS: u64 = 0xEFFF_FFFC;

/// Compares every field of every event of the workload with the call it describes: each call
/// matches exactly one event and no event is left over. The workload runs outside containers.
pub fn compare(records: &[Value], calls: &[Value], hook: &str, comm: &[u8], window: (u64, u64)) {
    compare_in(records, calls, hook, comm, window, None);
}

/// [`compare`] for a workload whose events must carry `containerId` = `container_id`.
///
/// The descriptor and process fields (fd objects, process context) are compared after all the others, and
/// their mismatches are reported together in one panic that starts with "descriptor and process fields".
pub fn compare_in(
    records: &[Value],
    calls: &[Value],
    hook: &str,
    comm: &[u8],
    window: (u64, u64),
    container_id: Option<&str>,
) {
    assert!(!calls.is_empty(), "the workload made no calls");
    let pid = calls[0]["pid"].as_i64().unwrap();
    let events = events_of(records, pid);
    assert_eq!(
        events.len(),
        calls.len(),
        "one event per call for pid {pid}: events {events:#?}"
    );
    let host = host_name();
    let mut issue4 = Vec::new();
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
        assert_eq!(e["userId"], call["uid"], "{ctx}");
        assert_eq!(e["groupId"], call["gid"], "{ctx}");
        assert_eq!(e["hostName"], host.as_str(), "{ctx}");
        assert!(call["cgroupId"].is_u64(), "{ctx}");
        assert_eq!(e["cgroupId"], call["cgroupId"], "{ctx}");
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
        issue4_mismatches(call, e, container_id, &mut issue4);
    }
    assert!(
        issue4.is_empty(),
        "descriptor and process fields: {} mismatch(es) with what workload {pid} knew:\n{}",
        issue4.len(),
        issue4.join("\n")
    );
}

/// One clock tick in ns (`_SC_CLK_TCK`), the precision of /proc's start times.
pub fn tick_ns() -> u64 {
    // SAFETY: sysconf has no preconditions.
    1_000_000_000 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64
}

/// Adds to `out` each descriptor or process field of event `e` that differs from what the workload knew of
/// `call`'s descriptors and process.
pub fn issue4_mismatches(
    call: &Value,
    e: &Value,
    container_id: Option<&str>,
    out: &mut Vec<String>,
) {
    let case = call["case"].as_str().unwrap_or("?");
    let mut check = |field: &str, got: &Value, want: Value| {
        if *got != want {
            out.push(format!("  {case}: {field}: got {got}, want {want}"));
        }
    };
    check("inFd", &e["inFd"], call["inFdInfo"].clone());
    check("outFd", &e["outFd"], call["outFdInfo"].clone());
    check(
        "parentProcessId",
        &e["parentProcessId"],
        call["ppid"].clone(),
    );
    if call["pidNs"] == INIT_PID_NS {
        check("hostProcessId", &e["hostProcessId"], call["pid"].clone());
        check("hostThreadId", &e["hostThreadId"], call["tid"].clone());
        check(
            "hostParentProcessId",
            &e["hostParentProcessId"],
            call["ppid"].clone(),
        );
    } else {
        for f in ["hostProcessId", "hostThreadId", "hostParentProcessId"] {
            if !e[f].as_u64().is_some_and(|v| v > 0) {
                check(f, &e[f], Value::from("a host id"));
            }
        }
    }
    let mut exe = serde_json::json!({"path": call["exe"], "truncated": false});
    if !call["exeHex"].is_null() {
        exe["pathHex"] = call["exeHex"].clone();
    }
    check("executable", &e["executable"], exe);
    check(
        "mountNamespace",
        &e["mountNamespace"],
        call["mntNs"].clone(),
    );
    check("pidNamespace", &e["pidNamespace"], call["pidNs"].clone());
    check(
        "containerId",
        &e["containerId"],
        container_id.map_or(Value::Null, Value::from),
    );
    // The workload's start time is only tick-precise (and truncated): allow two ticks.
    let want = call["threadStartTime"].as_u64().unwrap();
    let got = e["threadStartTime"].as_u64().unwrap_or(0);
    if got.abs_diff(want) > 2 * tick_ns() {
        out.push(format!(
            "  {case}: threadStartTime: got {got}, want {want} ± {} ns",
            2 * tick_ns()
        ));
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

/// Compares one event with the call strace saw: descriptors, count, result and errno, offset
/// value before and after (asserted, with `ctx` in the message); returns the fd objects that
/// differ from strace's `-yy` view, for the caller to report together.
pub fn strace_call_mismatch(c: &strace::Call, e: &Value, ctx: &str) -> Vec<String> {
    assert_eq!(e["args"][0]["value"], c.out_fd.num, "{ctx}");
    assert_eq!(e["args"][1]["value"], c.in_fd.num, "{ctx}");
    assert_eq!(e["args"][3]["value"], c.count, "{ctx}");
    match &c.errno {
        Some(name) => {
            assert_eq!(c.ret, -1, "{ctx}");
            assert_eq!(e["errno"], name.as_str(), "{ctx}");
            assert!(e["returnValue"].as_i64().unwrap() < 0, "{ctx}");
        }
        None => {
            assert_eq!(e["returnValue"], c.ret, "{ctx}");
            assert_eq!(e["errno"], Value::Null, "{ctx}");
        }
    }
    match c.offset {
        strace::Offset::Value(before, after) => {
            assert_eq!(e["offsetValue"], before, "{ctx}");
            assert_eq!(e["offsetAfter"], after, "{ctx}");
        }
        strace::Offset::Null | strace::Offset::Addr(_) => {
            // NULL or an unreadable pointer (strace prints it as an address).
            assert_eq!(e["offsetValue"], Value::Null, "{ctx}");
            assert_eq!(e["offsetAfter"], Value::Null, "{ctx}");
        }
    }
    strace_fd_mismatch(&c.out_fd, &e["outFd"])
        .into_iter()
        .chain(strace_fd_mismatch(&c.in_fd, &e["inFd"]))
        .collect()
}

/// How event fd object `e` differs from what strace `-yy` printed for the same descriptor, or
/// None when they agree.
pub fn strace_fd_mismatch(s: &strace::Fd, e: &Value) -> Option<String> {
    use strace::Desc;
    let shown = match &s.desc {
        Some(strace::Desc::Path {
            path,
            device,
            deleted,
        }) => format!(
            "{:?} device {device:?} deleted {deleted}",
            String::from_utf8_lossy(path)
        ),
        other => format!("{other:?}"),
    };
    let bad = |why: String| Some(format!("fd {}: {why}: strace {shown}, event {e}", s.num));
    if e["fd"] != s.num {
        return bad("fd number".into());
    }
    match &s.desc {
        // strace prints nothing for a descriptor that is not open.
        None => (e["type"] != "unknown").then(|| format!("fd {}: want unknown: {e}", s.num)),
        Some(Desc::Path {
            path,
            device,
            deleted,
        }) => {
            let want_type = match device.as_deref() {
                None => "file",
                Some(d) if d.starts_with("char ") => "chardev",
                Some(_) => "other",
            };
            if e["type"] != want_type {
                return bad(format!("type, want {want_type}"));
            }
            let ours = expected_text(&e["path"], &e["pathHex"]);
            // A pseudo file's path is the kernel's whole name, " (deleted)" included, which
            // strace's reading takes off as the deletion mark.
            let mut path = path.clone();
            if e["pseudo"] == true && *deleted {
                path.extend_from_slice(b" (deleted)");
            }
            let path = &path;
            // A truncated walk keeps the leaf end: strace's full path must end with it.
            let matches = if e["truncated"] == true {
                path.ends_with(&ours) && ours.len() < path.len()
            } else {
                ours == *path
            };
            if !matches {
                return bad("path".into());
            }
            if e["deleted"] != *deleted {
                return bad("deleted".into());
            }
            None
        }
        Some(Desc::Tcp { v6, local, remote }) => {
            let family = if *v6 { "AF_INET6" } else { "AF_INET" };
            let end = |a: &std::net::SocketAddr| serde_json::json!({"ip": a.ip().to_string(), "port": a.port()});
            if e["type"] != "socket" || e["family"] != family || e["protocol"] != "TCP" {
                return bad(format!("want a {family} TCP socket"));
            }
            if e["local"] != end(local) || e["remote"] != end(remote) {
                return bad("endpoints".into());
            }
            None
        }
        Some(Desc::SocketInode { kind, inode }) => {
            let (family, protocol) = match kind.as_str() {
                "TCP" => ("AF_INET", "TCP"),
                "TCPv6" => ("AF_INET6", "TCP"),
                "UDP" => ("AF_INET", "UDP"),
                "UDPv6" => ("AF_INET6", "UDP"),
                k if k.starts_with("UNIX-") => ("AF_UNIX", &k[5..]),
                _ => return bad("strace printed a socket kind this test does not know".into()),
            };
            (e["type"] != "socket"
                || e["family"] != family
                || e["protocol"] != protocol
                || e["inode"] != *inode)
                .then(|| format!("socket {kind} inode {inode} vs {e}"))
        }
        Some(Desc::AnonInode(name)) => (e["type"] != "anon_inode" || e["name"] != name.as_str())
            .then(|| format!("anon inode {name}: {e}")),
        Some(Desc::Pipe(inode)) => {
            (e["type"] != "pipe" || e["inode"] != *inode).then(|| format!("pipe: {s:?} vs {e}"))
        }
        Some(Desc::Other(text)) => {
            // "UNIX-STREAM:[INODE->PEER]" or "UNIX-STREAM:[INODE->PEER,"path"]".
            let unix = text.strip_prefix("UNIX-").and_then(|r| r.split_once(":["));
            let Some((kind, rest)) = unix else {
                return bad("strace printed something this test does not know".into());
            };
            let inode: Option<u64> = rest
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok());
            (e["type"] != "socket"
                || e["family"] != "AF_UNIX"
                || e["protocol"] != kind
                || inode.is_none_or(|i| e["inode"] != i))
            .then(|| format!("UNIX socket: {s:?} vs {e}"))
        }
    }
}

/// The counts of one flow's records, added up.
#[derive(Debug, Default, PartialEq)]
pub struct FlowSum {
    /// Calls, failed ones included.
    pub calls: u64,
    /// Sum of positive returns.
    pub bytes: u64,
    /// Failed calls.
    pub failed: u64,
    /// Failed calls by errno name.
    pub errnos: std::collections::BTreeMap<String, u64>,
}

/// One flow's records (one `flowId`, in the order written) folded into totals; checks that
/// interim records chain up to one final record whose running totals are the sums of all of them.
pub fn flow_sum(recs: &[&Value]) -> FlowSum {
    let mut s = FlowSum::default();
    for (i, r) in recs.iter().enumerate() {
        s.calls += r["calls"].as_u64().unwrap();
        s.bytes += r["bytes"].as_u64().unwrap();
        s.failed += r["failedCalls"].as_u64().unwrap();
        for (k, v) in r["errnos"].as_object().unwrap() {
            *s.errnos.entry(k.clone()).or_default() += v.as_u64().unwrap();
        }
        let last = i + 1 == recs.len();
        assert_eq!(r["final"], last, "only the last record is final: {r}");
        if !last {
            assert_eq!(r["reason"], "interval", "{r}");
        }
        assert_eq!(r["totalCalls"], s.calls, "running total: {r}");
        assert_eq!(r["totalBytes"], s.bytes, "running total: {r}");
        assert_eq!(r["totalFailedCalls"], s.failed, "running total: {r}");
    }
    s
}
