//! `cargo xtask bench`: what tracing sendfile costs, side by side with the floor (empty programs
//! on the same hooks) and with peers (bpftrace, strace), plus a burst's loss accounting and the
//! daemon's footprint. Timings never fail the bench; only a tool that cannot start does.

use std::{
    fmt::Write as _,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{compile, run::interrupt, tools, vm::workspace_root};

/// Options of `cargo xtask bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Rounds; each round runs every variant once, and the median is reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// sendfile calls per timed run.
    #[arg(long, default_value_t = 200_000)]
    calls: u64,
    /// sendfile calls per run under strace (it is slow).
    #[arg(long, default_value_t = 20_000)]
    strace_calls: u64,
}

/// Bytes per sendfile call in the timed runs and the burst.
const SIZE: &str = "64";
/// CPU the workload is pinned to; the tracer gets the other one.
const WORKLOAD_CPU: &str = "0";
/// CPU the tracer is pinned to.
const TRACER_CPU: &str = "1";
/// How long a tracer may take to become ready or to stop.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);
/// Our hooks that attach on this host and are benched; kprobe and fentry would go here (each
/// with its own floor programs) on a kernel that has them.
const HOOKS: [&str; 1] = ["tracepoint"];
/// Burst: threads × calls per thread.
const BURST_THREADS: u64 = 4;
/// Burst: calls per thread.
const BURST_CALLS: u64 = 20_000;

/// bpftrace recording the fields our events carry, printing one line per call.
const BPFTRACE_SCRIPT: &str = r#"
tracepoint:syscalls:sys_enter_sendfile64 {
  @out[tid] = args->out_fd; @in[tid] = args->in_fd; @optr[tid] = (uint64)args->offset;
  @oval[tid] = args->offset != 0 ? *(int64*)args->offset : -1;
  @cnt[tid] = args->count; @seen[tid] = 1;
}
tracepoint:syscalls:sys_exit_sendfile64 /@seen[tid]/ {
  printf("%d %d %d %s %d %d %lu %ld %lu %ld\n", pid, tid, uid, comm, @out[tid], @in[tid],
         @optr[tid], @oval[tid], @cnt[tid], args->ret);
  delete(@out[tid]); delete(@in[tid]); delete(@optr[tid]); delete(@oval[tid]);
  delete(@cnt[tid]); delete(@seen[tid]);
}
"#;

/// One way of running the timed loop.
#[derive(Clone)]
enum Kind {
    /// No tracer.
    Untraced,
    /// `sendfile-trace-floor`: empty programs on the tracepoint hook's attach set.
    Floor,
    /// `sendfile-trace --hook HOOK`, events to /dev/null or to a file; with `flows`, in
    /// `--mode flows` (the loop's calls are one established flow).
    Ours {
        hook: &'static str,
        file: bool,
        flows: bool,
    },
    /// bpftrace with [`BPFTRACE_SCRIPT`], output to /dev/null.
    Bpftrace,
    /// strace -f on the workload, output to /dev/null.
    Strace,
}

/// A named variant and its measurements.
struct Variant {
    name: String,
    kind: Kind,
    calls: u64,
    ns_per_call: Vec<f64>,
    /// ns per getpid(2) while the variant was attached, per round.
    getpid_ns: Vec<f64>,
}

/// A started tracer with everything it wrote on stderr (and stdout when piped).
struct Tracer {
    name: String,
    child: Child,
    log: Arc<Mutex<String>>,
}

/// What tells that a tracer is ready.
enum Ready {
    /// A line on stdout containing this.
    Stdout(&'static str),
    /// This many lines on stderr containing this.
    Stderr(&'static str, usize),
    /// A line in this file containing this.
    File(PathBuf, &'static str),
}

fn bench_dir() -> PathBuf {
    workspace_root().join("target/bench")
}

/// Copies a stream into `log` line by line, counting lines that contain `pattern`.
fn drain(
    stream: impl Read + Send + 'static,
    log: Arc<Mutex<String>>,
    pattern: Option<&'static str>,
    hits: Arc<Mutex<usize>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if pattern.is_some_and(|p| line.contains(p)) {
                *hits.lock().unwrap() += 1;
            }
            let mut log = log.lock().unwrap();
            if log.len() < 1 << 20 {
                log.push_str(&line);
                log.push('\n');
            }
        }
    });
}

