//! `--mode flows` and `--max-events-per-process` against the real workload: every flow the
//! workload made is reported once, with the sums of what the kernel returned to it, field by
//! field; under concurrency with emission racing the calls, the sums stay exact.

mod support;

use std::{collections::BTreeMap, ffi::OsStr};

use serde_json::{Value, json};
use support::*;

/// Flow records of one process, grouped by `flowId` in the order they were written.
fn flows_of(records: &[Value], host_pid: u64) -> BTreeMap<u64, Vec<&Value>> {
    let mut m: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for r in records
        .iter()
        .filter(|r| r["eventName"] == "sendfile_flow" && r["hostProcessId"] == host_pid)
    {
        m.entry(r["flowId"].as_u64().unwrap()).or_default().push(r);
    }
    m
}

/// Runs the workload's flow cases and returns its lines (one per case).
fn flow_cases(bin: &std::path::Path, cases: &[&str]) -> Vec<Value> {
    let mut args: Vec<&OsStr> = vec![OsStr::new("--flows")];
    for c in cases {
        args.extend([OsStr::new("--flow-case"), OsStr::new(c)]);
    }
    run_workload(bin, &args)
}

/// Waits until every flow of every workload run in `runs` (its case lines) has its final record
/// from the tracer's idle sweep, before anything stops the tracer (which would end the flows
/// itself, with reason `stop`). A flow that never goes idle fails here, after
/// [`settle_timeout`].
fn wait_idle_flows(tracer: &mut Tracer, runs: &[&[Value]]) {
    let want: Vec<(u64, usize)> = runs
        .iter()
        .map(|lines| {
            let made = lines
                .iter()
                .map(|l| l["flows"].as_array().unwrap().len())
                .sum();
            (lines[0]["pid"].as_u64().unwrap(), made)
        })
        .collect();
    tracer.wait_for(
        &format!("final records of the flows {want:?} (pid, flows)"),
        |records| {
            want.iter().all(|&(pid, made)| {
                let finals = records
                    .iter()
                    .filter(|r| {
                        r["eventName"] == "sendfile_flow"
                            && r["hostProcessId"] == pid
                            && r["final"] == true
                    })
                    .count();
                finals >= made
            })
        },
    );
}

/// Checks that each flow of each case line is reported by exactly one flow of the tracer, with
/// every field equal to what the workload knew.
fn compare_flows(records: &[Value], lines: &[Value], hook: &str) {
    let pid = lines[0]["pid"].as_u64().unwrap();
    let flows = flows_of(records, pid);
    let made: Vec<(&Value, &Value)> = lines
        .iter()
        .flat_map(|l| l["flows"].as_array().unwrap().iter().map(move |f| (l, f)))
        .collect();
    assert_eq!(
        flows.len(),
        made.len(),
        "one flow per flow the workload made: {flows:#?}\nmade: {made:#?}"
    );
    let mut mismatches = Vec::new();
    for (line, want) in made {
        let case = line["flowCase"].as_str().unwrap();
        let found: Vec<&Vec<&Value>> = flows
            .values()
            .filter(|recs| {
                recs[0]["inFd"] == want["inFdInfo"] && recs[0]["outFd"] == want["outFdInfo"]
            })
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{case}: one flow with these descriptors: {want}\nflows: {flows:#?}"
        );
        let recs = found[0];
        let s = flow_sum(recs);
        let (first, last) = (recs[0], recs[recs.len() - 1]);
        let ctx = format!("{case}: made {want}\nreported {recs:#?}");
        assert_eq!(s.calls, want["calls"], "{ctx}");
        assert_eq!(s.bytes, want["bytes"], "{ctx}");
        assert_eq!(s.failed, want["failedCalls"], "{ctx}");
        let errnos: BTreeMap<String, u64> = serde_json::from_value(want["errnos"].clone()).unwrap();
        assert_eq!(s.errnos, errnos, "{ctx}");
        assert_eq!(first["offsetFirst"], want["offsetFirst"], "{ctx}");
        assert_eq!(last["offsetLast"], want["offsetLast"], "{ctx}");
        assert_eq!(last["isCompat"], want["compat"], "{ctx}");
        assert_eq!(last["reason"], "idle", "{ctx}");
        assert_eq!(last["hook"], hook, "{ctx}");
        assert_eq!(last["throttled"], false, "{ctx}");
        let syscall = if want["syscallNr"] == 187 {
            "sendfile"
        } else {
            "sendfile64"
        };
        assert_eq!(last["syscall"], syscall, "{ctx}");
        assert!(
            last["firstTimestamp"].as_u64() <= last["lastTimestamp"].as_u64(),
            "{ctx}"
        );
        match case {
            "errors" => {
                assert_eq!(last["firstErrno"], "EFAULT", "{ctx}");
                assert_eq!(last["lastErrno"], "EFAULT", "{ctx}");
            }
            _ => assert_eq!(last["firstErrno"], Value::Null, "{ctx}"),
        }
        // The process context, exactly as in sendfile events.
        let mut call = want.clone();
        for key in ["ppid", "exe", "exeHex", "mntNs", "pidNs", "uid", "gid"] {
            call[key] = line[key].clone();
        }
        call["pid"] = line["pid"].clone();
        call["case"] = json!(case);
        assert_eq!(last["processId"], line["pid"], "{ctx}");
        assert_eq!(last["threadId"], want["tid"], "{ctx}");
        assert_eq!(last["userId"], line["uid"], "{ctx}");
        assert_eq!(last["groupId"], line["gid"], "{ctx}");
        assert_eq!(last["cgroupId"], line["cgroupId"], "{ctx}");
        issue4_mismatches(&call, last, None, &mut mismatches);
    }
    assert!(
        mismatches.is_empty(),
        "flow fields differ from what the workload knew:\n{}",
        mismatches.join("\n")
    );
}

