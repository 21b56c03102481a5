//! `cargo xtask test`: lints, unit tests, and the real integration suite (tracer + workload).

use std::time::Instant;

use anyhow::Result;

use crate::{
    compile, dist, matrix,
    tools::{self, BPF_TOOLCHAIN, HOST_TOOLCHAIN, cargo},
    vm::workspace_root,
};

/// Options of `cargo xtask test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Skip `cargo fmt --check`, clippy and rustdoc.
    #[arg(long)]
    pub no_lint: bool,
    /// Kernels of the matrix (repeatable): 6.1, 6.12, host. Default: all three.
    #[arg(long = "kernel", value_parser = clap::builder::PossibleValuesParser::new(matrix::KERNELS))]
    pub kernels: Vec<String>,
    /// Architectures of the matrix (repeatable): x86_64, aarch64 (arm64 guests under emulation).
    /// Default: all of them (x86_64 and aarch64).
    #[arg(long = "arch", value_parser = clap::builder::PossibleValuesParser::new(matrix::ARCHES))]
    pub arches: Vec<String>,
    /// Skip the kernel × hook matrix (host suite only).
    #[arg(long)]
    pub no_matrix: bool,
    /// Run only the kernel × hook matrix (no lints, no host suite).
    #[arg(long, alias = "matrix-only", conflicts_with_all = ["no_matrix", "no_lint"])]
    pub only_matrix: bool,
    /// Skip building and testing what `cargo xtask dist` ships (.deb, OCI image).
    #[arg(long)]
    pub no_dist: bool,
}

/// Builds this architecture's .deb and the image (as `cargo xtask dist` does, lintian
/// included), then installs, runs and purges them (sendfile-trace/tests/dist.rs).
fn dist_test() -> Result<()> {
    let started = Instant::now();
    tools::ensure_dist()?;
    let arch = dist::host_arch()?;
    let out = dist::build(&[arch], true)?;
    let (_, built) = &out.arches[0];
    let image = out.image.as_ref().expect("the image was asked for");
    let built_in = started.elapsed();
    tools::run(
        cargo(HOST_TOOLCHAIN)
            .current_dir(workspace_root())
            .args([
                "test",
                "--release",
                "-p",
                "sendfile-trace",
                "--test",
                "dist",
            ])
            .args(["--", "--ignored", "--test-threads=1"])
            .env("SENDFILE_TRACE_BPF_OBJECT", compile::bpf_object())
            .env("SENDFILE_TRACE_DEB", &built.deb)
            .env("SENDFILE_TRACE_IMAGE", image)
            .env(
                "SENDFILE_TRACE_IMAGE_REF",
                format!("{}:{}", dist::IMAGE_NAME, out.version),
            )
            .env("SENDFILE_WORKLOAD_STATIC_BIN", &built.workload)
            .env(
                "SENDFILE_WORKLOAD_BIN",
                compile::host_bin("sendfile-workload"),
            ),
    )?;
    eprintln!(
        "xtask: dist: built in {:.0} s, tested in {:.0} s",
        built_in.as_secs_f64(),
        (started.elapsed() - built_in).as_secs_f64()
    );
    Ok(())
}

fn lint() -> Result<()> {
    let root = workspace_root();
    let ebpf_dir = root.join("sendfile-trace-ebpf");
    tools::run(
        cargo(HOST_TOOLCHAIN)
            .current_dir(&root)
            .args(["fmt", "--all", "--check"]),
    )?;
    tools::run(
        cargo(BPF_TOOLCHAIN)
            .current_dir(&ebpf_dir)
            .args(["fmt", "--check"]),
    )?;
    tools::run(
        cargo(HOST_TOOLCHAIN)
            .current_dir(&root)
            .args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])
            .env("SENDFILE_TRACE_BPF_OBJECT", compile::bpf_object()),
    )?;
    // Documentation: public items are documented, and their links resolve.
    tools::run(
        cargo(HOST_TOOLCHAIN)
            .current_dir(&root)
            .args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings")
            .env("SENDFILE_TRACE_BPF_OBJECT", compile::bpf_object()),
    )?;
    // The kernel side once per architecture: each compiles its own arch module.
    for arch in compile::ARCHES {
        tools::run(
            compile::bpf_cargo(arch)
                .args([
                    "clippy",
                    "--release",
                    "--target",
                    "bpfel-unknown-none",
                    "-Z",
                    "build-std=core",
                ])
                .args(["--", "-D", "warnings"]),
        )?;
    }
    Ok(())
}

/// Runs the whole suite; the exit code is 0 only if everything passed.
pub fn test(args: TestArgs) -> Result<i32> {
    tools::ensure_all()?;
    compile::build_host()?;
    let workload32 = compile::build_workload32()?;
    if args.only_matrix {
        matrix::run(&selected_arches(&args), &selected_kernels(&args))?;
        return Ok(0);
    }
    if !args.no_lint {
        lint()?;
    }
    tools::run(
        cargo(HOST_TOOLCHAIN)
            .current_dir(workspace_root())
            .args(["test", "--release", "--workspace"])
            .env("SENDFILE_TRACE_BPF_OBJECT", compile::bpf_object())
            .env("SENDFILE_TRACE_BIN", compile::host_bin("sendfile-trace"))
            .env(
                "SENDFILE_WORKLOAD_BIN",
                compile::host_bin("sendfile-workload"),
            )
            .env("SENDFILE_WORKLOAD32_BIN", &workload32),
    )?;
    if !args.no_dist {
        dist_test()?;
    }
    if !args.no_matrix {
        matrix::run(&selected_arches(&args), &selected_kernels(&args))?;
    }
    Ok(0)
}

/// The architectures `--arch` names, or all of them (the arm64 rows in emulated guests: with
/// path walks as `bpf_loop` callbacks the tracer loads there in about a minute, where the
/// unrolled walk took over 300 s; see docs/arm64.md).
fn selected_arches(args: &TestArgs) -> Vec<&'static str> {
    matrix::ARCHES
        .into_iter()
        .filter(|a| args.arches.is_empty() || args.arches.iter().any(|x| x == a))
        .collect()
}

/// The kernels `--kernel` names, or all of them.
fn selected_kernels(args: &TestArgs) -> Vec<&'static str> {
    if args.kernels.is_empty() {
        matrix::KERNELS.to_vec()
    } else {
        matrix::KERNELS
            .iter()
            .copied()
            .filter(|k| args.kernels.iter().any(|a| a == k))
            .collect()
    }
}
