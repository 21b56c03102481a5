//! Locates the BPF object built by `cargo xtask build-ebpf` and hands its path to the crate,
//! which embeds it with `include_bytes_aligned!`.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=SENDFILE_TRACE_BPF_OBJECT");
    let path = match std::env::var_os("SENDFILE_TRACE_BPF_OBJECT") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/bpf/bpfel-unknown-none/release/sendfile-trace"),
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
