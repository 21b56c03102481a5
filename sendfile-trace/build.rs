//! Locates the BPF object built by `cargo xtask build-ebpf` and hands its path to the crate,
//! which embeds it with `include_bytes_aligned!`; records the git commit `--version` prints.

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
