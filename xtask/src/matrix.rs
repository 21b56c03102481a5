//! The kernel × hook matrix: the integration suite under each hook, on Debian 6.1 and 6.12 in
//! QEMU and natively on the host kernel.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    compile,
    tools::{self, HOST_TOOLCHAIN, cargo},
    vm::{self, workspace_root},
};

/// Kernels of the matrix; "host" runs natively.
pub const KERNELS: [&str; 3] = ["6.1", "6.12", "host"];
/// Hooks of the matrix.
pub const HOOKS: [&str; 4] = ["kprobe", "fentry", "tracepoint", "auto"];
/// Exit status the cell script uses for "unsupported, with the expected reason".
const UNSUPPORTED: i32 = 42;
/// Marker the suite prints when a hook is refused with the reason it expects.
const UNSUPPORTED_MARKER: &str = "unsupported here, as expected";

/// Static binaries that run in the guests.
pub struct GuestBins {
    /// The tracer (x86_64 musl).
    pub tracer: PathBuf,
    /// The workload (x86_64 musl).
    pub workload: PathBuf,
    /// The workload (i686 musl), named sendfile-workload32.
    pub workload32: PathBuf,
    /// The integration test binary (x86_64 musl), named trace_workload.
    pub suite: PathBuf,
}

/// Builds the static guest binaries.
pub fn build_guest_bins() -> Result<GuestBins> {
    let root = workspace_root();
    let target = "x86_64-unknown-linux-musl";
    let build = |args: &[&str]| {
        let mut c = cargo(HOST_TOOLCHAIN);
        c.current_dir(&root)
            .args(args)
            .args(["--release", "--target", target])
            .env("SENDFILE_TRACE_BPF_OBJECT", compile::bpf_object());
        c
    };
    tools::run(&mut build(&[
        "build",
        "-p",
        "sendfile-trace",
        "-p",
        "sendfile-workload",
    ]))?;
    let out = build(&[
        "test",
        "-p",
        "sendfile-trace",
        "--test",
        "trace_workload",
        "--no-run",
    ])
    .arg("--message-format=json")
    .stderr(std::process::Stdio::inherit())
    .output()
    .context("building the test suite for musl")?;
    if !out.status.success() {
        bail!("building the musl test suite failed");
    }
    let suite_src = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "trace_workload")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .context("no trace_workload test executable in cargo's output")?;
    // Guest files keep their basename: give each a distinct, stable one.
    let stage = root.join("target/vm-stage");
    std::fs::create_dir_all(&stage)?;
    let copy = |from: &Path, name: &str| -> Result<PathBuf> {
        let to = stage.join(name);
        std::fs::copy(from, &to).with_context(|| format!("copying {}", from.display()))?;
        Ok(to)
    };
    let musl = root.join("target").join(target).join("release");
    Ok(GuestBins {
        tracer: copy(&musl.join("sendfile-trace"), "sendfile-trace")?,
        workload: copy(&musl.join("sendfile-workload"), "sendfile-workload")?,
        workload32: copy(&compile::build_workload32()?, "sendfile-workload32")?,
        suite: copy(&suite_src, "trace_workload")?,
    })
}

/// One cell's outcome.
#[derive(Debug)]
pub struct Cell {
    /// Kernel.
    pub kernel: &'static str,
    /// Hook.
    pub hook: &'static str,
    /// "passed", "failed" or "unsupported".
    pub status: &'static str,
    /// For unsupported cells: the reason the suite asserted; for failures: what failed.
    pub detail: String,
    /// Seconds the cell took (boot included).
    pub seconds: f64,
}

/// The tests a cell runs: every call under one hook, or (for auto) the fallback and the
/// hostile-name and loss-accounting checks.
fn cell_tests(hook: &str) -> &'static str {
    if hook == "auto" {
        "auto_picks hostile full_ring"
    } else {
        "every_hook"
    }
}

fn cell_env(bins_dir: &str, hook: &str) -> Vec<(String, String)> {
    let test_hook = if hook == "auto" { "" } else { hook };
    vec![
        (
            "SENDFILE_TRACE_BIN".into(),
            format!("{bins_dir}sendfile-trace"),
        ),
        (
            "SENDFILE_WORKLOAD_BIN".into(),
            format!("{bins_dir}sendfile-workload"),
        ),
        (
            "SENDFILE_WORKLOAD32_BIN".into(),
            format!("{bins_dir}sendfile-workload32"),
        ),
        ("SENDFILE_TRACE_TEST_HOOKS".into(), test_hook.into()),
    ]
}

