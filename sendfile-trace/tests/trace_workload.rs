//! The real tracer beside the real workload, as root: every call of the workload is matched by
//! exactly one event and every field is compared; hooks that cannot work here must fail with the
//! expected reason.

mod support;

use std::{
    ffi::OsStr,
    io::{BufRead, BufReader},
    os::unix::fs::PermissionsExt,
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use support::*;

/// The comm the workload has when it does not rename itself.
const DEFAULT_COMM: &[u8] = b"sendfile-worklo";

fn assert_unsupported(hook: &str, reason: &str) {
    let failure = match Tracer::start(hook, &[]) {
        Ok(t) => {
            let stopped = t.stop();
            panic!(
                "hook {hook} attached but should be unsupported here: {}",
                stopped.stderr
            );
        }
        Err(f) => f,
    };
    assert_eq!(failure.status.code(), Some(1), "{hook}: {}", failure.stderr);
    let last = failure.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("sendfile-trace: error: hook ") && last.contains(reason),
        "{hook}: expected one line with {reason:?}, got {:?}",
        failure.stderr
    );
}

#[test]
fn every_hook_traces_every_call_exactly() {
    let _serial = serial();
    require_root();
    for hook in hooks() {
        if let Expect::Unsupported(reason) = expectation(&hook) {
            assert_unsupported(&hook, reason);
            eprintln!("{hook}: unsupported here, as expected ({reason})");
            continue;
        }
        let start = now_ns();
        let tracer = Tracer::start(&hook, &[]).unwrap_or_else(|f| panic!("{hook}: {f:?}"));
        let calls = run_workload(&workload_bin(), &[]);
        let calls32 = workload32_bin().map(|b| run_workload(&b, &[]));
        let stopped = tracer.stop();
        let window = (start, now_ns());
        check_frame(&stopped);
        compare(&stopped.records, &calls, &hook, DEFAULT_COMM, window);
        if let Some(calls32) = &calls32 {
            assert!(calls32.iter().all(|c| c["compat"] == true));
            assert!(calls32.iter().any(|c| c["syscallNr"] == 187));
            assert!(calls32.iter().any(|c| c["syscallNr"] == 239));
            compare(&stopped.records, calls32, &hook, DEFAULT_COMM, window);
        }
        eprintln!(
            "{hook}: {} + {} calls matched field by field",
            calls.len(),
            calls32.map_or(0, |c| c.len())
        );
    }
}

/// Kernels before 5.17 have no `bpf_loop`, and walk paths with an unrolled loop instead: the
/// same calls, traced that way here, must give the same events field by field.
#[test]
fn paths_walked_without_bpf_loop_are_the_same() {
    let _serial = serial();
    require_root();
    let hook = tracer_hook();
    let start = now_ns();
    let mut command = Command::new(tracer_bin());
    command.env("SENDFILE_TRACE_NO_BPF_LOOP", "1");
    let tracer =
        Tracer::start_command(command, &hook, &["-v"]).unwrap_or_else(|f| panic!("{hook}: {f:?}"));
    let calls = run_workload(&workload_bin(), &[]);
    let stopped = tracer.stop();
    check_frame(&stopped);
    assert!(
        stopped.stderr.contains("path walks: unrolled loop"),
        "{}",
        stopped.stderr
    );
    compare(
        &stopped.records,
        &calls,
        &hook,
        DEFAULT_COMM,
        (start, now_ns()),
    );
    eprintln!(
        "{hook}, unrolled path walks: {} calls matched field by field",
        calls.len()
    );
}