/// Spawns a tracer pinned to [`TRACER_CPU`] and waits until it is ready.
fn start(name: &str, program: &Path, args: &[&str], ready: Ready) -> Result<Tracer> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", TRACER_CPU])
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    let (stdout_pattern, stderr_pattern, needed) = match &ready {
        Ready::Stdout(p) => {
            cmd.stdout(Stdio::piped());
            (Some(*p), None, 1)
        }
        Ready::Stderr(p, n) => {
            cmd.stdout(Stdio::null());
            (None, Some(*p), *n)
        }
        Ready::File(..) => {
            cmd.stdout(Stdio::null());
            (None, None, 0)
        }
    };
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    let log = Arc::new(Mutex::new(String::new()));
    let hits = Arc::new(Mutex::new(0usize));
    if let Some(out) = child.stdout.take() {
        drain(out, log.clone(), stdout_pattern, hits.clone());
    }
    if let Some(err) = child.stderr.take() {
        drain(err, log.clone(), stderr_pattern, hits.clone());
    }
    let mut tracer = Tracer {
        name: name.to_owned(),
        child,
        log,
    };
    let deadline = Instant::now() + TOOL_TIMEOUT;
    loop {
        let ok = match &ready {
            Ready::File(path, p) => std::fs::read_to_string(path).is_ok_and(|s| s.contains(p)),
            _ => *hits.lock().unwrap() >= needed,
        };
        if ok {
            break;
        }
        if let Some(status) = tracer.child.try_wait()? {
            bail!(
                "{name} exited before it was ready ({status}); its output:\n{}",
                tracer.log.lock().unwrap()
            );
        }
        if Instant::now() > deadline {
            let _ = tracer.child.kill();
            let _ = tracer.child.wait();
            bail!(
                "{name} was not ready after {TOOL_TIMEOUT:?}; its output:\n{}",
                tracer.log.lock().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Let the attach settle (bpftrace says "Attaching" just before it attaches).
    std::thread::sleep(Duration::from_millis(300));
    Ok(tracer)
}

/// Interrupts a tracer and waits for it; fails if it does not exit cleanly.
fn stop(mut tracer: Tracer) -> Result<ExitStatus> {
    interrupt(tracer.child.id())?;
    let deadline = Instant::now() + TOOL_TIMEOUT;
    loop {
        if let Some(status) = tracer.child.try_wait()? {
            if !status.success() {
                bail!(
                    "{} exited with {status} after SIGINT; its output:\n{}",
                    tracer.name,
                    tracer.log.lock().unwrap()
                );
            }
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = tracer.child.kill();
            let _ = tracer.child.wait();
            bail!("{} did not stop within {TOOL_TIMEOUT:?}", tracer.name);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs a command that ends with the workload's loop mode and returns its summary line.
fn run_loop(cmd: &mut Command) -> Result<Value> {
    run_summary(cmd, "loop")
}

/// Runs a command that ends with one of the workload's loop modes and returns the summary line
/// whose `case` is `case`.
fn run_summary(cmd: &mut Command, case: &str) -> Result<Value> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["case"] == case)
        .with_context(|| format!("no loop summary in the output of {cmd:?}: {text}"))
}

/// The workload pinned to [`WORKLOAD_CPU`] with `args`, under `strace -f` (pinned to the
/// tracer's CPU) if `strace`.
fn workload_with(args: &[&str], strace: bool) -> Command {
    let mut c = Command::new("taskset");
    if strace {
        c.args(["-c", TRACER_CPU, "strace", "-f", "-qq"])
            .args(["-e", "trace=sendfile", "-o", "/dev/null"])
            .arg("taskset");
    }
    c.args(["-c", WORKLOAD_CPU])
        .arg(compile::host_bin("sendfile-workload"))
        .args(args);
    c
}

/// The workload pinned to [`WORKLOAD_CPU`] in loop mode.
fn workload(calls: u64) -> Command {
    workload_with(&["--loop", &calls.to_string(), "--size", SIZE], false)
}

/// ns per getpid(2) while a variant is attached.
fn getpid_ns(kind: &Kind, calls: u64) -> Result<f64> {
    let strace = matches!(kind, Kind::Strace);
    let summary = run_summary(
        &mut workload_with(&["--getpid-loop", &calls.to_string()], strace),
        "getpid-loop",
    )?;
    summary["nsPerCall"]
        .as_f64()
        .context("getpid summary without nsPerCall")
}

/// Starts the tracer of a variant that has one attached to the kernel (the floor, ours,
/// bpftrace); `None` for the others.
fn attach(kind: &Kind) -> Result<Option<Tracer>> {
    Ok(Some(match kind {
        Kind::Untraced | Kind::Strace => return Ok(None),
        Kind::Floor => start(
            "sendfile-trace-floor",
            &compile::host_bin("sendfile-trace-floor"),
            &[],
            Ready::Stdout("ready"),
        )?,
        Kind::Ours { hook, file, flows } => {
            let events = bench_dir().join("events.jsonl");
            let _ = std::fs::remove_file(&events);
            let output = events.to_string_lossy().into_owned();
            // To /dev/null: stdout, which start() points there (a file output refuses devices).
            let mut args = vec!["--hook", *hook];
            if *flows {
                args.extend(["--mode", "flows"]);
            }
            if *file {
                args.extend(["--output", &output]);
            }
            start(
                "sendfile-trace",
                &compile::host_bin("sendfile-trace"),
                &args,
                Ready::Stderr("tracing sendfile with hook", 1),
            )?
        }
        Kind::Bpftrace => {
            let script = bench_dir().join("sendfile.bt");
            std::fs::write(&script, BPFTRACE_SCRIPT)?;
            let script = script.to_string_lossy().into_owned();
            // -v names each probe on stderr as it attaches; -o keeps events off the pipe.
            start(
                "bpftrace",
                Path::new("bpftrace"),
                &["-v", "-o", "/dev/null", &script],
                Ready::Stderr("Attaching tracepoint:", 2),
            )?
        }
    }))
}

/// One timed run of a variant: ns per sendfile call, and ns per getpid call while attached.
fn measure(kind: &Kind, calls: u64, getpid_calls: u64) -> Result<(f64, f64)> {
    let mut getpid = f64::NAN;
    let mut both = |cmd: &mut Command| -> Result<Value> {
        let s = run_loop(cmd)?;
        getpid = getpid_ns(kind, getpid_calls)?;
        Ok(s)
    };
    let summary = match kind {
        Kind::Strace => both(&mut workload_with(
            &["--loop", &calls.to_string(), "--size", SIZE],
            true,
        ))?,
        _ => {
            let tracer = attach(kind)?;
            let s = both(&mut workload(calls));
            if let Some(t) = tracer {
                stop(t)?;
            }
            let _ = std::fs::remove_file(bench_dir().join("events.jsonl"));
            s?
        }
    };
    let ns = summary["nsPerCall"]
        .as_f64()
        .context("loop summary without nsPerCall")?;
    Ok((ns, getpid))
}

/// One BPF program a process holds open, from its fdinfo: tag, runs, run time, and the
/// instructions the verifier walked.
struct ProgStats {
    tag: String,
    runs: u64,
    run_time_ns: u64,
    verified_insns: Option<u64>,
}

/// The BPF programs a process holds open (deduplicated by tag and run count).
fn programs_of(pid: u32) -> Vec<ProgStats> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    let mut progs: Vec<ProgStats> = Vec::new();
    for info in dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok()) {
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
        };
        let (Some(tag), Some(id)) = (field("prog_tag:"), field("prog_id:")) else {
            continue;
        };
        let num = |name: &str| field(name).and_then(|v| v.parse::<u64>().ok());
        if progs.iter().any(|p| p.tag == format!("{tag}#{id}")) {
            continue;
        }
        progs.push(ProgStats {
            tag: format!("{tag}#{id}"),
            runs: num("run_cnt:").unwrap_or(0),
            run_time_ns: num("run_time_ns:").unwrap_or(0),
            verified_insns: num("verified_insns:"),
        });
    }
    progs
}

