//! `cargo xtask dist`: static musl binaries of the tracer (BPF object embedded) for x86_64 and
//! aarch64, a tarball and a `.deb` per architecture, SHA256SUMS, and the DaemonSet's OCI image,
//! all in `target/dist/`.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::{
    compile,
    tools::{self, HOST_TOOLCHAIN, cargo},
    vm::workspace_root,
};

/// Options of `cargo xtask dist`.
#[derive(Debug, clap::Args)]
pub struct DistArgs {
    /// Architectures to build (repeatable): x86_64, aarch64. Default: both.
    #[arg(long = "arch", value_parser = clap::builder::PossibleValuesParser::new(["x86_64", "aarch64"]))]
    pub arches: Vec<String>,
    /// Skip the OCI image.
    #[arg(long)]
    pub no_image: bool,
}

/// One architecture the project ships for, under each naming scheme that needs it.
#[derive(Debug)]
pub struct Arch {
    /// Rust's and the tarball's name (`uname -m`).
    pub name: &'static str,
    /// The static Rust target.
    pub triple: &'static str,
    /// Debian's and OCI's name.
    pub debian: &'static str,
}

/// Every architecture `cargo xtask dist` builds for.
pub const ARCHES: [Arch; 2] = [
    Arch {
        name: "x86_64",
        triple: "x86_64-unknown-linux-musl",
        debian: "amd64",
    },
    Arch {
        name: "aarch64",
        triple: "aarch64-unknown-linux-musl",
        debian: "arm64",
    },
];

/// The architecture of this machine.
pub fn host_arch() -> Result<&'static Arch> {
    ARCHES
        .iter()
        .find(|a| a.name == std::env::consts::ARCH)
        .with_context(|| format!("no dist target for this host ({})", std::env::consts::ARCH))
}

/// Name of the image (the one deploy/kubernetes/daemonset.yaml names), without the tag.
pub const IMAGE_NAME: &str = "ghcr.io/sendfile-trace/sendfile-trace";

/// Where the tracer sits in the image.
pub const IMAGE_BINARY: &str = "/usr/local/bin/sendfile-trace";

/// Debian revision of the packages (`VERSION-REVISION`).
const DEB_REVISION: &str = "1";

/// What one architecture produced.
#[derive(Debug)]
pub struct ArchArtifacts {
    /// Stripped static tracer, as shipped.
    pub binary: PathBuf,
    /// Static workload (not shipped; the tests run it).
    pub workload: PathBuf,
    /// `sendfile-trace-VERSION-ARCH-linux-musl.tar.gz`.
    pub tarball: PathBuf,
    /// `sendfile-trace_VERSION-1_DEBARCH.deb`.
    pub deb: PathBuf,
}

/// What `cargo xtask dist` produced.
#[derive(Debug)]
pub struct Artifacts {
    /// The version from Cargo.toml.
    pub version: String,
    /// Per architecture, in the order asked for.
    pub arches: Vec<(&'static Arch, ArchArtifacts)>,
    /// The OCI archive of the image (every architecture built), if built.
    pub image: Option<PathBuf>,
}

/// `cargo xtask dist`.
pub fn dist(args: DistArgs) -> Result<i32> {
    let arches: Vec<&'static Arch> = if args.arches.is_empty() {
        ARCHES.iter().collect()
    } else {
        ARCHES
            .iter()
            .filter(|a| args.arches.iter().any(|n| n == a.name))
            .collect()
    };
    tools::ensure_all()?;
    tools::ensure_dist()?;
    let out = build(&arches, !args.no_image)?;
    eprintln!("xtask: dist {} in {}", out.version, dist_dir().display());
    for (arch, a) in &out.arches {
        eprintln!("  {}: {}", arch.name, a.tarball.display());
        eprintln!("  {}: {}", arch.debian, a.deb.display());
    }
    if let Some(image) = &out.image {
        eprintln!("  image {IMAGE_NAME}:{}: {}", out.version, image.display());
    }
    Ok(0)
}

/// `target/dist`.
pub fn dist_dir() -> PathBuf {
    workspace_root().join("target/dist")
}

