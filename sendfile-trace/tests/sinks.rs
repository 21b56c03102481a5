//! Losses at the sinks, against real failures: a tmpfs that fills, `/dev/full` as stdout, a TCP
//! peer that accepts and never reads, stdout closed by its reader, a record too large for a UDP
//! datagram, a rotation bound, and RELP into a real rsyslogd killed and restarted mid-stream.
//! Each run also writes a copy of the stream to a healthy file: the oracle of what was sent,
//! against which every record of the failing sink is either found or counted.

mod support;

use std::{
    ffi::{OsStr, OsString},
    fs::File,
    io::{BufRead, BufReader, Read},
    net::{TcpListener, TcpStream, UdpSocket},
    os::unix::ffi::OsStringExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;
use support::*;

/// A tracer with any arguments and stdout; stderr collected.
struct Run {
    child: Child,
    stderr: std::thread::JoinHandle<String>,
}

impl Run {
    fn start(args: &[&str], stdout: Stdio) -> Run {
        let mut child = Command::new(tracer_bin())
            .args(["--format", "tracee"])
            .args(args)
            .env_remove("SENDFILE_TRACE_HOOK")
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start sendfile-trace");
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Run { child, stderr }
    }

    /// Waits until `ready()` (failing if the tracer exits first or [`start_timeout`] passes).
    fn wait(&mut self, what: &str, ready: impl Fn() -> bool) {
        let deadline = Instant::now() + start_timeout();
        while !ready() {
            if let Some(s) = self.child.try_wait().unwrap() {
                panic!("the tracer exited ({s}) before {what}");
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {:?}",
                start_timeout()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGINT; returns the exit status and stderr.
    fn stop(mut self) -> (ExitStatus, String) {
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = wait_timeout(&mut self.child, Duration::from_secs(60));
        let err = self.stderr.join().unwrap();
        assert!(!err.contains("panicked"), "{err}");
        (status, err)
    }
}

fn file_has(path: &Path, needle: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|s| s.contains(needle))
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect()
}

/// The copy's `tracer_stop` (its last record) and the records before it.
fn split_stop(copy: &[Value]) -> (&Value, &[Value]) {
    let (stop, before) = copy.split_last().expect("an empty copy");
    assert_eq!(
        stop["eventName"], "tracer_stop",
        "the copy ends with tracer_stop"
    );
    (stop, before)
}

/// Sink losses in `stop`, checking that every `events_lost` of reason sink names `sink`.
fn sink_lost(stop: &Value, before: &[Value], sink: &str) -> u64 {
    for r in before.iter().filter(|r| r["eventName"] == "events_lost") {
        if r["reason"] == "sink" {
            assert_eq!(r["sink"], sink, "only {sink} loses records: {r}");
        }
    }
    let reported: u64 = before
        .iter()
        .filter(|r| r["eventName"] == "events_lost" && r["reason"] == "sink")
        .map(|r| r["lost"].as_u64().unwrap())
        .sum();
    let lost = stop["lostByReason"]["sink"].as_u64().unwrap();
    assert_eq!(
        reported, lost,
        "every sink loss counted in tracer_stop is reported in-band"
    );
    lost
}

/// A tmpfs of `kib` KiB mounted on a fresh directory (unmounted on drop).
struct SmallFs(tempfile::TempDir);

impl SmallFs {
    fn new(kib: u32) -> SmallFs {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(ok.success(), "cannot mount a tmpfs");
        SmallFs(dir)
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

fn loop_calls(n: u32) {
    run_workload(
        &workload_bin(),
        &[
            OsStr::new("--loop"),
            OsStr::new(&n.to_string()),
            OsStr::new("--size"),
            OsStr::new("1"),
        ],
    );
}

#[test]
fn a_disk_that_fills_loses_no_record_uncounted_and_no_line_is_torn() {
    let _serial = serial();
    require_root();
    let fs = SmallFs::new(256);
    let dir = tempfile::tempdir().unwrap();
    let small = fs.0.path().join("events.json");
    let copy = dir.path().join("copy.json");
    let mut run = Run::start(
        &[
            "--output",
            small.to_str().unwrap(),
            "--output",
            copy.to_str().unwrap(),
            // Every call an event (past the default limit, calls would be folded).
            "--max-events-per-process",
            "off",
        ],
        Stdio::null(),
    );
    run.wait("tracer_start", || file_has(&copy, "tracer_start"));
    // About 1.2 KB a record: 3000 calls are 14 times what the disk holds.
    loop_calls(3000);
    let (status, stderr) = run.stop();
    assert!(status.success(), "{status}: {stderr}");
    let raw = std::fs::read(&small).unwrap();
    assert!(
        raw.ends_with(b"\n"),
        "the full disk's file ends with a whole line"
    );
    // The tracer_stop may fit where a sendfile event did not: it comes after the count.
    let written: Vec<Value> = records(&small)
        .into_iter()
        .filter(|r| r["eventName"] != "tracer_stop")
        .collect();
    let copy = records(&copy);
    let (stop, before) = split_stop(&copy);
    let lost = sink_lost(stop, before, small.to_str().unwrap());
    assert!(lost > 0, "the disk did not fill: {stop}");
    // Every record sent to the small disk is in it or counted: the copy holds them all. The
    // loss report queued after tracer_stop's count (it is lost too on a full disk) is the only
    // one that may be neither.
    let sent = before.len() as u64;
    let accounted = written.len() as u64 + lost;
    assert!(
        accounted == sent || accounted + 1 == sent,
        "{} written + {lost} lost vs {sent} sent",
        written.len()
    );
    // What was written is exactly what was sent, in order.
    let mut it = before.iter();
    for w in &written {
        assert!(it.any(|c| c == w), "{w} was not sent, or out of order");
    }
    eprintln!(
        "{} written, {lost} lost and counted, {sent} sent",
        written.len()
    );
}

#[test]
fn dev_full_as_stdout_counts_every_record_and_the_others_go_on() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.json");
    let full = File::options().write(true).open("/dev/full").unwrap();
    let mut run = Run::start(
        &["--output", "-", "--output", copy.to_str().unwrap()],
        Stdio::from(full),
    );
    run.wait("tracer_start", || file_has(&copy, "tracer_start"));
    let calls = run_workload(
        &workload_bin(),
        &[OsStr::new("--case"), OsStr::new("file_to_file_offset")],
    );
    let (status, stderr) = run.stop();
    assert!(status.success(), "{status}: {stderr}");
    let copy = records(&copy);
    let (stop, before) = split_stop(&copy);
    let pid = calls[0]["pid"].clone();
    assert!(
        before.iter().any(|r| r["processId"] == pid),
        "the other output got the workload's call"
    );
    let lost = sink_lost(stop, before, "-");
    let sent = before.len() as u64;
    assert!(
        lost == sent || lost + 1 == sent,
        "{lost} lost of {sent} sent: {stop}"
    );
}

/// Octet-counted frames on one connection, read to its end; a torn last frame is not one.
fn frames(stream: TcpStream) -> Vec<String> {
    let mut r = BufReader::new(stream);
    let mut out = Vec::new();
    loop {
        let mut len = Vec::new();
        if r.read_until(b' ', &mut len).unwrap_or(0) == 0 || !len.ends_with(b" ") {
            return out;
        }
        let n: usize = std::str::from_utf8(&len[..len.len() - 1])
            .unwrap()
            .parse()
            .unwrap();
        let mut msg = vec![0; n];
        if r.read_exact(&mut msg).is_err() {
            return out;
        }
        out.push(String::from_utf8(msg).unwrap());
    }
}

#[test]
fn records_a_peer_never_reads_are_counted_when_the_stop_grace_ends() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.json");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp = format!("syslog+tcp://{}", listener.local_addr().unwrap());
    // Accepts every connection and reads nothing until the tracer has exited.
    let conns = Arc::new(Mutex::new(Vec::new()));
    let c2 = conns.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().map_while(Result::ok) {
            c2.lock().unwrap().push(s);
        }
    });
    // Every call an event (past the default limit, calls would be folded into a few records).
    let mut run = Run::start(
        &[
            "--output",
            copy.to_str().unwrap(),
            "--output",
            &tcp,
            "--max-events-per-process",
            "off",
        ],
        Stdio::null(),
    );
    run.wait("tracer_start", || file_has(&copy, "tracer_start"));
    // Far more than the socket buffers hold.
    loop_calls(20000);
    let started = Instant::now();
    let (status, stderr) = run.stop();
    assert!(status.success(), "{status}: {stderr}");
    eprintln!("stopped in {:?}", started.elapsed());
    let copy = records(&copy);
    let (stop, before) = split_stop(&copy);
    let lost = sink_lost(stop, before, &tcp);
    assert!(stderr.contains("given up"), "{stderr}");
    eprintln!("{stderr}");
    eprintln!("{}\n{stop}", before.last().unwrap());
    let received: Vec<String> = std::mem::take(&mut *conns.lock().unwrap())
        .into_iter()
        .flat_map(frames)
        .collect();
    let sent = before.len() as u64;
    let accounted = received.len() as u64 + lost;
    assert!(lost > 0, "{stop}");
    assert!(
        accounted == sent || accounted + 1 == sent,
        "{} received + {lost} lost vs {sent} sent",
        received.len()
    );
}

#[test]
fn stdout_closed_by_its_reader_leaves_the_other_outputs_running() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.json");
    let mut run = Run::start(
        &["--output", "-", "--output", copy.to_str().unwrap()],
        Stdio::piped(),
    );
    run.wait("tracer_start", || file_has(&copy, "tracer_start"));
    // The reader goes away (`| head -1`).
    drop(run.child.stdout.take());
    let first = run_workload(
        &workload_bin(),
        &[OsStr::new("--case"), OsStr::new("file_to_file_offset")],
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        run.child.try_wait().unwrap().is_none(),
        "the tracer stopped when stdout closed"
    );
    let second = run_workload(
        &workload_bin(),
        &[OsStr::new("--case"), OsStr::new("file_to_file_offset")],
    );
    let (status, stderr) = run.stop();
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        stderr.contains("output -: closed by its reader"),
        "{stderr}"
    );
    let copy = records(&copy);
    let (stop, before) = split_stop(&copy);
    for calls in [&first, &second] {
        let pid = calls[0]["pid"].clone();
        assert!(
            before.iter().any(|r| r["processId"] == pid),
            "the file got the calls made after stdout closed"
        );
    }
    assert_eq!(stop["reason"], "SIGINT");
}

