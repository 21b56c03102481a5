//! Building the BPF object, the daemon, the workload and the static guest binaries.

use std::path::PathBuf;

use anyhow::Result;

use crate::{
    tools::{self, BPF_TOOLCHAIN, HOST_TOOLCHAIN, cargo},
    vm::workspace_root,
};

/// Target triple of the eBPF build.
const BPF_TARGET: &str = "bpfel-unknown-none";

/// Path of the BPF object.
pub fn bpf_object() -> PathBuf {
    workspace_root().join("target/bpf/bpfel-unknown-none/release/sendfile-trace")
}

/// Builds the BPF object with the pinned nightly and bpf-linker (BTF included).
pub fn build_ebpf() -> Result<PathBuf> {
    let root = workspace_root();
    tools::run(
        cargo(BPF_TOOLCHAIN)
            .current_dir(root.join("sendfile-trace-ebpf"))
            .args([
                "build",
                "--release",
                "--target",
                BPF_TARGET,
                "-Z",
                "build-std=core",
            ])
            .env("CARGO_TARGET_DIR", root.join("target/bpf"))
            .env("RUSTFLAGS", "-C debuginfo=2 -C link-arg=--btf"),
    )?;
    Ok(bpf_object())
}

/// Release binaries for this host: `target/release/{sendfile-trace,sendfile-workload}`.
pub fn build_host() -> Result<()> {
    build_ebpf()?;
    tools::run(
        cargo(HOST_TOOLCHAIN)
            .current_dir(workspace_root())
            .args([
                "build",
                "--release",
                "-p",
                "sendfile-trace",
                "-p",
                "sendfile-workload",
            ])
            .env("SENDFILE_TRACE_BPF_OBJECT", bpf_object()),
    )
}

/// The 32-bit static workload (i386 syscalls 187 and 239 through the compat entry points).
pub fn build_workload32() -> Result<PathBuf> {
    tools::run(
        cargo(HOST_TOOLCHAIN)
            .current_dir(workspace_root())
            .args(["build", "--release", "-p", "sendfile-workload"])
            .args(["--target", "i686-unknown-linux-musl"]),
    )?;
    Ok(workspace_root().join("target/i686-unknown-linux-musl/release/sendfile-workload"))
}

/// Host paths of the release binaries.
pub fn host_bin(name: &str) -> PathBuf {
    workspace_root().join("target/release").join(name)
}
