//! Installs what the build needs when it is missing: pinned toolchains, rust-src, musl targets,
//! LLVM 22 (for bpf-linker), bpf-linker itself, and the Debian tools the tests use.

use std::process::Command;

use anyhow::{Context, Result, bail};

/// Toolchain for the daemon, the workload and the tests (aya 0.16 needs rustc ≥ 1.98).
pub const HOST_TOOLCHAIN: &str = "1.98.0";
/// Toolchain for the eBPF crate: the last nightly on LLVM 22, bpf-linker's LLVM.
pub const BPF_TOOLCHAIN: &str = "nightly-2026-08-05";
/// bpf-linker release, built against Debian's LLVM 22.
pub const BPF_LINKER_VERSION: &str = "0.13.0";
/// Where Debian's llvm-22-dev lives.
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// Static targets for guest binaries (x86_64 and arm64, the latter linked by rust-lld) and the
/// 32-bit (compat) workload.
pub const MUSL_TARGETS: [&str; 3] = [
    "x86_64-unknown-linux-musl",
    "aarch64-unknown-linux-musl",
    "i686-unknown-linux-musl",
];
/// Debian packages the build and the tests need (rsyslog: the syslog sink tests' real daemon,
/// rsyslog-relp its RELP input;
/// systemd: `systemd-analyze verify` of the unit; util-linux: `setpriv` for its capabilities;
/// containerd and runc: the real container runtime `containerId` is tested against).
const APT_PACKAGES: [&str; 14] = [
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "strace",
    // The nginx test serves files with a real nginx (copied into the VM guests with its
    // libraries, like strace).
    "nginx",
    "musl-tools",
    "gcc-multilib",
    "rsyslog",
    "rsyslog-relp",
    "systemd",
    "util-linux",
    "containerd",
    "runc",
];

/// Debian packages `cargo xtask dist` and its tests need: lintian checks the packages, buildah
/// builds the image, containerd + runc run it in the tests (podman cannot run containers on
/// hosts without CAP_SYS_RESOURCE), file and binutils (readelf) check the binaries are static.
const DIST_APT_PACKAGES: [&str; 7] = [
    "lintian",
    "buildah",
    "containerd",
    "runc",
    "file",
    "binutils",
    "dpkg-dev",
];

/// Runs a command, failing with its name if it cannot start or exits non-zero.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// A command's stdout, or an empty string if it cannot run.
fn output(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// `cargo` through rustup for a pinned toolchain, with the outer cargo's overrides removed.
pub fn cargo(toolchain: &str) -> Command {
    let mut c = cargo_unpinned();
    c.arg(format!("+{toolchain}"));
    c
}

/// `cargo` with the outer cargo's overrides removed, on whatever toolchain the directory it runs
/// in picks (another tree's own `cargo xtask`).
pub fn cargo_unpinned() -> Command {
    let mut c = Command::new("cargo");
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
    ] {
        c.env_remove(var);
    }
    c
}

/// Installs Debian packages that are not installed yet (with one `apt-get update` retry).
pub fn apt_install(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            !output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .contains("install ok installed")
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            // Another apt (a second xtask, unattended-upgrades) may hold the lock: wait for it.
            .args(["-o", "DPkg::Lock::Timeout=600"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if install() {
        return Ok(());
    }
    run(Command::new("apt-get").args(["update", "-q"]))?;
    if !install() {
        bail!("apt-get install {} failed", missing.join(" "));
    }
    Ok(())
}

fn ensure_toolchain(toolchain: &str, components: &[&str], targets: &[&str]) -> Result<()> {
    let installed = output(Command::new("rustup").args(["toolchain", "list"]));
    if !installed.lines().any(|l| l.starts_with(toolchain)) {
        eprintln!("xtask: installing Rust toolchain {toolchain}");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            toolchain,
            "--profile",
            "minimal",
            "--no-self-update",
        ]))?;
    }
    let have = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        toolchain,
    ]));
    let missing: Vec<&str> = components
        .iter()
        .copied()
        .filter(|c| !have.lines().any(|l| l.starts_with(c)))
        .collect();
    if !missing.is_empty() {
        run(Command::new("rustup")
            .args(["component", "add", "--toolchain", toolchain])
            .args(&missing))?;
    }
    let have = output(Command::new("rustup").args([
        "target",
        "list",
        "--installed",
        "--toolchain",
        toolchain,
    ]));
    let missing: Vec<&str> = targets
        .iter()
        .copied()
        .filter(|t| !have.lines().any(|l| l == *t))
        .collect();
    if !missing.is_empty() {
        run(Command::new("rustup")
            .args(["target", "add", "--toolchain", toolchain])
            .args(&missing))?;
    }
    Ok(())
}

fn ensure_bpf_linker() -> Result<()> {
    let version = output(Command::new("bpf-linker").arg("--version"));
    if version.contains(BPF_LINKER_VERSION) {
        return Ok(());
    }
    eprintln!("xtask: installing bpf-linker {BPF_LINKER_VERSION} (LLVM 22, about a minute)");
    run(cargo(HOST_TOOLCHAIN)
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--version",
            BPF_LINKER_VERSION,
        ])
        .args(["--no-default-features", "--features", "llvm-22"])
        // bpf-linker 0.13 reads LLVM_PREFIX; older llvm-sys builds read LLVM_SYS_221_PREFIX.
        .env("LLVM_PREFIX", LLVM_PREFIX)
        .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX))
}

/// Installs everything the build and the tests need that is missing; quick when all is there.
pub fn ensure_all() -> Result<()> {
    apt_install(&APT_PACKAGES)?;
    ensure_toolchain(HOST_TOOLCHAIN, &["clippy", "rustfmt"], &MUSL_TARGETS)?;
    ensure_toolchain(BPF_TOOLCHAIN, &["rust-src", "clippy", "rustfmt"], &[])?;
    ensure_bpf_linker()
}

/// Installs what `cargo xtask dist` and its tests need beyond [`ensure_all`].
pub fn ensure_dist() -> Result<()> {
    apt_install(&DIST_APT_PACKAGES)
}