#[test]
fn every_hook_counts_flows_exactly() {
    let _serial = serial();
    require_root();
    for hook in hooks() {
        if let Expect::Unsupported(reason) = expectation(&hook) {
            eprintln!("{hook}: unsupported here, as expected ({reason})");
            continue;
        }
        let mut tracer = Tracer::start(&hook, &["--mode", "flows", "--flow-idle", "300ms"])
            .unwrap_or_else(|f| panic!("{hook}: {f:?}"));
        let lines = flow_cases(&workload_bin(), &[]);
        let lines32 = workload32_bin().map(|b| flow_cases(&b, &[]));
        // Idle flows are written within a sweep of --flow-idle, once the tracer gets the CPU.
        let mut runs = vec![&lines[..]];
        runs.extend(lines32.as_deref());
        wait_idle_flows(&mut tracer, &runs);
        let stopped = tracer.stop();
        check_frame(&stopped);
        assert_eq!(lines.len(), 4, "{lines:?}");
        compare_flows(&stopped.records, &lines, &hook);
        let chunks = &lines[0]["flows"][0];
        assert_eq!(chunks["calls"], 10_000);
        assert_eq!(chunks["bytes"], 640_000);
        if let Some(lines32) = &lines32 {
            assert!(lines32[0]["flows"][0]["compat"] == true);
            compare_flows(&stopped.records, lines32, &hook);
        }
        let stop = stopped.records.last().unwrap();
        assert!(stop["flowRecords"].as_u64().unwrap() >= 5, "{stop}");
        eprintln!(
            "{hook}: {} + {} flows matched field by field",
            lines.len(),
            lines32.map_or(0, |l| l.len())
        );
    }
}