/// Builds everything for `arches` into `target/dist/` (and the image if `image`), then writes
/// SHA256SUMS over what is there.
pub fn build(arches: &[&'static Arch], image: bool) -> Result<Artifacts> {
    let version = version()?;
    let epoch = source_date_epoch();
    let dist = dist_dir();
    fs::create_dir_all(&dist)?;
    // SHA256SUMS covers exactly what this run makes: remove what an earlier run left.
    for e in fs::read_dir(&dist)?.filter_map(|e| e.ok()) {
        if is_artifact(&e.file_name().to_string_lossy()) || e.file_name() == "SHA256SUMS" {
            fs::remove_file(e.path())?;
        }
    }
    let mut statics = Vec::new();
    for arch in arches {
        statics.push((*arch, build_static(arch)?));
    }
    // The man page and completions come from the tracer itself: run the one built for this host.
    let host = host_arch()?;
    let runnable = match statics.iter().find(|(a, _)| a.name == host.name) {
        Some((_, s)) => s.tracer.clone(),
        None => build_static(host)?.tracer,
    };
    let generated = generate_docs(&runnable)?;
    let mut out = Vec::new();
    for (arch, s) in statics {
        let binary = dist.join(format!("stage/{}/sendfile-trace", arch.name));
        fs::create_dir_all(binary.parent().unwrap())?;
        fs::copy(&s.tracer, &binary)?;
        tools::run(Command::new("/usr/lib/llvm-22/bin/llvm-strip").arg(&binary))?;
        let file_says = check_static(&binary)?;
        eprintln!("xtask: {}: {file_says}", arch.name);
        let tarball = tarball(arch, &version, &binary, &generated, epoch)?;
        let deb = deb(arch, &version, &binary, &file_says, &generated, epoch)?;
        out.push((
            arch,
            ArchArtifacts {
                binary,
                workload: s.workload,
                tarball,
                deb,
            },
        ));
    }
    let image = if image {
        let binaries: Vec<(&Arch, &Path)> =
            out.iter().map(|(a, x)| (*a, x.binary.as_path())).collect();
        Some(build_image(&version, &binaries)?)
    } else {
        None
    };
    write_sums()?;
    Ok(Artifacts {
        version,
        arches: out,
        image,
    })
}

/// The workspace version (`[workspace.package] version` in Cargo.toml), as cargo reads it.
pub fn version() -> Result<String> {
    let out = cargo(HOST_TOOLCHAIN)
        .current_dir(workspace_root())
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed ({})", out.status);
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "sendfile-trace")
        .and_then(|p| p["version"].as_str())
        .map(str::to_owned)
        .context("no sendfile-trace package in cargo metadata")
}

/// Timestamp given to every packaged file: `SOURCE_DATE_EPOCH`, else the commit's time, else now
/// (so that two builds of one commit give the same tarballs).
fn source_date_epoch() -> u64 {
    if let Some(e) = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return e;
    }
    Command::new("git")
        .current_dir(workspace_root())
        .args(["log", "-1", "--format=%ct"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        })
}

/// The unstripped static binaries of one target.
pub struct Static {
    /// `target/TRIPLE/release/sendfile-trace`.
    pub tracer: PathBuf,
    /// `target/TRIPLE/release/sendfile-workload`.
    pub workload: PathBuf,
}

/// Builds the static tracer (with that architecture's BPF object) and workload for `arch` with
/// rustup's musl target, through the same command the VM matrix uses for its guest binaries
/// (`compile::build_static`), so cargo builds each target once for both. aarch64 links with
/// rust-lld (shipped with rustup's toolchain): musl's static libc comes with the Rust target, so
/// no cross gcc is needed.
pub fn build_static(arch: &Arch) -> Result<Static> {
    let dir = compile::build_static(arch.triple)?;
    Ok(Static {
        tracer: dir.join("sendfile-trace"),
        workload: dir.join("sendfile-workload"),
    })
}