/// A program's name from its tag, through the JIT's kallsyms entry `bpf_prog_<tag>_<name>`.
fn program_name(kallsyms: &str, tag: &str) -> String {
    let tag = tag.split('#').next().unwrap_or(tag);
    let prefix = format!("bpf_prog_{tag}_");
    // Identical programs (the floor's empty ones) share a tag: list every name it has.
    let names: Vec<&str> = kallsyms
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .nth(2)
                .and_then(|sym| sym.strip_prefix(&prefix))
        })
        .collect();
    if names.is_empty() {
        "?".to_owned()
    } else {
        names.join("|")
    }
}

/// Turns the kernel's BPF run-time statistics on for as long as it lives, then restores them.
struct BpfStats(Option<String>);

impl BpfStats {
    const KNOB: &str = "/proc/sys/kernel/bpf_stats_enabled";

    fn on() -> Result<BpfStats> {
        let before = std::fs::read_to_string(Self::KNOB).ok();
        std::fs::write(Self::KNOB, "1").with_context(|| format!("cannot write {}", Self::KNOB))?;
        Ok(BpfStats(before))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(
            Self::KNOB,
            self.0.as_deref().map_or("0", |v| v.trim()).as_bytes(),
        );
    }
}

/// Where a variant's time goes: each of its BPF programs' runs and average ns per run, from the
/// kernel's own BPF run-time statistics (on only for this run), plus the instructions the
/// verifier walked to accept it. The statistics add their own clock reads to every run: the
/// floor's empty programs show how much.
fn profile(name: &str, kind: &Kind, calls: u64) -> Result<Vec<Value>> {
    let _stats = BpfStats::on()?;
    let Some(tracer) = attach(kind)? else {
        return Ok(Vec::new());
    };
    let run = run_loop(&mut workload(calls));
    let progs = programs_of(tracer.child.id());
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
    let rows = progs
        .iter()
        .filter(|p| p.runs > 0)
        .map(|p| {
            json!({
                "variant": name,
                "program": program_name(&kallsyms, &p.tag),
                "runs": p.runs,
                "nsPerRun": p.run_time_ns as f64 / p.runs as f64,
                "verifiedInsns": p.verified_insns,
            })
        })
        .collect();
    stop(tracer)?;
    let _ = std::fs::remove_file(bench_dir().join("events.jsonl"));
    run?;
    Ok(rows)
}

