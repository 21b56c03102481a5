//! Building the BPF object, the daemon, the workload and the static guest binaries.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::{
    tools::{self, BPF_TOOLCHAIN, HOST_TOOLCHAIN, cargo},
    vm::workspace_root,
};

/// Target triple of the eBPF build (the same little-endian BPF on x86_64 and arm64).
const BPF_TARGET: &str = "bpfel-unknown-none";

/// Architectures the kernel side is built for (Rust `target_arch` names): one BPF object each,
/// because the saved-register layout and syscall numbers differ (sendfile-trace-ebpf/src/arch/).
pub const ARCHES: [&str; 2] = ["x86_64", "aarch64"];

/// The architecture of this host (and of `build_host`'s binaries).
pub const HOST_ARCH: &str = std::env::consts::ARCH;

/// Path of the BPF object for this host's architecture.
pub fn bpf_object() -> PathBuf {
    bpf_object_for(HOST_ARCH)
}

/// Cargo target directory of the eBPF build for `arch` (x86_64 keeps `target/bpf`, where the
/// daemon's build script looks by default).
fn bpf_target_dir(arch: &str) -> PathBuf {
    let root = workspace_root().join("target");
    if arch == "x86_64" {
        root.join("bpf")
    } else {
        root.join(format!("bpf-{arch}"))
    }
}

/// Path of the BPF object for `arch` (see sendfile-trace/build.rs, which picks the same path for
/// the architecture it compiles for).
pub fn bpf_object_for(arch: &str) -> PathBuf {
    bpf_target_dir(arch).join("bpfel-unknown-none/release/sendfile-trace")
}

/// `RUSTFLAGS` of the eBPF build for `arch`: BTF, and the architecture as `bpf_target_arch`
/// (read by our arch module and by aya-ebpf's `PtRegs` accessors).
fn bpf_rustflags(arch: &str) -> String {
    format!("-C debuginfo=2 -C link-arg=--btf --cfg bpf_target_arch=\"{arch}\"")
}

/// `cargo` for the eBPF crate for `arch`: toolchain, directory, target directory, flags.
pub fn bpf_cargo(arch: &str) -> std::process::Command {
    let mut c = cargo(BPF_TOOLCHAIN);
    c.current_dir(workspace_root().join("sendfile-trace-ebpf"))
        .env("CARGO_TARGET_DIR", bpf_target_dir(arch))
        .env("RUSTFLAGS", bpf_rustflags(arch));
    c
}

/// Builds the BPF object for this host's architecture.
pub fn build_ebpf() -> Result<PathBuf> {
    build_ebpf_for(HOST_ARCH)
}