/// Directories nested to about 3,800 bytes, each name 240 control characters (each one a
/// 6-byte `\u00XX` escape in JSON): a path an unprivileged process can make, whose events do not
/// fit a syslog datagram.
fn deep_long_dir(root: &Path) -> PathBuf {
    let mut dir = root.to_path_buf();
    let name: Vec<u8> = (0..240).map(|i| 1 + (i % 30) as u8).collect();
    while dir.as_os_str().len() + 241 < 3800 {
        dir.push(OsString::from_vec(name.clone()));
        std::fs::create_dir(&dir).unwrap();
    }
    dir
}

#[test]
fn a_record_too_large_for_a_datagram_is_sent_cut_and_marked() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.json");
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let url = format!("syslog+udp://{}", udp.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let g2 = got.clone();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d2 = done.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 17];
        while !d2.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(n) = udp.recv(&mut buf) {
                g2.lock().unwrap().push(buf[..n].to_vec());
            }
        }
    });
    let mut run = Run::start(
        &["--output", copy.to_str().unwrap(), "--output", &url],
        Stdio::null(),
    );
    run.wait("tracer_start", || file_has(&copy, "tracer_start"));
    let deep = deep_long_dir(dir.path());
    let calls = run_workload(
        &workload_bin(),
        &[
            OsStr::new("--case"),
            OsStr::new("file_to_file_offset"),
            OsStr::new("--dir"),
            deep.as_os_str(),
            OsStr::new("--file-name"),
            OsStr::new(&OsString::from_vec(vec![2u8; 200])),
        ],
    );
    let (status, stderr) = run.stop();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(status.success(), "{status}: {stderr}");
    let copy = records(&copy);
    let (stop, before) = split_stop(&copy);
    let pid = calls[0]["pid"].clone();
    let full = before
        .iter()
        .find(|r| r["processId"] == pid && r["eventName"] == "sendfile")
        .expect("the workload's event in the copy");
    let full_len = serde_json::to_string(full).unwrap().len();
    // rsyslog's default maxMessageSize, which the datagram sinks respect.
    assert!(
        full_len > 8192,
        "the event fits a datagram ({full_len} bytes): no test"
    );
    let got = got.lock().unwrap();
    let cut: Vec<Value> = got
        .iter()
        .filter_map(|d| {
            let s = String::from_utf8_lossy(d);
            let (_, json) = s.split_once(" - ")?;
            serde_json::from_str::<Value>(json).ok()
        })
        .filter(|v| v["processId"] == pid && v["eventName"] == "sendfile")
        .collect();
    assert_eq!(cut.len(), 1, "the event arrived, cut: {stderr}");
    let cut = &cut[0];
    let marks = cut["cutToFit"]
        .as_array()
        .expect("cutToFit lists the cut strings");
    assert!(!marks.is_empty());
    // Everything but the cut strings is the event as it is; each cut string is a prefix.
    let mut restored = cut.clone();
    restored.as_object_mut().unwrap().remove("cutToFit");
    for m in marks {
        let ptr = m["field"].as_str().unwrap();
        let whole = full.pointer(ptr).unwrap().as_str().unwrap();
        let part = cut.pointer(ptr).unwrap().as_str().unwrap();
        assert!(whole.starts_with(part) && part.len() < whole.len(), "{ptr}");
        assert_eq!(m["bytes"].as_u64().unwrap() as usize, whole.len(), "{ptr}");
        *restored.pointer_mut(ptr).unwrap() = Value::String(whole.into());
    }
    assert_eq!(&restored, full, "only the listed strings differ");
    eprintln!(
        "{full_len} bytes, cut: {}",
        serde_json::to_string(cut).unwrap().len()
    );
    eprintln!("cutToFit: {}", cut["cutToFit"]);
    assert_eq!(stop["lostByReason"]["sink"], 0, "{stop}");
    assert!(stderr.contains("does not fit a datagram"), "{stderr}");
}

