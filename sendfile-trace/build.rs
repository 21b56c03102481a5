//! Locates the BPF object built by `cargo xtask build-ebpf` for the architecture this crate is
//! compiled for and hands its path to the crate, which embeds it with `include_bytes_aligned!`;
//! records the git commit `--version` prints.
//!
//! As aya's own `test/integration-test/build.rs` explains, `cargo check`, clippy and
//! rust-analyzer must work on a fresh clone, before the eBPF crate was ever built (it needs a
//! pinned nightly and bpf-linker, which `cargo xtask` installs). So when the object is missing
//! and nobody asked for a specific one, this embeds an empty stub and says so with a
//! `cargo:warning`; a binary built that way refuses to start with a one-line reason
//! (`LoadError::ObjectMissing`). A path named by `SENDFILE_TRACE_BPF_OBJECT` must exist.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// `git` in `dir`, its trimmed stdout if it ran and succeeded.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The commit the sources come from: `SENDFILE_TRACE_COMMIT` if set (a build from a source
/// tarball that knows it), else HEAD of the git checkout this workspace is the top of, else
/// "unknown" (no git, no .git, or the sources sit inside some other repository).
fn commit(workspace: &Path) -> String {
    println!("cargo:rerun-if-env-changed=SENDFILE_TRACE_COMMIT");
    if let Ok(c) = std::env::var("SENDFILE_TRACE_COMMIT") {
        return c;
    }
    let top = git(workspace, &["rev-parse", "--show-toplevel"]).map(PathBuf::from);
    let ours = top
        .and_then(|t| t.canonicalize().ok())
        .zip(workspace.canonicalize().ok())
        .is_some_and(|(t, w)| t == w);
    if !ours {
        return "unknown".into();
    }
    // Rebuild when HEAD moves: HEAD itself (checkout), the branch it names (commit), packed refs.
    let mut watch = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    watch.extend(git(workspace, &["symbolic-ref", "-q", "HEAD"]));
    for name in watch {
        if let Some(p) = git(
            workspace,
            &["rev-parse", "--path-format=absolute", "--git-path", &name],
        ) && Path::new(&p).exists()
        {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    git(workspace, &["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
}

fn main() {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    println!(
        "cargo:rustc-env=SENDFILE_TRACE_COMMIT={}",
        commit(&workspace)
    );
    println!("cargo:rerun-if-env-changed=SENDFILE_TRACE_BPF_OBJECT");
    // One object per architecture (the kernel side's arch module is chosen when it is built).
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let (path, explicit) = match std::env::var_os("SENDFILE_TRACE_BPF_OBJECT") {
        Some(p) => (PathBuf::from(p), true),
        None => {
            let dir = if arch == "x86_64" {
                "bpf".to_owned()
            } else {
                format!("bpf-{arch}")
            };
            (
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("../target")
                    .join(dir)
                    .join("bpfel-unknown-none/release/sendfile-trace"),
                false,
            )
        }
    };
    println!("cargo:rerun-if-changed={}", path.display());
    let embedded = if path.is_file() {
        path
    } else if explicit {
        panic!(
            "SENDFILE_TRACE_BPF_OBJECT names {}, which is not a file: build it with \
             `cargo xtask build-ebpf`",
            path.display()
        );
    } else {
        println!(
            "cargo:warning=BPF object {} not built yet: embedding an empty stub (fine for check, \
             clippy and docs; `cargo xtask build` builds the real tracer)",
            path.display()
        );
        let stub = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
            .join("sendfile-trace-bpf-stub.o");
        std::fs::write(&stub, b"").expect("cannot write the stub BPF object to OUT_DIR");
        stub
    };
    println!(
        "cargo:rustc-env=SENDFILE_TRACE_BPF_OBJECT={}",
        embedded.display()
    );
}
