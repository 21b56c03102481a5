//! The kernel-side filters: `--pid`, `--comm`, `--uid`, `--cgroup`, `--container`,
//! `--errors-only`, `--min-bytes`, `--out-type`. Each test runs workloads that the filter must
//! admit beside workloads (or calls) it must drop, in the same tracer run, and checks that
//! exactly the admitted calls have events — every field compared — and no other call does.
//! Repeated values of one flag OR, different flags AND. Invalid values exit 2 at start.

mod support;

use std::{
    ffi::OsStr,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;
use support::*;

/// Cases with successes and failures, every output type, various sizes (count / ret):
/// file 100/100, tcp 4096/4096, unix 1000/1000, pipe 8192/3072, chardev 4096/4096,
/// ebadf 100/-9 (out: file), ebadf_negative_out 100/-9 (out: -1), einval_append 4096/-22.
const CASES: &[&str] = &[
    "file_to_file_offset",
    "file_to_tcp",
    "file_to_unix",
    "file_to_pipe",
    "file_to_chardev",
    "ebadf",
    "ebadf_negative_out",
    "einval_append",
];

/// The comm a workload started without `--comm` has.
const DEFAULT_COMM: &[u8] = b"sendfile-worklo";

/// One workload of a filter test.
struct Spec {
    /// Extra workload arguments (`--comm`, `--uid`).
    args: Vec<String>,
    /// A cgroup directory to move it into before its calls.
    cgroup: Option<PathBuf>,
}

impl Spec {
    fn plain() -> Spec {
        Spec {
            args: Vec::new(),
            cgroup: None,
        }
    }

    fn args(args: &[&str]) -> Spec {
        Spec {
            args: args.iter().map(|a| a.to_string()).collect(),
            cgroup: None,
        }
    }

    fn in_cgroup(dir: &Path) -> Spec {
        Spec {
            args: Vec::new(),
            cgroup: Some(dir.to_owned()),
        }
    }

    fn comm(&self) -> Vec<u8> {
        match self.args.iter().position(|a| a == "--comm") {
            Some(i) => kernel_comm(self.args[i + 1].as_bytes()),
            None => DEFAULT_COMM.to_vec(),
        }
    }
}

/// What one workload did in a filtered run.
struct Ran {
    pid: i64,
    calls: Vec<Value>,
    comm: Vec<u8>,
}

/// Starts the workloads (held before their calls), then the tracer with the filter flags
/// `filter(pids)` returns, then lets the workloads run; returns the records and each workload's
/// calls.
fn filtered_run(
    specs: &[Spec],
    filter: impl FnOnce(&[i64]) -> Vec<String>,
) -> (Stopped, Vec<Ran>, (u64, u64)) {
    let held: Vec<Held> = specs
        .iter()
        .map(|s| {
            let mut args: Vec<&OsStr> = s.args.iter().map(OsStr::new).collect();
            for c in CASES {
                args.push(OsStr::new("--case"));
                args.push(OsStr::new(c));
            }
            Held::spawn(&workload_bin(), &args)
        })
        .collect();
    for (h, s) in held.iter().zip(specs) {
        if let Some(dir) = &s.cgroup {
            std::fs::write(dir.join("cgroup.procs"), h.pid.to_string())
                .unwrap_or_else(|e| panic!("moving {} into {}: {e}", h.pid, dir.display()));
        }
    }
    let pids: Vec<i64> = held.iter().map(|h| i64::from(h.pid)).collect();
    let flags = filter(&pids);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let start = now_ns();
    let tracer = Tracer::start("auto", &flags).unwrap_or_else(|f| {
        panic!(
            "the tracer refused {flags:?} (exit {}): {}",
            f.status,
            f.stderr.trim()
        )
    });
    for h in &held {
        h.release();
    }
    let ran = held
        .into_iter()
        .zip(specs)
        .map(|(h, s)| Ran {
            pid: i64::from(h.pid),
            calls: h.finish(),
            comm: s.comm(),
        })
        .collect();
    let stopped = tracer.stop();
    let window = (start, now_ns());
    check_frame(&stopped);
    (stopped, ran, window)
}

/// Checks that exactly the calls `admit` accepts have events (compared field by field, with
/// `containerId` = `container`) and that no other call of the run does.
fn expect_exactly(
    (stopped, window): (&Stopped, (u64, u64)),
    ran: &Ran,
    container: Option<&str>,
    admit: impl Fn(&Value) -> bool,
) {
    let admitted: Vec<Value> = ran.calls.iter().filter(|c| admit(c)).cloned().collect();
    let events = events_of(&stopped.records, ran.pid);
    if admitted.is_empty() {
        assert!(
            events.is_empty(),
            "workload {} must be filtered out entirely, got {events:#?}",
            ran.pid
        );
        return;
    }
    let hook = stopped.records[0]["hook"].as_str().unwrap().to_owned();
    // compare_in() checks one event per admitted call and no event left over for this pid.
    compare_in(
        &stopped.records,
        &admitted,
        &hook,
        &ran.comm,
        window,
        container,
    );
}

fn all(_: &Value) -> bool {
    true
}

fn none(_: &Value) -> bool {
    false
}

#[test]
fn pid_filter_admits_exactly_the_given_processes() {
    let _serial = serial();
    require_root();
    let specs = [Spec::plain(), Spec::plain(), Spec::plain()];
    let (stopped, ran, window) = filtered_run(&specs, |pids| {
        vec![
            "--pid".into(),
            pids[0].to_string(),
            "--pid".into(),
            pids[1].to_string(),
        ]
    });
    expect_exactly((&stopped, window), &ran[0], None, all);
    expect_exactly((&stopped, window), &ran[1], None, all);
    expect_exactly((&stopped, window), &ran[2], None, none);
    let others = stopped
        .records
        .iter()
        .filter(|r| r["eventName"] == "sendfile")
        .filter(|r| r["processId"] != ran[0].pid && r["processId"] != ran[1].pid)
        .count();
    assert_eq!(others, 0, "--pid admits no other process on the host");
}

#[test]
fn comm_filter_admits_exactly_that_thread_name() {
    let _serial = serial();
    require_root();
    let name = format!("sf-comm-{}", std::process::id() % 100_000);
    let specs = [
        Spec::args(&["--comm", &name]),
        Spec::args(&["--comm", "sf-other-name"]),
        Spec::plain(),
    ];
    let (stopped, ran, window) = filtered_run(&specs, |_| vec!["--comm".into(), name.clone()]);
    expect_exactly((&stopped, window), &ran[0], None, all);
    expect_exactly((&stopped, window), &ran[1], None, none);
    expect_exactly((&stopped, window), &ran[2], None, none);
    assert!(
        stopped
            .records
            .iter()
            .filter(|r| r["eventName"] == "sendfile")
            .all(|r| r["processName"] == name.as_str()),
        "--comm admits no other name"
    );
}

#[test]
fn uid_filter_admits_exactly_that_user() {
    let _serial = serial();
    require_root();
    let specs = [Spec::args(&["--uid", "65534"]), Spec::plain()];
    let (stopped, ran, window) = filtered_run(&specs, |_| vec!["--uid".into(), "65534".into()]);
    assert!(ran[0].calls.iter().all(|c| c["uid"] == 65534));
    assert!(ran[1].calls.iter().all(|c| c["uid"] == 0));
    expect_exactly((&stopped, window), &ran[0], None, all);
    expect_exactly((&stopped, window), &ran[1], None, none);
    assert!(
        stopped
            .records
            .iter()
            .filter(|r| r["eventName"] == "sendfile")
            .all(|r| r["userId"] == 65534),
        "--uid admits no other user"
    );
}

/// A cgroup v2 directory made (and removed on drop) under this process's cgroup.
struct TempCgroup(PathBuf);

impl TempCgroup {
    fn new(name: &str) -> TempCgroup {
        TempCgroup::at(own_cgroup_dir().join(name))
    }

    fn at(dir: PathBuf) -> TempCgroup {
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", dir.display()));
        TempCgroup(dir)
    }

    fn id(&self) -> u64 {
        std::fs::metadata(&self.0).unwrap().ino()
    }
}

impl Drop for TempCgroup {
    fn drop(&mut self) {
        // The workloads have exited; an empty cgroup can be removed.
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn cgroup_filter_admits_exactly_that_cgroup_by_path_and_by_id() {
    let _serial = serial();
    require_root();
    for by_id in [false, true] {
        let cg = TempCgroup::new(&format!("sendfile-trace-test-{}", std::process::id()));
        let specs = [Spec::in_cgroup(&cg.0), Spec::plain()];
        let value = if by_id {
            cg.id().to_string()
        } else {
            cg.0.display().to_string()
        };
        let (stopped, ran, window) =
            filtered_run(&specs, |_| vec!["--cgroup".into(), value.clone()]);
        assert!(ran[0].calls.iter().all(|c| c["cgroupId"] == cg.id()));
        assert!(ran[1].calls.iter().all(|c| c["cgroupId"] != cg.id()));
        expect_exactly((&stopped, window), &ran[0], None, all);
        expect_exactly((&stopped, window), &ran[1], None, none);
        assert!(
            stopped
                .records
                .iter()
                .filter(|r| r["eventName"] == "sendfile")
                .all(|r| r["cgroupId"] == cg.id()),
            "--cgroup {value} admits no other cgroup"
        );
    }
}

#[test]
fn container_filter_admits_exactly_that_container() {
    let _serial = serial();
    require_root();
    // A cgroup where docker's cgroupfs driver puts a container (`/docker/<id>` from the cgroup2
    // root: only the layouts runtimes create carry an id).
    let id: String = format!(
        "{:016x}",
        u64::from(std::process::id()).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    )
    .repeat(4)
    .chars()
    .take(64)
    .collect();
    let docker = cgroup2_mount().join("docker");
    let made_docker = std::fs::create_dir(&docker).is_ok();
    let cg = TempCgroup::at(docker.join(&id));
    let specs = [Spec::in_cgroup(&cg.0), Spec::plain()];
    let (stopped, ran, window) = filtered_run(&specs, |_| vec!["--container".into(), id.clone()]);
    expect_exactly((&stopped, window), &ran[0], Some(&id), all);
    expect_exactly((&stopped, window), &ran[1], None, none);
    drop(cg);
    if made_docker {
        let _ = std::fs::remove_dir(&docker);
    }
}

#[test]
fn errors_only_admits_exactly_the_failed_calls() {
    let _serial = serial();
    require_root();
    let specs = [Spec::plain()];
    let (stopped, ran, window) = filtered_run(&specs, |_| vec!["--errors-only".into()]);
    assert!(ran[0].calls.iter().any(|c| c["ret"].as_i64().unwrap() < 0));
    assert!(ran[0].calls.iter().any(|c| c["ret"].as_i64().unwrap() >= 0));
    expect_exactly((&stopped, window), &ran[0], None, |c| {
        c["ret"].as_i64().unwrap() < 0
    });
}

/// `--min-bytes N` admits the calls that moved at least N bytes (return value >= N); a failed
/// call moved nothing. 3072 is file_to_pipe's exact result (its count is 8192), and
/// einval_append asks for 4096 bytes but fails: a filter on `count` would admit it.
#[test]
fn min_bytes_admits_exactly_the_calls_that_moved_that_much() {
    let _serial = serial();
    require_root();
    let specs = [Spec::plain()];
    let (stopped, ran, window) =
        filtered_run(&specs, |_| vec!["--min-bytes".into(), "3072".into()]);
    expect_exactly((&stopped, window), &ran[0], None, |c| {
        c["ret"].as_i64().unwrap() >= 3072
    });
    let admitted: Vec<&str> = ran[0]
        .calls
        .iter()
        .filter(|c| c["ret"].as_i64().unwrap() >= 3072)
        .map(|c| c["case"].as_str().unwrap())
        .collect();
    assert_eq!(
        admitted,
        ["file_to_tcp", "file_to_pipe", "file_to_chardev"],
        "the workload's results changed: fix this test's expectations"
    );
}

#[test]
fn out_type_admits_exactly_those_output_kinds() {
    let _serial = serial();
    require_root();
    // Two values OR: sockets (TCP and UNIX) and pipes.
    let specs = [Spec::plain()];
    let (stopped, ran, window) = filtered_run(&specs, |_| {
        ["--out-type", "socket", "--out-type", "pipe"]
            .map(String::from)
            .to_vec()
    });
    expect_exactly((&stopped, window), &ran[0], None, |c| {
        matches!(c["outFdInfo"]["type"].as_str(), Some("socket" | "pipe"))
    });
    // Regular files only: not /dev/null (a char device), not a descriptor that is not open.
    let (stopped, ran, window) = filtered_run(&specs, |_| {
        ["--out-type", "file"].map(String::from).to_vec()
    });
    expect_exactly((&stopped, window), &ran[0], None, |c| {
        c["outFdInfo"]["type"] == "file"
    });
    let cases: Vec<&str> = ran[0]
        .calls
        .iter()
        .filter(|c| c["outFdInfo"]["type"] == "file")
        .map(|c| c["case"].as_str().unwrap())
        .collect();
    assert_eq!(cases, ["file_to_file_offset", "ebadf", "einval_append"]);
}

#[test]
fn different_filters_and_together() {
    let _serial = serial();
    require_root();
    let name = format!("sf-and-{}", std::process::id() % 100_000);
    let specs = [Spec::args(&["--comm", &name]), Spec::plain()];
    let (stopped, ran, window) = filtered_run(&specs, |_| {
        vec![
            "--comm".into(),
            name.clone(),
            "--errors-only".into(),
            "--out-type".into(),
            "file".into(),
        ]
    });
    // Failed, from that comm, writing to a regular file: ebadf and einval_append only.
    let want = |c: &Value| c["ret"].as_i64().unwrap() < 0 && c["outFdInfo"]["type"] == "file";
    let cases: Vec<&str> = ran[0]
        .calls
        .iter()
        .filter(|c| want(c))
        .map(|c| c["case"].as_str().unwrap())
        .collect();
    assert_eq!(cases, ["ebadf", "einval_append"]);
    expect_exactly((&stopped, window), &ran[0], None, want);
    expect_exactly((&stopped, window), &ran[1], None, none);
}

#[test]
fn invalid_filter_values_exit_2_with_a_one_line_reason() {
    let _serial = serial();
    let missing = format!(
        "{}/no-such-cgroup-{}",
        cgroup2_mount().display(),
        std::process::id()
    );
    for (flag, value) in [
        ("--pid", "abc"),
        ("--pid", "-5"),
        ("--uid", "x1"),
        ("--min-bytes", "lots"),
        ("--min-bytes", "-1"),
        ("--out-type", "disk"),
        ("--cgroup", missing.as_str()),
    ] {
        let out = Command::new(tracer_bin())
            .arg(format!("{flag}={value}"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {err}");
        assert!(out.stdout.is_empty(), "{flag} {value}: nothing traced");
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.contains(value),
            "{flag}={value}: the first line names the bad value: {err}"
        );
    }
}