/// Builds the BPF object for `arch` (one of [`ARCHES`]) with the pinned nightly and bpf-linker
/// (BTF included).
pub fn build_ebpf_for(arch: &str) -> Result<PathBuf> {
    if !ARCHES.contains(&arch) {
        bail!(
            "no kernel side for architecture {arch:?}; expected one of {}",
            ARCHES.join(", ")
        );
    }
    tools::run(bpf_cargo(arch).args([
        "build",
        "--release",
        "--target",
        BPF_TARGET,
        "-Z",
        "build-std=core",
    ]))?;
    Ok(bpf_object_for(arch))
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

/// The `target_arch` of a target triple (`aarch64-unknown-linux-musl` → `aarch64`).
pub fn triple_arch(triple: &str) -> &str {
    triple.split('-').next().unwrap_or(triple)
}

/// `cargo +HOST_TOOLCHAIN` for a static musl build for `triple` (x86_64 or aarch64): the BPF
/// object of that architecture, and rust-lld as the linker for a foreign one (the rustup target
/// ships musl's crt and libc, so no cross gcc is needed).
pub fn static_cargo(triple: &str) -> std::process::Command {
    let arch = triple_arch(triple);
    let mut c = cargo(HOST_TOOLCHAIN);
    c.current_dir(workspace_root())
        .env("SENDFILE_TRACE_BPF_OBJECT", bpf_object_for(arch));
    if arch != HOST_ARCH {
        let var = format!(
            "CARGO_TARGET_{}_LINKER",
            triple.to_uppercase().replace('-', "_")
        );
        c.env(var, "rust-lld");
    }
    c
}

/// Static release binaries of `sendfile-trace` (with the BPF object of that architecture) and
/// `sendfile-workload` for `triple` (`x86_64-unknown-linux-musl`, `aarch64-unknown-linux-musl`):
/// returns `target/<triple>/release`.
pub fn build_static(triple: &str) -> Result<PathBuf> {
    build_ebpf_for(triple_arch(triple))?;
    tools::run(static_cargo(triple).args([
        "build",
        "--release",
        "--target",
        triple,
        "-p",
        "sendfile-trace",
        "-p",
        "sendfile-workload",
    ]))?;
    Ok(workspace_root().join("target").join(triple).join("release"))
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

/// Target of the AArch32 workload. This toolchain's rustup offers no 32-bit Arm standard
/// library (`rustup target add armv7-*` says "unavailable"), so std is built from rust-src with
/// the pinned nightly (`-Z build-std`) and linked statically against Debian's armhf glibc.
pub const ARM32_TARGET: &str = "armv7-unknown-linux-gnueabihf";

/// Debian packages the AArch32 link needs: the cross `ld`, glibc's static libraries and crt
/// files, libgcc. Not `gcc-arm-linux-gnueabihf`: Debian's `gcc-multilib` (which the i686 build
/// needs) conflicts with it, so `ld` is driven directly, with the crt files a gcc would add.
const ARM32_PACKAGES: [&str; 3] = [
    "binutils-arm-linux-gnueabihf",
    "libc6-dev-armhf-cross",
    "libgcc-12-dev-armhf-cross",
];

/// The static AArch32 workload (EABI syscalls 187 and 239 through arm64's compat entry points),
/// `target/arm32/armv7-unknown-linux-gnueabihf/release/sendfile-workload`.
pub fn build_workload_arm32() -> Result<PathBuf> {
    tools::apt_install(&ARM32_PACKAGES)?;
    let libc = PathBuf::from("/usr/arm-linux-gnueabihf/lib");
    let gcc = std::fs::read_dir("/usr/lib/gcc-cross/arm-linux-gnueabihf")
        .context("libgcc-12-dev-armhf-cross left no /usr/lib/gcc-cross/arm-linux-gnueabihf")?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.join("crtbeginT.o").is_file())
        .context("no crtbeginT.o under /usr/lib/gcc-cross/arm-linux-gnueabihf")?;
    let (libc, gcc) = (libc.display(), gcc.display());
    // What `gcc -static` passes to ld around the objects: crt1, crti, crtbeginT first; libc,
    // libgcc and libgcc_eh as one group (they refer to each other); crtend, crtn last.
    let flags = [
        "-Ctarget-feature=+crt-static".to_owned(),
        "-Clinker=arm-linux-gnueabihf-ld".to_owned(),
        "-Clinker-flavor=ld".to_owned(),
        format!("-Zpre-link-arg={libc}/crt1.o"),
        format!("-Zpre-link-arg={libc}/crti.o"),
        format!("-Zpre-link-arg={gcc}/crtbeginT.o"),
        format!("-L{libc}"),
        format!("-L{gcc}"),
        "-Clink-arg=--start-group".to_owned(),
        "-Clink-arg=-lc".to_owned(),
        "-Clink-arg=-lgcc".to_owned(),
        "-Clink-arg=-lgcc_eh".to_owned(),
        "-Clink-arg=--end-group".to_owned(),
        format!("-Clink-arg={gcc}/crtend.o"),
        format!("-Clink-arg={libc}/crtn.o"),
    ];
    let dir = workspace_root().join("target/arm32");
    tools::run(
        cargo(BPF_TOOLCHAIN)
            .current_dir(workspace_root())
            .args(["build", "--release", "-p", "sendfile-workload"])
            .args(["--target", ARM32_TARGET])
            .args(["-Z", "build-std=std,panic_abort"])
            .env("CARGO_TARGET_DIR", &dir)
            .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f")),
    )
    .context("building the AArch32 workload")?;
    Ok(dir.join(ARM32_TARGET).join("release/sendfile-workload"))
}

/// Host paths of the release binaries.
pub fn host_bin(name: &str) -> PathBuf {
    workspace_root().join("target/release").join(name)
}