/// Runs the loop workload (`threads` × `calls` of 64 bytes, `extra` arguments) under a tracer
/// with `args`; returns its pid and the tracer's records.
fn traced_loop(args: &[&str], calls: u64, threads: u32, extra: &[&str]) -> (u64, Vec<Value>) {
    let tracer = Tracer::start("auto", args).unwrap();
    let calls_s = calls.to_string();
    let threads_s = threads.to_string();
    let mut a: Vec<&OsStr> = [
        "--loop",
        calls_s.as_str(),
        "--size",
        "64",
        "--threads",
        threads_s.as_str(),
    ]
    .into_iter()
    .map(OsStr::new)
    .collect();
    a.extend(extra.iter().map(OsStr::new));
    let held = Held::spawn(&workload_bin(), &a);
    let pid = u64::from(held.pid);
    held.release();
    let lines = held.finish();
    assert_eq!(lines[0]["calls"], calls * u64::from(threads), "{lines:?}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let stopped = tracer.stop();
    check_frame(&stopped);
    (pid, stopped.records)
}

#[test]
fn flow_sums_stay_exact_while_emission_races_the_calls() {
    let _serial = serial();
    require_root();
    let (calls, threads) = (25_000u64, 4u32);
    for shared in [true, false] {
        let mut extra = vec!["--pause-every", "400"];
        if shared {
            extra.push("--shared");
        }
        let (pid, records) = traced_loop(
            &[
                "--mode",
                "flows",
                "--flow-idle",
                "1ms",
                "--flow-interval",
                "2ms",
            ],
            calls,
            threads,
            &extra,
        );
        let flows = flows_of(&records, pid);
        let mut total = FlowSum::default();
        let mut n_records = 0;
        for recs in flows.values() {
            let s = flow_sum(recs);
            n_records += recs.len();
            total.calls += s.calls;
            total.bytes += s.bytes;
            total.failed += s.failed;
        }
        let made = calls * u64::from(threads);
        assert_eq!(
            (total.calls, total.bytes, total.failed),
            (made, made * 64, 0),
            "shared={shared}: summed flow records equal summed returns"
        );
        assert!(
            records
                .iter()
                .all(|r| !(r["eventName"] == "sendfile" && r["hostProcessId"] == pid)),
            "no call traced on its own"
        );
        // Emission did race the calls: many records, several flows retired while threads ran (the
        // workload's threads sleep 60 ms together six times, so this does not hang on timing).
        assert!(
            n_records > 20 && flows.len() > 2,
            "{n_records} records, {} flows",
            flows.len()
        );
        eprintln!(
            "shared={shared}: {made} calls in {} flows, {n_records} records: exact",
            flows.len()
        );
    }
}

/// What the per-process limit made of process `pid`'s calls.
struct Folded {
    /// Calls written as `sendfile` events.
    events: u64,
    /// Calls counted in its flow records.
    folded: u64,
    /// Its first `throttled` record.
    throttled: Value,
}

/// Splits `pid`'s calls into events and folded calls; every flow record of a process that only
/// the limit folded says `throttled`, and a `throttled` record names the process.
fn folded_by_the_limit(records: &[Value], pid: u64) -> Folded {
    let events = records
        .iter()
        .filter(|r| r["eventName"] == "sendfile" && r["hostProcessId"] == pid)
        .count() as u64;
    let flows = flows_of(records, pid);
    assert!(flows.values().flatten().all(|r| r["throttled"] == true));
    let folded = flows.values().map(|recs| flow_sum(recs).calls).sum();
    let throttled = records
        .iter()
        .find(|r| r["eventName"] == "throttled" && r["hostProcessId"] == pid)
        .expect("a throttled record names the process")
        .clone();
    Folded {
        events,
        folded,
        throttled,
    }
}

#[test]
fn the_rate_limit_folds_calls_into_flows_and_loses_none() {
    let _serial = serial();
    require_root();
    let calls = 20_000u64;
    let (pid, records) = traced_loop(
        &["--max-events-per-process", "500", "--flow-idle", "200ms"],
        calls,
        1,
        &[],
    );
    let Folded {
        events,
        folded,
        throttled,
    } = folded_by_the_limit(&records, pid);
    assert_eq!(events + folded, calls, "events {events} + folded {folded}");
    // A token bucket of a tenth of a second: at least the first 50 calls are events.
    assert!(
        events >= 50 && folded > 0,
        "events {events}, folded {folded}"
    );
    assert_eq!(throttled["limit"], 500);
    assert_eq!(throttled["processName"], "sendfile-worklo");
    let stop = records.last().unwrap();
    assert!(stop["foldedCalls"].as_u64().unwrap() >= folded, "{stop}");
}

#[test]
fn a_tight_loop_at_default_settings_loses_no_call() {
    let _serial = serial();
    require_root();
    // 4 threads of one process as fast as they can: far past what calls mode carries (a third
    // delivered without the default limit). Every call must end as an event or in a flow record.
    let (calls, threads) = (40_000u64, 4u32);
    let comm = format!("sf-tight-{}", std::process::id() % 100_000);
    let (pid, records) = traced_loop(&["--comm", &comm], calls, threads, &["--comm", &comm]);
    let made = calls * u64::from(threads);
    let Folded {
        events,
        folded,
        throttled,
    } = folded_by_the_limit(&records, pid);
    let stop = records.last().unwrap();
    assert_eq!(stop["eventName"], "tracer_stop");
    assert_eq!(stop["lost"], 0, "{stop}");
    assert_eq!(events + folded, made, "events {events} + folded {folded}");
    // The default bucket holds 1,000 events; the loop runs long enough to earn more.
    assert!(
        events >= 1_000 && folded > 0,
        "events {events}, folded {folded}"
    );
    assert_eq!(throttled["limit"], 10_000, "the default limit");
    eprintln!("{made} calls: {events} events + {folded} folded into flow records, 0 lost");
}

#[test]
fn errors_only_and_min_bytes_apply_to_flow_totals() {
    let _serial = serial();
    require_root();
    for (args, want) in [
        (&["--errors-only"][..], vec!["errors"]),
        (&["--min-bytes", "600000"][..], vec!["chunks"]),
    ] {
        let mut a = vec!["--mode", "flows", "--flow-idle", "200ms"];
        a.extend_from_slice(args);
        let mut tracer = Tracer::start("auto", &a).unwrap();
        let lines = flow_cases(&workload_bin(), &["chunks", "errors"]);
        let kept: Vec<Value> = lines
            .iter()
            .filter(|l| want.contains(&l["flowCase"].as_str().unwrap()))
            .cloned()
            .collect();
        // The kept flow's idle record. A flow the filter should have dropped would be written
        // at the latest when the stop ends it, so the count below still sees it.
        wait_idle_flows(&mut tracer, &[&kept]);
        let stopped = tracer.stop();
        check_frame(&stopped);
        let pid = lines[0]["pid"].as_u64().unwrap();
        let flows = flows_of(&stopped.records, pid);
        assert_eq!(flows.len(), 1, "{args:?}: {flows:#?}");
        compare_flows(&stopped.records, &kept, &tracer_hook_of(&stopped.records));
    }
}

/// The hook a stream's `tracer_start` names.
fn tracer_hook_of(records: &[Value]) -> String {
    records[0]["hook"].as_str().unwrap().to_owned()
}