/// Runs the `pipeline` example of sendfile-trace pinned to the tracer's CPU: one JSON line per
/// format with events per second.
fn userspace_throughput() -> Result<Vec<Value>> {
    tools::run(
        tools::cargo(tools::HOST_TOOLCHAIN)
            .current_dir(workspace_root())
            .args([
                "build",
                "--release",
                "-p",
                "sendfile-trace",
                "--example",
                "pipeline",
            ])
            .env("SENDFILE_TRACE_BPF_OBJECT", compile::bpf_object()),
    )?;
    let out = Command::new("taskset")
        .args(["-c", TRACER_CPU])
        .arg(workspace_root().join("target/release/examples/pipeline"))
        .output()
        .context("cannot run the pipeline example")?;
    if !out.status.success() {
        bail!("the pipeline example failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// `ours ÷ reference` for added costs, null when not ours or the reference is not positive.
fn ratio_json(is_ours: bool, added: f64, reference: f64) -> Value {
    if is_ours && reference > 0.0 {
        json!(added / reference)
    } else {
        Value::Null
    }
}

/// Peak resident set (VmHWM) of a process, in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// User plus system CPU seconds a process has used (from /proc, in USER_HZ = 100 ticks).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks = |i: usize| fields.get(i - 3)?.parse::<f64>().ok();
    Some((ticks(14)? + ticks(15)?) / 100.0)
}

/// A burst of [`BURST_THREADS`] × [`BURST_CALLS`] calls under our tracer; loss accounting.
fn burst(ring_buffer_size: Option<&str>, flows: bool) -> Result<Value> {
    let out = bench_dir().join("burst.jsonl");
    let _ = std::fs::remove_file(&out);
    let mut args = vec!["--hook", HOOKS[0], "--output"];
    if flows {
        args.splice(0..0, ["--mode", "flows"]);
    }
    let out_s = out.to_string_lossy().into_owned();
    args.push(&out_s);
    if let Some(size) = ring_buffer_size {
        args.extend(["--ring-buffer-size", size]);
    }
    let spawned_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let t = start(
        "sendfile-trace",
        &compile::host_bin("sendfile-trace"),
        &args,
        Ready::File(out.clone(), "\"tracer_start\""),
    )?;
    let pid = t.child.id();
    let cpu_before = cpu_seconds(pid);
    let wall = Instant::now();
    // The workload is left free on both CPUs so that its threads really overlap.
    let mut child = Command::new(compile::host_bin("sendfile-workload"))
        .args(["--loop", &BURST_CALLS.to_string(), "--size", SIZE])
        .args(["--threads", &BURST_THREADS.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run sendfile-workload")?;
    let workload_pid = child.id();
    let mut text = String::new();
    child
        .stdout
        .take()
        .context("workload stdout")?
        .read_to_string(&mut text)?;
    let status = child.wait()?;
    if !status.success() {
        bail!("the burst workload failed ({status})");
    }
    let summary: Value = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|v: &Value| v["case"] == "loop")
        .context("no loop summary from the burst workload")?;
    // Past the 250 ms loss poll, so that events_lost records are in before the stop.
    std::thread::sleep(Duration::from_millis(600));
    let hwm = vm_hwm_kib(pid);
    let cpu = cpu_seconds(pid)
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let wall = wall.elapsed().as_secs_f64();
    stop(t)?;

    let mut delivered = 0u64;
    let mut all_sendfile = 0u64;
    let mut start_ts = None;
    let mut stop_rec = Value::Null;
    let mut lost_records = 0u64;
    let mut flow_records = 0u64;
    // Of `delivered`, those delivered as `sendfile` events (the rest in flow records).
    let mut delivered_events = 0u64;
    for line in std::fs::read_to_string(&out)?.lines() {
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("not JSON in the tracer's output: {line}"))?;
        match v["eventName"].as_str() {
            Some("sendfile") => {
                all_sendfile += 1;
                // hostProcessId: present even when an entry record was lost (processId is then null).
                if v["hostProcessId"].as_u64() == Some(u64::from(workload_pid)) {
                    delivered += 1;
                    delivered_events += 1;
                }
            }
            // In flows mode a call is delivered as part of its flow's record.
            Some("sendfile_flow")
                if v["hostProcessId"].as_u64() == Some(u64::from(workload_pid)) =>
            {
                delivered += v["calls"].as_u64().unwrap_or(0);
                flow_records += 1;
            }
            Some("tracer_start") => start_ts = v["timestamp"].as_u64(),
            Some("events_lost") => lost_records += v["lost"].as_u64().unwrap_or(0),
            Some("tracer_stop") => stop_rec = v,
            _ => {}
        }
    }
    let _ = std::fs::remove_file(&out);
    if stop_rec.is_null() {
        bail!("no tracer_stop record after the burst");
    }
    let made = summary["calls"].as_u64().unwrap_or(0);
    let lost = stop_rec["lost"].as_u64().unwrap_or(0);
    Ok(json!({
        "mode": if flows { "flows" } else { "calls" },
        "flowRecords": flow_records,
        "ringBufferSize": ring_buffer_size.unwrap_or("default (4M)"),
        "made": made,
        "delivered": delivered,
        "lost": lost,
        "exact": delivered + lost == made,
        "otherSendfileEvents": all_sendfile - delivered_events,
        "tracerStopEvents": stop_rec["events"],
        "tracerStopMatchesLines": stop_rec["events"].as_u64() == Some(all_sendfile),
        "lostInEventsLostRecords": lost_records,
        "lostByReason": stop_rec["lostByReason"],
        "incomplete": stop_rec["incomplete"],
        "workloadNsPerCall": summary["nsPerCall"],
        "callsPerSecond": summary["elapsedNs"]
            .as_f64()
            .filter(|&ns| ns > 0.0)
            .map(|ns| made as f64 * 1e9 / ns),
        // The tracer's CPU time from just before the burst to just before its stop (which
        // includes 600 ms of idle), as a share of one CPU over that time.
        "tracerCpuSeconds": cpu,
        "tracerCpuPercentOfOneCpu": cpu.map(|c| 100.0 * c / wall),
        "vmHwmKiB": hwm,
        "spawnToTracerStartMs": start_ts.map(|t| t.saturating_sub(spawned_ns) as f64 / 1e6),
    }))
}

/// A bar chart of ns per call, one bar per variant.
fn svg(rows: &[(String, f64)]) -> String {
    let max = rows.iter().map(|r| r.1).fold(1.0, f64::max);
    let (left, width, bar, gap) = (190.0, 460.0, 22.0, 10.0);
    let height = 50.0 + rows.len() as f64 * (bar + gap);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"760\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"13\">\n\
         <text x=\"10\" y=\"22\" font-size=\"15\">sendfile 64 B page cache → /dev/null: \
         ns per call (median)</text>\n"
    );
    for (i, (name, ns)) in rows.iter().enumerate() {
        let y = 36.0 + i as f64 * (bar + gap);
        let w = if ns.is_finite() {
            ns / max * width
        } else {
            0.0
        };
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{left}\" y=\"{y}\" width=\"{w:.1}\" height=\"{bar}\" fill=\"#4a7ab5\"/>\
             <text x=\"{:.1}\" y=\"{}\">{ns:.0}</text>",
            left - 8.0,
            y + 16.0,
            name.replace('&', "&amp;").replace('<', "&lt;"),
            left + w + 6.0,
            y + 16.0,
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Installs what is missing, builds, runs every variant, writes the table, JSON and SVG.
pub fn bench(args: BenchArgs) -> Result<i32> {
    tools::ensure_all()?;
    tools::apt_install(&["bpftrace", "strace"])?;
    // Builds the daemon, the workload and sendfile-trace-floor (a bin of the same package).
    compile::build_host()?;
    std::fs::create_dir_all(bench_dir())?;
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        bail!("the bench pins the workload to CPU 0 and the tracer to CPU 1: it needs 2 CPUs");
    }

    let mut variants = vec![
        Variant::new("untraced", Kind::Untraced, args.calls),
        Variant::new("floor (empty tp progs)", Kind::Floor, args.calls),
    ];
    for hook in HOOKS {
        variants.push(Variant::new(
            &format!("ours {hook} → /dev/null"),
            Kind::Ours {
                hook,
                file: false,
                flows: false,
            },
            args.calls,
        ));
        variants.push(Variant::new(
            &format!("ours {hook} → file"),
            Kind::Ours {
                hook,
                file: true,
                flows: false,
            },
            args.calls,
        ));
        variants.push(Variant::new(
            &format!("ours {hook} flows → null"),
            Kind::Ours {
                hook,
                file: false,
                flows: true,
            },
            args.calls,
        ));
    }
    variants.push(Variant::new("bpftrace", Kind::Bpftrace, args.calls));
    variants.push(Variant::new("strace", Kind::Strace, args.strace_calls));

    for round in 1..=args.rounds {
        for v in &mut variants {
            // getpid is ~10× cheaper than sendfile: 5× the calls for a comparable run time.
            let getpid_calls = v.calls * 5;
            let (ns, getpid) = measure(&v.kind, v.calls, getpid_calls)
                .with_context(|| format!("variant {} in round {round}", v.name))?;
            eprintln!(
                "xtask: bench round {round}: {:<28} {ns:>9.1} ns/sendfile {getpid:>8.1} ns/getpid",
                v.name
            );
            v.ns_per_call.push(ns);
            v.getpid_ns.push(getpid);
        }
    }

    let base = median(&variants[0].ns_per_call);
    let added = |name_start: &str| {
        variants
            .iter()
            .find(|v| v.name.starts_with(name_start))
            .map(|v| median(&v.ns_per_call) - base)
    };
    let floor_added = added("floor").unwrap_or(f64::NAN);
    let bpftrace_added = added("bpftrace").unwrap_or(f64::NAN);

    let getpid_base = median(&variants[0].getpid_ns);
    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:<28} {:>8} {:>10} {:>10} {:>10} {:>12} {:>10} {:>10}",
        "variant", "calls", "ns/call", "added ns", "÷floor", "÷bpftrace", "getpid ns", "added ns"
    );
    let mut rows = Vec::new();
    let mut json_variants = Vec::new();
    for v in &variants {
        let med = median(&v.ns_per_call);
        let add = med - base;
        let is_ours = matches!(v.kind, Kind::Ours { .. });
        // A ratio to an added cost that noise made zero or negative means nothing.
        let ratio = |d: f64| match (is_ours, d > 0.0) {
            (true, true) => format!("{:.2}", add / d),
            (true, false) => "n/a".into(),
            (false, _) => String::new(),
        };
        let getpid = median(&v.getpid_ns);
        let _ = writeln!(
            table,
            "{:<28} {:>8} {:>10.1} {:>10.1} {:>10} {:>12} {:>10.1} {:>10.1}",
            v.name,
            v.calls,
            med,
            add,
            ratio(floor_added),
            ratio(bpftrace_added),
            getpid,
            getpid - getpid_base
        );
        rows.push((v.name.clone(), med));
        json_variants.push(json!({
            "name": v.name,
            "calls": v.calls,
            "nsPerCallRounds": v.ns_per_call,
            "nsPerCallMedian": med,
            "addedNs": add,
            "addedOverFloor": ratio_json(is_ours, add, floor_added),
            "addedOverBpftrace": ratio_json(is_ours, add, bpftrace_added),
            "getpidNsRounds": v.getpid_ns,
            "getpidNsMedian": getpid,
            "getpidAddedNs": getpid - getpid_base,
        }));
    }

    eprintln!("xtask: bench per-program profile (BPF run-time statistics)");
    let mut programs = Vec::new();
    for v in variants.iter().filter(|v| {
        matches!(
            v.kind,
            Kind::Floor | Kind::Bpftrace | Kind::Ours { file: false, .. }
        )
    }) {
        programs.extend(profile(&v.name, &v.kind, v.calls)?);
    }
    let _ = writeln!(
        table,
        "\nper BPF program during {} calls (kernel BPF stats; each run includes the stats' own cost):",
        args.calls
    );
    let _ = writeln!(
        table,
        "{:<28} {:<18} {:>10} {:>10} {:>14}",
        "variant", "program", "runs", "ns/run", "verified insns"
    );
    for p in &programs {
        let _ = writeln!(
            table,
            "{:<28} {:<18} {:>10} {:>10.1} {:>14}",
            p["variant"].as_str().unwrap_or(""),
            p["program"].as_str().unwrap_or(""),
            p["runs"].to_string(),
            p["nsPerRun"].as_f64().unwrap_or(f64::NAN),
            p["verifiedInsns"].to_string(),
        );
    }

    eprintln!("xtask: bench userspace throughput (decode + enrich + encode, one core)");
    let pipeline = userspace_throughput()?;
    let _ = writeln!(
        table,
        "\nuserspace, one core (decode + join + enrich + encode of recorded nginx-like records):"
    );
    let _ = writeln!(
        table,
        "{:<10} {:>14} {:>12} {:>14}",
        "format", "events/s", "ns/event", "bytes/event"
    );
    for p in &pipeline {
        let _ = writeln!(
            table,
            "{:<10} {:>14} {:>12} {:>14}",
            p["format"].as_str().unwrap_or(""),
            p["eventsPerSecond"].to_string(),
            p["nsPerEvent"].to_string(),
            p["bytesPerEvent"].to_string()
        );
    }

    eprintln!("xtask: bench burst ({BURST_THREADS} threads × {BURST_CALLS} calls)");
    let bursts = [
        burst(None, false)?,
        burst(Some("4096"), false)?,
        burst(None, true)?,
        burst(Some("4096"), true)?,
    ];
    let _ = writeln!(
        table,
        "\nburst {BURST_THREADS}×{BURST_CALLS} under ours ({}):",
        HOOKS[0]
    );
    let _ = writeln!(
        table,
        "{:<6} {:<16} {:>8} {:>10} {:>8} {:>7} {:>10} {:>10} {:>10} {:>14}",
        "mode",
        "ring buffer",
        "made",
        "calls/s",
        "delivered",
        "lost",
        "exact",
        "VmHWM KiB",
        "tracer CPU",
        "spawn→start ms"
    );
    // "incomplete": delivered without descriptors and process context (the ring was full at
    // syscall entry but not at exit); they are in "delivered".
    for b in &bursts {
        let _ = writeln!(
            table,
            "{:<6} {:<16} {:>8} {:>10} {:>10} {:>8} {:>7} {:>10} {:>10} {:>14}",
            b["mode"].as_str().unwrap_or(""),
            b["ringBufferSize"].as_str().unwrap_or(""),
            b["made"].to_string(),
            b["callsPerSecond"]
                .as_f64()
                .map_or("?".into(), |r| format!("{r:.0}")),
            b["delivered"].to_string(),
            b["lost"].to_string(),
            b["exact"].to_string(),
            b["vmHwmKiB"].to_string(),
            b["tracerCpuPercentOfOneCpu"]
                .as_f64()
                .map_or("?".into(), |c| format!("{c:.0}%")),
            b["spawnToTracerStartMs"]
                .as_f64()
                .map_or("?".into(), |m| format!("{m:.1}")),
        );
    }
    if floor_added.is_nan() || floor_added <= 0.0 {
        let _ = writeln!(
            table,
            "\nnote: the floor's added cost is {floor_added:.1} ns, within noise: ratios to it are n/a"
        );
    }
    for v in variants
        .iter()
        .filter(|v| matches!(v.kind, Kind::Ours { .. }))
    {
        let add = median(&v.ns_per_call) - base;
        if floor_added > 0.0 && add > 1.5 * floor_added {
            let _ = writeln!(
                table,
                "note: {} adds {add:.0} ns, {:.1}× the floor's {floor_added:.0} ns (above 1.5×)",
                v.name,
                add / floor_added
            );
        }
    }
    print!("{table}");

    let results = json!({
        "workload": {"size": 64, "workloadCpu": 0, "tracerCpu": 1, "rounds": args.rounds},
        "variants": json_variants,
        "bursts": bursts,
        "userspace": pipeline,
        "programs": programs,
    });
    let json_path = bench_dir().join("results.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&results)? + "\n")?;
    let svg_path = bench_dir().join("cost.svg");
    std::fs::write(&svg_path, svg(&rows))?;
    let _ = std::fs::remove_file(bench_dir().join("sendfile.bt"));
    eprintln!(
        "xtask: bench results in {} and {}",
        json_path.display(),
        svg_path.display()
    );
    Ok(0)
}

impl Variant {
    fn new(name: &str, kind: Kind, calls: u64) -> Variant {
        Variant {
            name: name.to_owned(),
            kind,
            calls,
            ns_per_call: Vec::new(),
            getpid_ns: Vec::new(),
        }
    }
}
