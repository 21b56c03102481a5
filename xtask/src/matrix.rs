//! The kernel × hook matrix: the integration suite under each hook, on Debian 6.1 and 6.12 in
//! QEMU (x86_64, and arm64 under `qemu-system-aarch64`) and natively on the host kernel.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    compile,
    vm::{self, workspace_root},
};

/// Kernels of the matrix, the ones `cargo xtask vm` boots; "host" runs natively.
pub use crate::vm::KERNELS;
/// Architectures of the matrix (the host row exists only for the host's own).
pub const ARCHES: [&str; 2] = ["x86_64", "aarch64"];
/// Hooks of the matrix.
pub const HOOKS: [&str; 4] = ["kprobe", "fentry", "tracepoint", "auto"];
/// Exit status the cell script uses for "unsupported, with the expected reason".
const UNSUPPORTED: i32 = 42;
/// Marker the suite prints when a hook is refused with the reason it expects.
const UNSUPPORTED_MARKER: &str = "unsupported here, as expected";

/// Static binaries that run in the guests.
pub struct GuestBins {
    /// The tracer (static musl, of the guest's architecture).
    pub tracer: PathBuf,
    /// The workload (static musl).
    pub workload: PathBuf,
    /// The 32-bit workload (i686 musl on x86_64, static AArch32 on arm64), named
    /// sendfile-workload32.
    pub workload32: PathBuf,
    /// The integration test binary (static musl), named trace_workload.
    pub suite: PathBuf,
    /// The other integration test binaries (static musl): test-nginx, test-filters, test-flows.
    pub suites: Vec<PathBuf>,
    /// Dynamically linked Debian programs the tests run (nginx, strace), copied into the guests
    /// with their libraries (the guest architecture's packages for a foreign one).
    pub host_binaries: Vec<PathBuf>,
}

/// Integration test targets built for the guests, and the name each gets there.
const SUITES: [(&str, &str); 4] = [
    ("trace_workload", "trace_workload"),
    ("nginx", "test-nginx"),
    ("filters", "test-filters"),
    ("flows", "test-flows"),
];

/// Debian programs the suites run, by the path the package installs them at.
const HOST_PROGRAMS: [&str; 2] = ["/usr/sbin/nginx", "/usr/bin/strace"];

/// Builds the static guest binaries for `arch` (x86_64 or aarch64).
pub fn build_guest_bins(arch: &str) -> Result<GuestBins> {
    let root = workspace_root();
    let triple = format!("{arch}-unknown-linux-musl");
    let target = triple.as_str();
    let build = |args: &[&str]| {
        let mut c = compile::static_cargo(target);
        c.args(args).args(["--release", "--target", target]);
        c
    };
    let musl = compile::build_static(target)?;
    let mut args = vec!["test", "-p", "sendfile-trace", "--no-run"];
    for (target, _) in SUITES {
        args.extend(["--test", target]);
    }
    let out = build(&args)
        .arg("--message-format=json")
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("building the test suites for musl")?;
    if !out.status.success() {
        bail!("building the musl test suites failed");
    }
    let messages: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let executable = |target: &str| {
        messages
            .iter()
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == target)
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .with_context(|| format!("no {target} test executable in cargo's output"))
    };
    // Guest files keep their basename: give each a distinct, stable one.
    let stage = if arch == "x86_64" {
        root.join("target/vm-stage")
    } else {
        root.join(format!("target/vm-stage-{arch}"))
    };
    std::fs::create_dir_all(&stage)?;
    let copy = |from: &Path, name: &str| -> Result<PathBuf> {
        let to = stage.join(name);
        std::fs::copy(from, &to).with_context(|| format!("copying {}", from.display()))?;
        Ok(to)
    };
    let mut suites = Vec::new();
    for (target, name) in SUITES {
        suites.push(copy(&executable(target)?, name)?);
    }
    let host_binaries = HOST_PROGRAMS.map(PathBuf::from).to_vec();
    for p in &host_binaries {
        if !p.is_file() {
            bail!("{} is missing (cargo xtask test installs it)", p.display());
        }
    }
    Ok(GuestBins {
        tracer: copy(&musl.join("sendfile-trace"), "sendfile-trace")?,
        workload: copy(&musl.join("sendfile-workload"), "sendfile-workload")?,
        workload32: copy(
            &if arch == "x86_64" {
                compile::build_workload32()?
            } else {
                compile::build_workload_arm32()?
            },
            "sendfile-workload32",
        )?,
        suite: suites.remove(0),
        suites,
        host_binaries,
    })
}