/// Fails unless `file` calls the binary statically linked. Rust's x86_64 musl target links a
/// static PIE (no interpreter, no shared libraries, loaded at a random address), which `file`
/// calls "static-pie linked"; `readelf` then confirms there is no interpreter and no NEEDED.
fn check_static(binary: &Path) -> Result<String> {
    let out = Command::new("file").arg("-b").arg(binary).output()?;
    let what = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !(what.contains("statically linked") || what.contains("static-pie linked")) {
        bail!("{} is not static: file says {what}", binary.display());
    }
    let out = Command::new("readelf")
        .args(["--program-headers", "--dynamic", "--wide"])
        .arg(binary)
        .output()?;
    let elf = String::from_utf8_lossy(&out.stdout);
    if elf.contains("INTERP") || elf.contains("(NEEDED)") {
        bail!(
            "{} has an interpreter or needs shared libraries:\n{elf}",
            binary.display()
        );
    }
    Ok(what)
}

/// Man page and completions, generated by the tracer (`sendfile-trace generate …`).
pub struct Generated {
    /// `sendfile-trace.1` (roff).
    pub man: PathBuf,
    /// (shell, file): bash `sendfile-trace`, zsh `_sendfile-trace`, fish `sendfile-trace.fish`.
    pub completions: Vec<(&'static str, PathBuf)>,
}

fn generate_docs(tracer: &Path) -> Result<Generated> {
    let dir = dist_dir().join("stage/generated");
    fs::create_dir_all(&dir)?;
    let gen_to = |args: &[&str], file: &str| -> Result<PathBuf> {
        let out = Command::new(tracer)
            .arg("generate")
            .args(args)
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", tracer.display()))?;
        if !out.status.success() || out.stdout.is_empty() {
            bail!(
                "sendfile-trace generate {} failed ({})",
                args.join(" "),
                out.status
            );
        }
        let path = dir.join(file);
        fs::write(&path, out.stdout)?;
        Ok(path)
    };
    Ok(Generated {
        man: gen_to(&["man"], "sendfile-trace.1")?,
        completions: vec![
            ("bash", gen_to(&["completions", "bash"], "sendfile-trace")?),
            ("zsh", gen_to(&["completions", "zsh"], "_sendfile-trace")?),
            (
                "fish",
                gen_to(&["completions", "fish"], "sendfile-trace.fish")?,
            ),
        ],
    })
}

/// Copies `from` to `to` (creating its directory) with `mode`.
fn install(from: &Path, to: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(to.parent().unwrap())?;
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Writes `text` to `to` (creating its directory) with `mode`.
fn install_text(text: &str, to: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(to.parent().unwrap())?;
    fs::write(to, text)?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// A fresh, empty directory.
fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    fs::create_dir_all(dir)?;
    Ok(())
}

/// Sets every file's mtime under `dir` to `epoch` (reproducible archives).
fn clamp_mtimes(dir: &Path, epoch: u64) -> Result<()> {
    tools::run(
        Command::new("find")
            .arg(dir)
            .args(["-exec", "touch", "-h", "-d"])
            .arg(format!("@{epoch}"))
            .args(["{}", "+"]),
    )
}

/// The systemd unit with the binary at `bin`.
fn unit_for(bin: &str) -> Result<String> {
    let unit = fs::read_to_string(workspace_root().join("deploy/sendfile-trace.service"))?;
    let exec = "ExecStart=/usr/local/bin/sendfile-trace ";
    if !unit.contains(exec) {
        bail!("deploy/sendfile-trace.service has no `{exec}…` line to point at {bin}");
    }
    Ok(unit.replace(exec, &format!("ExecStart={bin} ")))
}

/// `target/dist/sendfile-trace-VERSION-ARCH-linux-musl.tar.gz`: one directory of that name with
/// the binary, the unit, the example config, the man page, completions, README and licences.
fn tarball(
    arch: &Arch,
    version: &str,
    binary: &Path,
    generated: &Generated,
    epoch: u64,
) -> Result<PathBuf> {
    let root = workspace_root();
    let name = format!("sendfile-trace-{version}-{}-linux-musl", arch.name);
    let stage = dist_dir().join("stage/tar").join(arch.name);
    fresh_dir(&stage)?;
    let top = stage.join(&name);
    install(binary, &top.join("sendfile-trace"), 0o755)?;
    install_text(
        &unit_for("/usr/local/bin/sendfile-trace")?,
        &top.join("sendfile-trace.service"),
        0o644,
    )?;
    install(
        &root.join("deploy/config.toml"),
        &top.join("config.toml"),
        0o644,
    )?;
    install(&generated.man, &top.join("man/sendfile-trace.1"), 0o644)?;
    for (shell, file) in &generated.completions {
        install(
            file,
            &top.join("completions")
                .join(shell)
                .join(file.file_name().unwrap()),
            0o644,
        )?;
    }
    for doc in ["README.md", "LICENSE-MIT", "LICENSE-APACHE"] {
        install(&root.join(doc), &top.join(doc), 0o644)?;
    }
    install(&root.join("docs/dist.md"), &top.join("INSTALL.md"), 0o644)?;
    clamp_mtimes(&stage, epoch)?;
    let out = dist_dir().join(format!("{name}.tar.gz"));
    let mut tar = Command::new("tar")
        .current_dir(&stage)
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--format=gnu",
            "-cf",
            "-",
            &name,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .context("running tar")?;
    let gz = Command::new("gzip")
        .args(["-9", "-n"])
        .stdin(tar.stdout.take().unwrap())
        .stdout(fs::File::create(&out)?)
        .status()
        .context("running gzip")?;
    let t = tar.wait()?;
    if !t.success() || !gz.success() {
        bail!("tar | gzip of {name} failed ({t}, {gz})");
    }
    Ok(out)
}

/// The `DEBIAN/` maintainer scripts. No debhelper here, so these are written out: the unit is
/// installed but neither enabled nor started (a tracer of every sendfile on the host is switched
/// on by its admin: `systemctl enable --now sendfile-trace`); an upgrade restarts it if it runs;
/// removal stops it; purge removes what systemd made for it (the enablement link and its logs).
const POSTINST: &str = r#"#!/bin/sh
set -e
if [ "$1" = "configure" ] && [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
    if [ -n "$2" ]; then
        deb-systemd-invoke try-restart sendfile-trace.service >/dev/null || true
    fi
fi
"#;
const PRERM: &str = r#"#!/bin/sh
set -e
if [ "$1" = "remove" ] && [ -d /run/systemd/system ]; then
    deb-systemd-invoke stop sendfile-trace.service >/dev/null || true
fi
"#;
const POSTRM: &str = r#"#!/bin/sh
set -e
if [ "$1" = "remove" ] && [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null || true
fi
if [ "$1" = "purge" ]; then
    rm -f /etc/systemd/system/multi-user.target.wants/sendfile-trace.service
    rm -rf /var/log/private/sendfile-trace
    if [ -L /var/log/sendfile-trace ]; then
        rm -f /var/log/sendfile-trace
    else
        rm -rf /var/log/sendfile-trace
    fi
    rmdir --ignore-fail-on-non-empty /etc/sendfile-trace 2>/dev/null || true
fi
"#;

/// The Debian copyright file (machine-readable format).
fn deb_copyright() -> String {
    format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: sendfile-trace\n\
         Source: https://github.com/sendfile-trace/sendfile-trace\n\
         \n\
         Files: *\n\
         Copyright: 2026 The sendfile-trace developers\n\
         License: MIT or Apache-2.0\n\
         \n\
         License: MIT\n{}\n\
         License: Apache-2.0\n \
         On Debian systems, the full text of the Apache License, Version 2.0 is in\n \
         /usr/share/common-licenses/Apache-2.0.\n",
        fs::read_to_string(workspace_root().join("LICENSE-MIT"))
            .unwrap_or_default()
            .lines()
            .skip(2)
            .map(|l| if l.is_empty() {
                " .\n".to_owned()
            } else {
                format!(" {l}\n")
            })
            .collect::<String>()
            .trim_end()
    )
}

/// `target/dist/sendfile-trace_VERSION-1_DEBARCH.deb`, built with dpkg-deb from a staged tree.
fn deb(
    arch: &Arch,
    version: &str,
    binary: &Path,
    file_says: &str,
    generated: &Generated,
    epoch: u64,
) -> Result<PathBuf> {
    let root = workspace_root();
    let stage = dist_dir().join("stage/deb").join(arch.debian);
    fresh_dir(&stage)?;
    install(binary, &stage.join("usr/bin/sendfile-trace"), 0o755)?;
    install_text(
        &unit_for("/usr/bin/sendfile-trace")?,
        &stage.join("lib/systemd/system/sendfile-trace.service"),
        0o644,
    )?;
    install(
        &root.join("deploy/config.toml"),
        &stage.join("etc/sendfile-trace/config.toml"),
        0o644,
    )?;
    let man = stage.join("usr/share/man/man1/sendfile-trace.1.gz");
    fs::create_dir_all(man.parent().unwrap())?;
    gzip(&generated.man, &man)?;
    for (shell, file) in &generated.completions {
        let dir = match *shell {
            "bash" => "usr/share/bash-completion/completions",
            "zsh" => "usr/share/zsh/vendor-completions",
            "fish" => "usr/share/fish/vendor_completions.d",
            other => bail!("no completion directory for {other}"),
        };
        install(
            file,
            &stage.join(dir).join(file.file_name().unwrap()),
            0o644,
        )?;
    }
    let doc = stage.join("usr/share/doc/sendfile-trace");
    install_text(&deb_copyright(), &doc.join("copyright"), 0o644)?;
    let changelog = doc.join("changelog.Debian");
    install_text(&deb_changelog(version, epoch)?, &changelog, 0o644)?;
    gzip(&changelog, &doc.join("changelog.Debian.gz"))?;
    fs::remove_file(&changelog)?;
    install_text(
        &lintian_overrides(file_says),
        &stage.join("usr/share/lintian/overrides/sendfile-trace"),
        0o644,
    )?;
    let control = stage.join("DEBIAN");
    fs::create_dir_all(&control)?;
    install_text(
        &deb_control(arch, version, &stage)?,
        &control.join("control"),
        0o644,
    )?;
    install_text(
        "/etc/sendfile-trace/config.toml\n",
        &control.join("conffiles"),
        0o644,
    )?;
    install_text(&md5sums(&stage)?, &control.join("md5sums"), 0o644)?;
    install_text(POSTINST, &control.join("postinst"), 0o755)?;
    install_text(PRERM, &control.join("prerm"), 0o755)?;
    install_text(POSTRM, &control.join("postrm"), 0o755)?;
    clamp_mtimes(&stage, epoch)?;
    let out = dist_dir().join(format!(
        "sendfile-trace_{version}-{DEB_REVISION}_{}.deb",
        arch.debian
    ));
    tools::run(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&stage)
            .arg(&out)
            .env("SOURCE_DATE_EPOCH", epoch.to_string()),
    )?;
    lintian(&out)?;
    Ok(out)
}

/// What lintian says of the package and is accepted, each with the reason (lintian reads this
/// file from the package itself, so `lintian` anywhere shows them as overridden, not hidden).
/// `file_says` is `file`'s description of the binary: the two static flavours draw different tags.
fn lintian_overrides(file_says: &str) -> String {
    let static_tag = if file_says.contains("static-pie") {
        "# Rust's x86_64 musl target links a static PIE: ELF type DYN with no interpreter and no\n\
         # NEEDED entries by design (no shared library at all), which lintian takes for a library.\n\
         sendfile-trace: shared-library-lacks-prerequisites [usr/bin/sendfile-trace]\n"
    } else {
        "# Static on purpose: one binary with its BPF programs that runs on any distribution and\n\
         # alone in a FROM-scratch image (the same binary as the tarball's and the image's).\n\
         sendfile-trace: statically-linked-binary [usr/bin/sendfile-trace]\n"
    };
    format!(
        "{static_tag}\
         # Built by the project (cargo xtask dist), not uploaded to Debian: no ITP bug to close.\n\
         sendfile-trace: initial-upload-closes-no-bugs [usr/share/doc/sendfile-trace/changelog.Debian.gz:1]\n\
         # The unit is for systemd hosts; elsewhere run /usr/bin/sendfile-trace --config\n\
         # /etc/sendfile-trace/config.toml under the host's own supervisor (no init.d script).\n\
         sendfile-trace: package-supports-alternative-init-but-no-init.d-script [lib/systemd/system/sendfile-trace.service]\n"
    )
}

/// Runs lintian (pedantic) on a package and fails on any warning or error not overridden.
pub fn lintian(deb: &Path) -> Result<()> {
    let out = Command::new("lintian")
        .args([
            "--pedantic",
            "--display-info",
            "--fail-on",
            "error,warning,info",
        ])
        .arg(deb)
        .output()
        .context("running lintian (cargo xtask dist installs it)")?;
    let said: String = String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
        .filter(|l| !l.contains("running with root privileges"))
        .map(|l| format!("  {l}\n"))
        .collect();
    if !out.status.success() {
        bail!("lintian {} failed ({}):\n{said}", deb.display(), out.status);
    }
    eprintln!(
        "xtask: lintian {}: clean{}",
        deb.file_name().unwrap().to_string_lossy(),
        if said.is_empty() {
            String::new()
        } else {
            format!(" but for:\n{said}")
        }
    );
    Ok(())
}

/// `DEBIAN/md5sums`: every regular file of the staged tree (debsums checks installs with it).
fn md5sums(stage: &Path) -> Result<String> {
    let mut files = Vec::new();
    let mut dirs = vec![stage.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for e in fs::read_dir(&dir)? {
            let e = e?;
            let rel = e.path().strip_prefix(stage)?.to_path_buf();
            // Conffiles are tracked by dpkg itself (as dh_md5sums does, they are left out).
            if rel.starts_with("DEBIAN") || rel.starts_with("etc") {
                continue;
            }
            if e.file_type()?.is_dir() {
                dirs.push(e.path());
            } else if e.file_type()?.is_file() {
                files.push(rel.display().to_string());
            }
        }
    }
    files.sort();
    let out = stdout_of(Command::new("md5sum").current_dir(stage).args(&files))?;
    Ok(out + "\n")
}

/// `gzip -9n < from > to`.
fn gzip(from: &Path, to: &Path) -> Result<()> {
    let status = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .arg(from)
        .stdout(fs::File::create(to)?)
        .status()?;
    if !status.success() {
        bail!("gzip {} failed", from.display());
    }
    fs::set_permissions(to, fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// The package's maintainer; the value lintian and `apt show` display.
const DEB_MAINTAINER: &str = "sendfile-trace developers <sendfile-trace@users.noreply.github.com>";

fn deb_control(arch: &Arch, version: &str, stage: &Path) -> Result<String> {
    let du = Command::new("du")
        .args(["-sk", "--exclude=DEBIAN"])
        .arg(stage)
        .output()?;
    let kib: u64 = String::from_utf8_lossy(&du.stdout)
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .context("du -sk")?;
    Ok(format!(
        "Package: sendfile-trace\n\
         Version: {version}-{DEB_REVISION}\n\
         Architecture: {}\n\
         Maintainer: {DEB_MAINTAINER}\n\
         Installed-Size: {kib}\n\
         Section: admin\n\
         Priority: optional\n\
         Homepage: https://github.com/sendfile-trace/sendfile-trace\n\
         Description: eBPF tracer of sendfile(2): one JSON event per call\n \
         sendfile-trace watches every sendfile(2) call on the host with eBPF\n \
         (kprobe, fentry or syscall tracepoints) and writes one event per call:\n \
         who called, both descriptors resolved to files and sockets, the offset\n \
         before and after, the count and the result, as ECS, OCSF, Tracee JSON\n \
         or text, to stdout, files or syslog. The binary is static and carries\n \
         its BPF programs.\n",
        arch.debian
    ))
}

fn deb_changelog(version: &str, epoch: u64) -> Result<String> {
    let out = Command::new("date")
        .args(["-u", "-R", "-d"])
        .arg(format!("@{epoch}"))
        .output()?;
    let date = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok(format!(
        "sendfile-trace ({version}-{DEB_REVISION}) unstable; urgency=medium\n\
         \n  \
         * Built by cargo xtask dist from the upstream sources.\n\
         \n \
         -- {DEB_MAINTAINER}  {date}\n"
    ))
}

/// `buildah` with a private store under target/ (vfs: works on any filesystem, needs no
/// fuse-overlayfs), so the build neither needs nor touches /var/lib/containers.
fn buildah() -> Command {
    let store = workspace_root().join("target/buildah");
    let mut c = Command::new("buildah");
    c.arg("--root")
        .arg(store.join("root"))
        .arg("--runroot")
        .arg(store.join("run"))
        .args(["--storage-driver", "vfs"]);
    c
}

/// stdout of a command that must succeed.
fn stdout_of(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The DaemonSet's image, `FROM scratch` with only the static tracer, for every architecture in
/// `binaries`, as one OCI archive (an image index with one manifest per architecture):
/// `target/dist/sendfile-trace-VERSION-oci.tar`, named `IMAGE_NAME:VERSION` inside.
pub fn build_image(version: &str, binaries: &[(&Arch, &Path)]) -> Result<PathBuf> {
    let tag = format!("{IMAGE_NAME}:{version}");
    let out = dist_dir().join(format!("sendfile-trace-{version}-oci.tar"));
    // A manifest list of the same name left by an earlier run would collect old images.
    let _ = buildah()
        .args(["manifest", "rm", &tag])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = buildah()
        .args(["rmi", "--all", "--force"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    tools::run(
        buildah()
            .args(["manifest", "create", &tag])
            .stdout(Stdio::null()),
    )?;
    for (arch, binary) in binaries {
        let ctr = stdout_of(buildah().args(["from", "--arch", arch.debian, "scratch"]))?;
        let steps: Vec<Vec<String>> = vec![
            vec![
                "copy".into(),
                "--chmod".into(),
                "0755".into(),
                ctr.clone(),
                binary.display().to_string(),
                IMAGE_BINARY.into(),
            ],
            vec![
                "config".into(),
                "--arch".into(),
                arch.debian.into(),
                "--os".into(),
                "linux".into(),
                "--entrypoint".into(),
                format!("[\"{IMAGE_BINARY}\"]"),
                "--label".into(),
                format!("org.opencontainers.image.version={version}"),
                "--label".into(),
                "org.opencontainers.image.source=https://github.com/sendfile-trace/sendfile-trace"
                    .into(),
                "--label".into(),
                "org.opencontainers.image.licenses=MIT OR Apache-2.0".into(),
                ctr.clone(),
            ],
        ];
        for step in steps {
            tools::run(buildah().args(step))?;
        }
        let image = stdout_of(buildah().args([
            "commit",
            "--quiet",
            "--format",
            "oci",
            "--timestamp",
            "0",
            &ctr,
            &format!("{tag}-{}", arch.debian),
        ]))?;
        tools::run(buildah().args(["rm", &ctr]).stdout(Stdio::null()))?;
        tools::run(
            buildah()
                .args(["manifest", "add", &tag, &image])
                .stdout(Stdio::null()),
        )?;
    }
    if out.exists() {
        fs::remove_file(&out)?;
    }
    tools::run(buildah().args([
        "manifest",
        "push",
        "--all",
        "--format",
        "oci",
        &tag,
        &format!("oci-archive:{}:{tag}", out.display()),
    ]))?;
    Ok(out)
}

/// `target/dist/SHA256SUMS` over every tarball, package and image archive there.
fn write_sums() -> Result<()> {
    let dist = dist_dir();
    let mut names: Vec<String> = fs::read_dir(&dist)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_artifact(n))
        .collect();
    names.sort();
    let sums = stdout_of(Command::new("sha256sum").current_dir(&dist).args(&names))?;
    fs::write(dist.join("SHA256SUMS"), sums + "\n")?;
    Ok(())
}

/// Whether a file name in target/dist is one of the artefacts SHA256SUMS lists.
fn is_artifact(name: &str) -> bool {
    name.ends_with(".tar.gz") || name.ends_with(".deb") || name.ends_with("-oci.tar")
}