fn run_cell(kernel: &'static str, hook: &'static str, bins: &GuestBins) -> Result<Cell> {
    let started = Instant::now();
    let filter = cell_tests(hook);
    let (status, detail) = if kernel == "host" {
        let dir = format!("{}/", bins.suite.parent().unwrap().display());
        let out = Command::new(&bins.suite)
            .args(filter.split(' '))
            .args(["--test-threads", "1", "--nocapture"])
            .envs(cell_env(&dir, hook))
            .output()
            .context("running the suite on the host")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        print!("{text}");
        match (
            out.status.success(),
            text.lines().find(|l| l.contains(UNSUPPORTED_MARKER)),
        ) {
            (true, Some(line)) => ("unsupported", line.trim().to_owned()),
            (true, None) => ("passed", String::new()),
            (false, _) => ("failed", format!("suite exit {}", out.status)),
        }
    } else {
        let script = format!(
            "/trace_workload {filter} --test-threads 1 --nocapture > /tmp/out 2>&1; rc=$?; \
             cat /tmp/out; if [ $rc -eq 0 ] && grep -q '{UNSUPPORTED_MARKER}' /tmp/out; then \
             exit {UNSUPPORTED}; fi; exit $rc"
        );
        let includes =
            [&bins.tracer, &bins.workload, &bins.workload32, &bins.suite].map(|p| p.to_path_buf());
        match vm::run_in_vm(
            kernel,
            &includes,
            &cell_env("/", hook),
            &[script],
            Duration::from_secs(900),
        ) {
            Ok(0) => ("passed", String::new()),
            Ok(UNSUPPORTED) => ("unsupported", "see the log above".to_owned()),
            Ok(code) => ("failed", format!("suite exit {code}")),
            Err(e) => (
                "failed",
                format!("{e:#}").lines().next().unwrap_or("").to_owned(),
            ),
        }
    };
    Ok(Cell {
        kernel,
        hook,
        status,
        detail,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Runs every cell, prints the matrix, writes target/test-matrix.json; fails if a cell failed.
pub fn run(kernels: &[&'static str]) -> Result<()> {
    let bins = build_guest_bins()?;
    for k in kernels.iter().filter(|k| **k != "host") {
        vm::ensure_kernel(k)?;
    }
    let mut cells = Vec::new();
    for &kernel in kernels {
        for hook in HOOKS {
            eprintln!("xtask: matrix cell {kernel} × {hook}");
            cells.push(run_cell(kernel, hook, &bins)?);
        }
    }
    println!("\nkernel × hook matrix (integration suite, every call matched field by field)");
    print!("{:<8}", "kernel");
    for hook in HOOKS {
        print!("{hook:<14}");
    }
    println!();
    for &kernel in kernels {
        print!("{kernel:<8}");
        for c in cells.iter().filter(|c| c.kernel == kernel) {
            print!("{:<14}", c.status);
        }
        println!();
    }
    for c in cells.iter().filter(|c| !c.detail.is_empty()) {
        println!("  {} × {}: {} — {}", c.kernel, c.hook, c.status, c.detail);
    }
    let json: Vec<serde_json::Value> = cells
        .iter()
        .map(|c| {
            serde_json::json!({
                "kernel": c.kernel, "hook": c.hook, "status": c.status,
                "detail": c.detail, "seconds": (c.seconds * 10.0).round() / 10.0,
            })
        })
        .collect();
    let path = workspace_root().join("target/test-matrix.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    println!("matrix written to {}", path.display());
    let failed: Vec<String> = cells
        .iter()
        .filter(|c| c.status == "failed")
        .map(|c| format!("{} × {}", c.kernel, c.hook))
        .collect();
    if !failed.is_empty() {
        bail!("matrix cells failed: {}", failed.join(", "));
    }
    // The hook the design calls for must pass on every VM kernel.
    for c in cells
        .iter()
        .filter(|c| c.kernel != "host" && c.hook == "kprobe")
    {
        if c.status != "passed" {
            bail!("kprobe must pass on {}, got {}", c.kernel, c.status);
        }
    }
    Ok(())
}