/// One cell's outcome.
#[derive(Debug)]
pub struct Cell {
    /// Architecture.
    pub arch: &'static str,
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

/// The test runs of a cell, as (guest binary name, test name filters): every call under one
/// hook; for auto, the fallback, hostile names, loss accounting and the strace oracle, then the
/// nginx test and the filter tests.
fn cell_tests(hook: &str) -> Vec<(&'static str, &'static str)> {
    if hook == "auto" {
        vec![
            ("trace_workload", "auto_picks hostile full_ring strace_"),
            ("test-nginx", "nginx_"),
            ("test-filters", "admits and_together invalid_filter"),
            ("test-flows", "flow_sums the_rate_limit errors_only"),
        ]
    } else {
        vec![
            ("trace_workload", "every_hook"),
            ("test-flows", "every_hook_counts_flows"),
        ]
    }
}

fn cell_env(arch: &str, bins_dir: &str, hook: &str) -> Vec<(String, String)> {
    let test_hook = if hook == "auto" { "" } else { hook };
    // Every guest's CPU is emulated (TCG: this machine's KVM cannot boot a stock kernel), and
    // loading runs the kernel's verifier over every entry program: fentry's four take minutes
    // on 6.1 under TCG when the host is busy. An arm64 guest is emulated instruction by
    // instruction on an x86 host, several times slower still.
    let start_secs = if arch == std::env::consts::ARCH {
        "180"
    } else {
        "300"
    };
    vec![
        ("SENDFILE_TRACE_TEST_START_SECS".into(), start_secs.into()),
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

fn run_cell(
    arch: &'static str,
    kernel: &'static str,
    hook: &'static str,
    bins: &GuestBins,
) -> Result<Cell> {
    let started = Instant::now();
    let runs = cell_tests(hook);
    let (status, detail) = if kernel == "host" {
        let dir = bins.suite.parent().unwrap();
        let mut text = String::new();
        let mut failed = None;
        for (suite, filter) in &runs {
            let out = Command::new(dir.join(suite))
                .args(filter.split(' '))
                .args(["--test-threads", "1", "--nocapture"])
                .envs(cell_env(arch, &format!("{}/", dir.display()), hook))
                .output()
                .with_context(|| format!("running {suite} on the host"))?;
            let t = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            print!("{t}");
            text.push_str(&t);
            if !out.status.success() && failed.is_none() {
                failed = Some(format!("{suite} exit {}", out.status));
            }
        }
        match (
            failed,
            text.lines().find(|l| l.contains(UNSUPPORTED_MARKER)),
        ) {
            (None, Some(line)) => ("unsupported", line.trim().to_owned()),
            (None, None) => ("passed", String::new()),
            (Some(f), _) => ("failed", f),
        }
    } else {
        let mut script = String::from("rc=0; : >/tmp/out; ");
        for (suite, filter) in &runs {
            script.push_str(&format!(
                "/{suite} {filter} --test-threads 1 --nocapture >>/tmp/out 2>&1 || rc=$?; "
            ));
        }
        script.push_str(&format!(
            "cat /tmp/out; if [ $rc -eq 0 ] && grep -q '{UNSUPPORTED_MARKER}' /tmp/out; then \
             exit {UNSUPPORTED}; fi; exit $rc"
        ));
        let mut includes: Vec<PathBuf> =
            [&bins.tracer, &bins.workload, &bins.workload32, &bins.suite]
                .map(|p| p.to_path_buf())
                .to_vec();
        includes.extend(bins.suites.iter().cloned());
        // The auto cell runs nginx and the filters too: allow for them under emulation.
        let timeout = if hook == "auto" { 2400 } else { 900 };
        match vm::run_in_vm(
            arch,
            kernel,
            &includes,
            &bins.host_binaries,
            &cell_env(arch, "/", hook),
            &[script],
            Duration::from_secs(timeout),
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
        arch,
        kernel,
        hook,
        status,
        detail,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The label of a row: the kernel for x86_64 (as before arm64 rows existed), `arm64 <kernel>`.
fn row_label(arch: &str, kernel: &str) -> String {
    match arch {
        "x86_64" => kernel.to_owned(),
        "aarch64" => format!("arm64 {kernel}"),
        other => format!("{other} {kernel}"),
    }
}

/// Runs every cell of `arches` × `kernels` (no host row for an architecture other than the
/// host's), prints the matrix, writes target/test-matrix.json; fails if a cell failed.
pub fn run(arches: &[&'static str], kernels: &[&'static str]) -> Result<()> {
    let mut rows: Vec<(&'static str, &'static str)> = Vec::new();
    for &arch in arches {
        for &kernel in kernels {
            if kernel == "host" && arch != std::env::consts::ARCH {
                continue;
            }
            rows.push((arch, kernel));
        }
    }
    let mut cells = Vec::new();
    for &arch in arches {
        let arch_rows: Vec<_> = rows.iter().filter(|(a, _)| *a == arch).collect();
        if arch_rows.is_empty() {
            continue;
        }
        let started = Instant::now();
        let bins = build_guest_bins(arch)?;
        for (_, k) in arch_rows.iter().filter(|(_, k)| *k != "host") {
            vm::ensure_kernel(arch, k)?;
        }
        eprintln!(
            "xtask: {arch} guest binaries and kernels ready in {:.0} s",
            started.elapsed().as_secs_f64()
        );
        for &&(arch, kernel) in &arch_rows {
            for hook in HOOKS {
                eprintln!("xtask: matrix cell {} × {hook}", row_label(arch, kernel));
                cells.push(run_cell(arch, kernel, hook, &bins)?);
            }
        }
    }
    println!("\nkernel × hook matrix (integration suite, every call matched field by field)");
    print!("{:<12}", "kernel");
    for hook in HOOKS {
        print!("{hook:<14}");
    }
    println!();
    for &(arch, kernel) in &rows {
        print!("{:<12}", row_label(arch, kernel));
        for c in cells
            .iter()
            .filter(|c| c.kernel == kernel && c.arch == arch)
        {
            print!("{:<14}", c.status);
        }
        println!();
    }
    for c in cells.iter().filter(|c| !c.detail.is_empty()) {
        println!(
            "  {} × {}: {} — {}",
            row_label(c.arch, c.kernel),
            c.hook,
            c.status,
            c.detail
        );
    }
    let json: Vec<serde_json::Value> = cells
        .iter()
        .map(|c| {
            serde_json::json!({
                "arch": c.arch, "kernel": c.kernel, "hook": c.hook, "status": c.status,
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
        .map(|c| format!("{} × {}", row_label(c.arch, c.kernel), c.hook))
        .collect();
    if !failed.is_empty() {
        bail!("matrix cells failed: {}", failed.join(", "));
    }
    // kprobe, the hook `auto` tries first, must pass on every VM kernel.
    for c in cells
        .iter()
        .filter(|c| c.kernel != "host" && c.hook == "kprobe")
    {
        if c.status != "passed" {
            bail!(
                "kprobe must pass on {}, got {}",
                row_label(c.arch, c.kernel),
                c.status
            );
        }
    }
    Ok(())
}
