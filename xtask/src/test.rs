//! `cargo xtask test`: lints, unit tests, and the real integration suite (tracer + workload).

use anyhow::Result;

use crate::{
    compile, matrix,
    tools::{self, BPF_TOOLCHAIN, HOST_TOOLCHAIN, cargo},
    vm::workspace_root,
};

/// Options of `cargo xtask test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Skip `cargo fmt --check` and clippy.
    #[arg(long)]
    pub no_lint: bool,
    /// Kernels of the matrix (repeatable): 6.1, 6.12, host. Default: all three.
    #[arg(long = "kernel", value_parser = clap::builder::PossibleValuesParser::new(matrix::KERNELS))]
    pub kernels: Vec<String>,
    /// Architectures of the matrix (repeatable): x86_64, aarch64 (arm64 guests under emulation).
    /// Default: both.
    #[arg(long = "arch", value_parser = clap::builder::PossibleValuesParser::new(matrix::ARCHES))]
    pub arches: Vec<String>,
    /// Skip the kernel × hook matrix (host suite only).
    #[arg(long)]
    pub no_matrix: bool,
    /// Run only the kernel × hook matrix (no lints, no host suite).
    #[arg(long, conflicts_with = "no_matrix")]
    pub matrix_only: bool,
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
    if args.matrix_only {
        return run_matrix(&args).map(|()| 0);
    }
    compile::build_host()?;
    let workload32 = compile::build_workload32()?;
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
    if !args.no_matrix {
        run_matrix(&args)?;
    }
    Ok(0)
}

/// The kernel × hook matrix over the selected architectures and kernels.
fn run_matrix(args: &TestArgs) -> Result<()> {
    let kernels: Vec<&'static str> = matrix::KERNELS
        .into_iter()
        .filter(|k| args.kernels.is_empty() || args.kernels.iter().any(|a| a == k))
        .collect();
    let arches: Vec<&'static str> = matrix::ARCHES
        .into_iter()
        .filter(|a| args.arches.is_empty() || args.arches.iter().any(|x| x == a))
        .collect();
    matrix::run(&arches, &kernels)
}
