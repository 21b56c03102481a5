//! Locates the BPF object built by `cargo xtask build-ebpf` for the architecture this crate is
//! compiled for and hands its path to the crate, which embeds it with `include_bytes_aligned!`.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=SENDFILE_TRACE_BPF_OBJECT");
    // One object per architecture (the kernel side's arch module is chosen when it is built).
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let path = match std::env::var_os("SENDFILE_TRACE_BPF_OBJECT") {
        Some(p) => PathBuf::from(p),
        None => {
            let dir = if arch == "x86_64" {
                "bpf".to_owned()
            } else {
                format!("bpf-{arch}")
            };
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target")
                .join(dir)
                .join("bpfel-unknown-none/release/sendfile-trace")
        }
    };
    println!("cargo:rerun-if-changed={}", path.display());
    if !path.is_file() {
        panic!(
            "the BPF object {} is missing: build it with `cargo xtask build-ebpf` \
             (or build everything with `cargo xtask build`)",
            path.display()
        );
    }
    println!(
        "cargo:rustc-env=SENDFILE_TRACE_BPF_OBJECT={}",
        path.display()
    );
}