#[test]
fn auto_picks_the_first_hook_that_works_and_says_why_not_the_others() {
    let _serial = serial();
    require_root();
    let order = ["kprobe", "fentry", "tracepoint"];
    let chosen = order
        .iter()
        .position(|h| expectation(h) == Expect::Works)
        .expect("some hook works");
    let t = Tracer::start(order[chosen], &[]).map(|t| t.stop());
    assert!(
        t.is_ok(),
        "the expected hook {} works on its own",
        order[chosen]
    );

    let out = Command::new(tracer_bin())
        .args(["--hook", "auto"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = out;
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // SAFETY: signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = wait_timeout(&mut child, Duration::from_secs(30));
    assert!(status.success());
    let start: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(start["eventName"], "tracer_start");
    assert_eq!(start["hook"], order[chosen], "{start}");
    let fallbacks = start["fallbacks"].as_array().unwrap();
    assert_eq!(fallbacks.len(), chosen, "{start}");
    for (f, hook) in fallbacks.iter().zip(order) {
        assert_eq!(f["hook"], hook);
        let Expect::Unsupported(reason) = expectation(hook) else {
            panic!("{hook} should have worked: {f}");
        };
        assert!(f["reason"].as_str().unwrap().contains(reason), "{f}");
    }
}

#[test]
fn hostile_process_names_stay_exact_in_one_line_of_json() {
    let _serial = serial();
    require_root();
    let comm: &[u8] = b"a\"b\\\nc\xff\x1b[0m";
    let file_name: &[u8] = b"in\"put\n\\x\xfe.bin";
    let start = now_ns();
    let tracer = Tracer::start("auto", &[]).unwrap();
    let hook = tracer_hook();
    let calls = run_workload(
        &workload_bin(),
        &[
            OsStr::new("--comm"),
            os(comm),
            OsStr::new("--file-name"),
            os(file_name),
            OsStr::new("--case"),
            OsStr::new("file_to_file_offset"),
            OsStr::new("--case"),
            OsStr::new("ebadf"),
        ],
    );
    let stopped = tracer.stop();
    check_frame(&stopped);
    for line in &stopped.lines {
        assert!(!line.contains('\n') && !line.contains('\r'));
    }
    compare(
        &stopped.records,
        &calls,
        &hook,
        &kernel_comm(comm),
        (start, now_ns()),
    );
}

/// The hook `auto` picks here.
fn tracer_hook() -> String {
    ["kprobe", "fentry", "tracepoint"]
        .into_iter()
        .find(|h| expectation(h) == Expect::Works)
        .unwrap()
        .to_owned()
}

#[test]
fn strace_as_an_independent_oracle_agrees() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("strace.log");
    let tracer = Tracer::start("auto", &[]).unwrap();
    let status = strace::command("strace", &log)
        .arg(workload_bin())
        .stdout(Stdio::null())
        .status()
        .expect("strace is needed (cargo xtask test installs it)");
    assert!(status.success());
    let stopped = tracer.stop();
    check_frame(&stopped);
    let text = std::fs::read_to_string(&log).unwrap();
    let calls = strace::parse_log(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(calls.len() >= 10, "{text}");
    let events = events_of(&stopped.records, calls[0].pid);
    assert_eq!(
        events.len(),
        calls.len(),
        "strace: {text}\nevents: {events:#?}"
    );
    let mut fd_mismatches = Vec::new();
    for (c, e) in calls.iter().zip(&events) {
        let ctx = format!("{c:?}\n{e}");
        assert_eq!(e["threadId"], c.pid, "{ctx}");
        fd_mismatches.extend(strace_call_mismatch(c, e, &ctx));
    }
    assert!(
        fd_mismatches.is_empty(),
        "descriptor and process fields: {} fd object(s) differ from strace -yy:\n{}",
        fd_mismatches.len(),
        fd_mismatches.join("\n")
    );
}

#[test]
fn a_closed_stdout_ends_the_tracer_cleanly() {
    let _serial = serial();
    require_root();
    let mut child = Command::new(tracer_bin())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert!(first.contains("tracer_start"));
    drop(reader);
    // Events now hit a closed pipe: EPIPE must end the tracer with status 0, no panic.
    let _ = run_workload(
        &workload_bin(),
        &[OsStr::new("--case"), OsStr::new("count_zero")],
    );
    let status = wait_timeout(&mut child, Duration::from_secs(10));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn output_file_is_private_refuses_symlinks_and_sigterm_drains() {
    let _serial = serial();
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let path_s = path.to_str().unwrap();
    let tracer = Tracer::start("auto", &["--output", path_s]).unwrap();
    let calls = run_workload(
        &workload_bin(),
        &[OsStr::new("--case"), OsStr::new("file_to_pipe")],
    );
    let stopped = tracer.stop_with(libc::SIGTERM);
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert!(stopped.lines.is_empty(), "nothing on stdout with --output");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let records: Vec<Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.last().unwrap()["reason"], "SIGTERM");
    let pid = calls[0]["pid"].as_i64().unwrap();
    assert_eq!(events_of(&records, pid).len(), 1);

    let link = dir.path().join("planted");
    std::os::unix::fs::symlink("/etc/passwd-never-written", &link).unwrap();
    let out = Command::new(tracer_bin())
        .arg("--output")
        .arg(&link)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("cannot open output file"), "{err}");
    assert!(!std::path::Path::new("/etc/passwd-never-written").exists());
}

#[test]
fn bad_input_and_missing_privileges_are_named_in_one_line() {
    let _serial = serial();
    let out = Command::new(tracer_bin())
        .args(["--ring-buffer-size", "3000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.lines().next().unwrap().contains("power of two"),
        "{err}"
    );

    let out = Command::new(tracer_bin())
        .args(["--hook", "uprobe"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    require_root();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(tracer_bin())
        .output()
        .expect("setpriv (util-linux)");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("insufficient privileges"), "{err}");
}

#[test]
fn a_full_ring_buffer_is_counted_exactly_never_silently() {
    let _serial = serial();
    require_root();
    const CALLS: u64 = 1000;
    // Only this workload's calls (a unique comm, filtered in the kernel): other processes calling
    // sendfile on the host meanwhile would otherwise add to the loss counter.
    let comm = format!("sf-ring-{}", std::process::id() % 100_000);
    let tracer = Tracer::start("auto", &["--ring-buffer-size", "4096", "--comm", &comm]).unwrap();
    // A stopped reader: the 4 KiB ring fills after a few dozen records, the rest must be counted.
    // SAFETY: signals to our own child.
    unsafe { libc::kill(tracer.pid() as i32, libc::SIGSTOP) };
    let summary = run_workload(
        &workload_bin(),
        &[
            OsStr::new("--loop"),
            OsStr::new(&CALLS.to_string()),
            OsStr::new("--size"),
            OsStr::new("64"),
            OsStr::new("--comm"),
            OsStr::new(&comm),
        ],
    );
    assert_eq!(summary[0]["calls"], CALLS);
    // SAFETY: kill has no memory preconditions; the pid is our own child, still unreaped.
    unsafe { libc::kill(tracer.pid() as i32, libc::SIGCONT) };
    // Losses are reported within a second.
    std::thread::sleep(Duration::from_millis(1200));
    let stopped = tracer.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let delivered = stopped
        .records
        .iter()
        .filter(|r| r["eventName"] == "sendfile" && r["processName"] == comm.as_str())
        .count() as u64;
    let stop = stopped.records.last().unwrap();
    assert_eq!(stop["eventName"], "tracer_stop");
    let lost = stop["lostByReason"]["ring_buffer_full"].as_u64().unwrap();
    assert!(
        lost > 0,
        "a 4 KiB ring with a stopped reader must overflow: {stop}"
    );
    assert_eq!(
        delivered + lost,
        CALLS,
        "delivered {delivered} + lost {lost}: {stop}"
    );
    assert_eq!(stop["lost"], lost, "{stop}");
    let reported: u64 = stopped
        .records
        .iter()
        .filter(|r| r["eventName"] == "events_lost")
        .map(|r| {
            assert_eq!(r["reason"], "ring_buffer_full");
            r["lost"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(reported, lost, "events_lost records add up to the total");
}

#[test]
fn stopping_in_the_middle_of_a_burst_reports_no_false_loss() {
    let _serial = serial();
    require_root();
    // A tight loop still running while the tracer detaches: if an exit program went away before
    // its entry program, the loop's next call would count a false `missed_exit`.
    // It runs until killed (a bounded loop could end before a slow start attaches the tracer).
    let mut burst = Burst(
        Command::new(workload_bin())
            .args(["--loop", "1000000000000", "--size", "64"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = burst.0.id();
    let mut tracer = Tracer::start("auto", &[]).unwrap();
    // Traced for a while: over a thousand of its calls written.
    tracer.wait_for("1000 events of the burst", |records| {
        records
            .iter()
            .filter(|r| r["eventName"] == "sendfile" && r["processId"] == pid)
            .nth(1000)
            .is_some()
    });
    assert!(
        burst.0.try_wait().unwrap().is_none(),
        "the burst still runs when the tracer stops"
    );
    let stopped = tracer.stop();
    assert!(
        burst.0.try_wait().unwrap().is_none(),
        "the burst still ran while the tracer detached"
    );
    drop(burst);
    let stop = stopped.records.last().unwrap();
    assert_eq!(stop["eventName"], "tracer_stop");
    assert!(
        stop["events"].as_u64().unwrap() > 1000,
        "the burst was traced: {stop}"
    );
    assert_eq!(stop["lostByReason"]["missed_exit"], 0, "{stop}");
    assert_eq!(stop["lostByReason"]["in_flight_full"], 0, "{stop}");
}

/// A workload that runs until killed: killed when dropped, also when a test fails.
struct Burst(std::process::Child);

impl Drop for Burst {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