#[test]
fn a_huge_rotate_keep_is_refused_naming_the_bound() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("e.json");
    let mut child = Command::new(tracer_bin())
        .args([
            "--rotate-size",
            "1K",
            "--rotate-keep",
            "4000000000",
            "--output",
        ])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_timeout(&mut child, Duration::from_secs(30));
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("--rotate-keep 4000000000") && err.contains("1000"),
        "{err}"
    );
}

/// A real rsyslogd receiving RELP (imrelp) on a loopback port, storing each message's MSG; the
/// main queue is direct, so a message is in the store before rsyslogd acknowledges it.
struct RelpReceiver {
    child: Child,
    conf: PathBuf,
    dir: PathBuf,
    store: PathBuf,
    port: u16,
}

impl RelpReceiver {
    fn start(dir: &Path, port: u16) -> RelpReceiver {
        let store = dir.join("relp.log");
        let conf = dir.join("relp.conf");
        assert!(
            Path::new("/usr/lib/x86_64-linux-gnu/rsyslog/imrelp.so").exists()
                || Path::new("/usr/lib/rsyslog/imrelp.so").exists(),
            "imrelp is missing: run `cargo xtask test` (it installs rsyslog-relp)"
        );
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{dir}" maxMessageSize="256k")
main_queue(queue.type="Direct")
module(load="imrelp")
input(type="imrelp" address="127.0.0.1" port="{port}" maxDataSize="256k")
template(name="raw" type="string" string="%msg%\n")
action(type="omfile" file="{store}" template="raw" flushOnTXEnd="on" asyncWriting="off")
"#,
                dir = dir.display(),
                store = store.display(),
            ),
        )
        .unwrap();
        let mut r = RelpReceiver {
            child: Command::new("true").spawn().unwrap(),
            conf,
            dir: dir.to_owned(),
            store,
            port,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let bin = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .expect("rsyslogd is missing: run `cargo xtask test` (it installs rsyslog)");
        let _ = self.child.wait();
        self.child = Command::new(bin)
            .args(["-n", "-f"])
            .arg(&self.conf)
            .arg("-i")
            .arg(self.dir.join("relp.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start rsyslogd");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(self.child.try_wait().unwrap().is_none(), "rsyslogd exited");
            assert!(
                Instant::now() < deadline,
                "rsyslogd did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }

    fn stored(&self) -> std::collections::HashSet<String> {
        std::fs::read_to_string(&self.store)
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim_start().to_owned())
            .collect()
    }
}

impl Drop for RelpReceiver {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs workload loops in the background until the returned flag is set.
fn steady_calls() -> (
    Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<()>,
) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let t = std::thread::spawn(move || {
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            loop_calls(300);
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    (stop, t)
}

#[test]
fn relp_resends_what_rsyslogd_did_not_acknowledge_when_it_was_killed() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let port = free_tcp_port();
    let mut rsyslog = RelpReceiver::start(dir.path(), port);
    let copy = dir.path().join("copy.json");
    let relp = format!("syslog+relp://127.0.0.1:{port}");
    // A queue far smaller than what the outage brings (thousands of records a second for 1.5 s
    // and the reconnect backoff): the sink's own hold has to carry them.
    let mut run = Run::start(
        &[
            "--output",
            copy.to_str().unwrap(),
            "--output",
            &relp,
            "--queue-size",
            "1000",
        ],
        Stdio::null(),
    );
    run.wait("tracer_start", || file_has(&copy, "tracer_start"));
    let (calls_stop, calls) = steady_calls();
    std::thread::sleep(Duration::from_millis(1500));
    rsyslog.kill();
    std::thread::sleep(Duration::from_millis(1500));
    rsyslog.spawn();
    std::thread::sleep(Duration::from_millis(1500));
    calls_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    calls.join().unwrap();
    let (status, stderr) = run.stop();
    assert!(status.success(), "{status}: {stderr}");
    let copy_text = std::fs::read_to_string(&copy).unwrap();
    let copy = records(&copy);
    let (stop, _) = split_stop(&copy);
    assert_eq!(stop["lostByReason"]["sink"], 0, "{stop}\n{stderr}");
    let stored = rsyslog.stored();
    let missing: Vec<&str> = copy_text.lines().filter(|l| !stored.contains(*l)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} records never reached rsyslogd, uncounted; first: {}\n{stderr}",
        missing.len(),
        copy.len(),
        missing[0]
    );
    let sessions = stderr.matches("session open").count();
    assert!(sessions >= 2, "the sink reconnected: {stderr}");
    eprintln!(
        "{} records all stored; {sessions} sessions: {}",
        copy.len(),
        stderr
            .lines()
            .filter(|l| l.contains("session open"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
}

#[test]
fn relp_counts_what_a_dead_receiver_never_acknowledged() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let port = free_tcp_port();
    let mut rsyslog = RelpReceiver::start(dir.path(), port);
    let copy = dir.path().join("copy.json");
    let relp = format!("syslog+relp://127.0.0.1:{port}");
    let mut run = Run::start(
        &["--output", copy.to_str().unwrap(), "--output", &relp],
        Stdio::null(),
    );
    run.wait("tracer_start", || file_has(&copy, "tracer_start"));
    let (calls_stop, calls) = steady_calls();
    std::thread::sleep(Duration::from_millis(1000));
    rsyslog.kill();
    std::thread::sleep(Duration::from_millis(1000));
    calls_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    calls.join().unwrap();
    let (status, stderr) = run.stop();
    assert!(status.success(), "{status}: {stderr}");
    let copy_text = std::fs::read_to_string(&copy).unwrap();
    let copy = records(&copy);
    let (stop, before) = split_stop(&copy);
    let lost = sink_lost(stop, before, &relp);
    let stored = rsyslog.stored();
    let lines: Vec<&str> = copy_text.lines().collect();
    let delivered = lines[..lines.len() - 1]
        .iter()
        .filter(|l| stored.contains(**l))
        .count() as u64;
    let sent = before.len() as u64;
    assert!(lost > 0, "{stop}");
    // Nothing unaccounted for: each record reached rsyslogd or is counted. Counted means not
    // acknowledged: a message rsyslogd stored just before it died, its answer never sent, is
    // counted too (at most one window of them).
    assert!(
        delivered + lost + 1 >= sent,
        "{delivered} delivered + {lost} lost vs {sent} sent\n{stderr}"
    );
    assert!(
        delivered + lost <= sent + sendfile_trace::output::sink::relp::WINDOW as u64,
        "{delivered} delivered + {lost} lost vs {sent} sent\n{stderr}"
    );
    eprintln!("{delivered} delivered + {lost} counted lost, {sent} sent");
}
