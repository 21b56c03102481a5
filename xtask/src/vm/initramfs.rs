//! The guest's initramfs: a newc cpio archive with static busybox, an `/init` script, the
//! command to run and the `--include`d files. Written directly (no `cpio` tool needed).

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Names at `/` that an `--include` may not take (they are the guest's own).
const RESERVED: &[&str] = &[
    "bin", "dev", "etc", "init", "lib", "mnt", "proc", "root", "run", "sbin", "sys", "tmp", "usr",
    "var",
];

/// Directories every guest has.
const DIRS: [&str; 14] = [
    "bin", "dev", "etc", "proc", "root", "run", "sbin", "sys", "tmp", "usr", "usr/bin", "usr/sbin",
    "mnt", "boot",
];

/// What goes into the guest besides busybox and `/init`.
pub struct Guest<'a> {
    /// Path of a statically linked busybox on the host.
    pub busybox: &'a Path,
    /// The kernel's `config-<release>`, put at `/boot/` in the guest (no /proc/config.gz there).
    pub kconfig: Option<&'a Path>,
    /// Kernel modules `/init` loads first, in this order (the virtio consoles' drivers on
    /// kernels that build them as modules).
    pub modules: &'a [PathBuf],
    /// Guest devices: the console, the command's stdout, its stderr.
    pub ports: [&'a str; 3],
    /// Files copied to `/` + basename, mode kept.
    pub includes: &'a [PathBuf],
    /// Host files (source, absolute guest path): dynamically linked programs and their
    /// libraries, see [`with_libraries`] and [`foreign`]; mode kept, parent directories created.
    pub host_files: &'a [(PathBuf, PathBuf)],
    /// Environment of the command (already validated names).
    pub env: &'a [(String, String)],
    /// Shell script run by `sh -c`.
    pub script: &'a str,
    /// Unique marker printed on ttyS0 before the exit status.
    pub marker: &'a str,
}

/// Writes the initramfs for `guest` to `out`.
pub fn write(out: &Path, guest: &Guest<'_>) -> Result<()> {
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut cpio = Newc::new(BufWriter::new(file));
    for dir in DIRS {
        cpio.dir(dir, 0o755)?;
    }
    if let Some(config) = guest.kconfig {
        let name = config
            .file_name()
            .and_then(|n| n.to_str())
            .context("kconfig name")?;
        cpio.file_from(&format!("boot/{name}"), 0o644, config)?;
    }
    // The kernel opens /dev/console for init before anything is mounted.
    cpio.char_dev("dev/console", 0o600, 5, 1)?;
    cpio.file_from("bin/busybox", 0o755, guest.busybox)?;
    cpio.symlink("bin/sh", "busybox")?;
    let mut modules = Vec::new();
    if !guest.modules.is_empty() {
        cpio.dir("lib", 0o755)?;
        cpio.dir("lib/xtask-modules", 0o755)?;
        for m in guest.modules {
            let name = m
                .file_name()
                .and_then(|n| n.to_str())
                .context("module name")?;
            let guest_path = format!("lib/xtask-modules/{name}");
            cpio.file_from(&guest_path, 0o644, m)?;
            modules.push(format!("/{guest_path}"));
        }
    }
    cpio.data(
        "init",
        0o755,
        init_script(guest.marker, guest.ports, &modules).as_bytes(),
    )?;
    cpio.data("etc/xtask-cmd", 0o644, guest.script.as_bytes())?;
    cpio.data("etc/xtask-env", 0o644, env_script(guest.env).as_bytes())?;
    cpio.data(
        "etc/hosts",
        0o644,
        b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n",
    )?;
    cpio.data("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")?;
    cpio.data("etc/group", 0o644, b"root:x:0:\n")?;
    let mut dirs: Vec<String> = DIRS.map(String::from).to_vec();
    if !modules.is_empty() {
        dirs.extend(["lib".to_owned(), "lib/xtask-modules".to_owned()]);
    }
    for (file, guest_path) in guest.host_files {
        let name = guest_path
            .to_str()
            .and_then(|p| p.strip_prefix('/'))
            .with_context(|| {
                format!(
                    "host file {}: not an absolute UTF-8 path",
                    guest_path.display()
                )
            })?;
        let mut parent = String::new();
        for part in name
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |(_, d)| d)
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            if !dirs.contains(&parent) {
                cpio.dir(&parent, 0o755)?;
                dirs.push(parent.clone());
            }
        }
        let mode = std::fs::metadata(file)
            .with_context(|| format!("host file {}", file.display()))?
            .permissions()
            .mode()
            & 0o7777;
        cpio.file_from(name, mode | 0o400, file)?;
    }
    let mut seen = Vec::new();
    for inc in guest.includes {
        let name = include_name(inc)?;
        if seen.contains(&name) {
            bail!("two --include files share the basename {name:?}");
        }
        let mode = std::fs::metadata(inc)
            .with_context(|| format!("--include {}", inc.display()))?
            .permissions()
            .mode()
            & 0o7777;
        cpio.file_from(&name, mode | 0o400, inc)?;
        seen.push(name);
    }
    cpio.finish()?;
    Ok(())
}

/// The guest name (`/` + basename) of an `--include`, checked.
fn include_name(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).with_context(|| format!("--include {}", path.display()))?;
    if !meta.is_file() {
        bail!("--include {}: not a regular file", path.display());
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("--include {}: no UTF-8 file name", path.display()))?
        .to_owned();
    if RESERVED.contains(&name.as_str()) {
        bail!(
            "--include {}: the guest needs /{name} itself",
            path.display()
        );
    }
    Ok(name)
}

/// `export NAME='value'` lines, sourced by `/init`.
fn env_script(env: &[(String, String)]) -> String {
    env.iter()
        .map(|(k, v)| format!("export {k}={}\n", super::shell_quote(v)))
        .collect()
}

/// The guest's `/init`. `ports[0]` (ttyS0, ttyAMA0) is the console (kernel messages, init's own
/// complaints, the exit marker), `ports[1]` the command's stdout, `ports[2]` its stderr; both set
/// raw so bytes pass unchanged. `modules` are loaded first, in order.
fn init_script(marker: &str, ports: [&str; 3], modules: &[String]) -> String {
    let [console, out, err] = ports;
    let insmod: String = modules
        .iter()
        .map(|m| format!("insmod {m} || echo \"init: insmod {m} failed\" >/dev/{console}\n"))
        .collect();
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/:/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
hostname sendfile-vm
ip link set lo up
{insmod}stty -F /dev/{out} raw -echo
stty -F /dev/{err} raw -echo
. /etc/xtask-env
cd /
echo "{marker}-START $(cut -d' ' -f1 /proc/uptime)" >/dev/{console}
sh -c "$(cat /etc/xtask-cmd)" </dev/null >/dev/{out} 2>/dev/{err}
rc=$?
# Setting a mode waits (TCSADRAIN) until everything written so far has left the port.
stty -F /dev/{out} raw
stty -F /dev/{err} raw
echo "{marker} $rc" >/dev/{console}
stty -F /dev/{console} -echo
poweroff -f
"#
    )
}

/// A minimal writer of the "newc" cpio format that the kernel unpacks.
struct Newc<W: Write> {
    out: W,
    written: u64,
    ino: u32,
}

impl<W: Write> Newc<W> {
    fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            ino: 1,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..n])
    }

    fn header(
        &mut self,
        name: &str,
        mode: u32,
        size: u64,
        rdev: (u32, u32),
        mtime: u32,
    ) -> Result<()> {
        let size = u32::try_from(size).context("file too large for a newc cpio (4 GiB)")?;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let ino = self.ino;
        self.ino += 1;
        let fields = [
            ino,
            mode,
            0,
            0,
            nlink,
            mtime,
            size,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        let mut h = String::from("070701");
        for f in fields {
            h.push_str(&format!("{f:08X}"));
        }
        self.put(h.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        Ok(())
    }

    fn dir(&mut self, name: &str, perm: u32) -> Result<()> {
        self.header(name, 0o040000 | perm, 0, (0, 0), 0)
    }

    fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> Result<()> {
        self.header(name, 0o020000 | perm, 0, (major, minor), 0)
    }

    fn symlink(&mut self, name: &str, target: &str) -> Result<()> {
        self.header(name, 0o120777, target.len() as u64, (0, 0), 0)?;
        self.put(target.as_bytes())?;
        self.pad()?;
        Ok(())
    }

    fn data(&mut self, name: &str, perm: u32, bytes: &[u8]) -> Result<()> {
        self.header(name, 0o100000 | perm, bytes.len() as u64, (0, 0), 0)?;
        self.put(bytes)?;
        self.pad()?;
        Ok(())
    }

    fn file_from(&mut self, name: &str, perm: u32, src: &Path) -> Result<()> {
        let mut f = File::open(src).with_context(|| format!("opening {}", src.display()))?;
        let meta = f.metadata()?;
        let len = meta.len();
        let mtime = u32::try_from(meta.mtime()).unwrap_or(0);
        self.header(name, 0o100000 | perm, len, (0, 0), mtime)?;
        let copied = io::copy(&mut (&mut f).take(len), &mut self.out)?;
        if copied != len {
            bail!("{} changed size while being read", src.display());
        }
        self.written += copied;
        self.pad()?;
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        self.header("TRAILER!!!", 0, 0, (0, 0), 0)?;
        self.out.flush()?;
        Ok(())
    }
}

/// `bins` (absolute paths of host programs) with every shared library and the program
/// interpreter each needs, as `ldd` resolves them on the host; sorted, without duplicates.
pub fn with_libraries(bins: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for bin in bins {
        if !bin.is_absolute() || !bin.is_file() {
            bail!(
                "host binary {}: not an absolute path to a file",
                bin.display()
            );
        }
        out.push(bin.clone());
        if elf_is_dynamic(bin)? != Some(true) {
            continue;
        }
        let ldd = std::process::Command::new("ldd")
            .arg(bin)
            .output()
            .context("running ldd")?;
        if !ldd.status.success() {
            bail!("ldd {} failed", bin.display());
        }
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            // "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x…)", "/lib64/ld-linux….so.2 (0x…)",
            // "linux-vdso.so.1 (0x…)" (in the kernel, no file), "libx.so => not found".
            let line = line.trim();
            let target = line.split_once(" => ").map_or(line, |(_, t)| t);
            if target.starts_with("not found") {
                bail!("{}: {line}", bin.display());
            }
            let path = target.split(" (").next().unwrap_or_default();
            if path.starts_with('/') {
                out.push(PathBuf::from(path));
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Guest files for `bins` (absolute paths of host programs) on a guest of a foreign architecture:
/// the same programs from `machine`'s Debian packages, with the shared libraries and program
/// interpreter they need. The packages are the ones that hold each program and each library
/// `ldd` finds for it on the host (`dpkg -S`), downloaded for that architecture and unpacked
/// into the cache once; libraries are then resolved in that tree from each ELF's `DT_NEEDED`
/// (`readelf -d`, so nothing foreign is run) and placed in `/lib/<multiarch>/`, where the
/// guest's loader looks.
pub fn foreign(
    machine: &super::Machine,
    bins: &[PathBuf],
    cache: &Path,
    tmp: &Path,
) -> Result<Vec<(PathBuf, PathBuf)>> {
    if bins.is_empty() {
        return Ok(Vec::new());
    }
    let mut packages = Vec::new();
    for file in with_libraries(bins)? {
        packages.push(package_of(&file)?);
    }
    let pkgs: Vec<&str> = packages.iter().map(String::as_str).collect();
    let root = super::kernel::foreign_packages(machine, &pkgs, cache, tmp)?;
    let multiarch = match machine.debian_arch {
        "arm64" => "aarch64-linux-gnu",
        "amd64" => "x86_64-linux-gnu",
        other => bail!("no multiarch triplet known for {other}"),
    };
    let lib_dirs = [
        format!("lib/{multiarch}"),
        format!("usr/lib/{multiarch}"),
        "lib".to_owned(),
        "usr/lib".to_owned(),
    ];
    let mut out: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut queue: Vec<PathBuf> = Vec::new();
    for bin in bins {
        let src = in_root(&root, bin).with_context(|| {
            format!(
                "{} is not in the {} packages",
                bin.display(),
                machine.debian_arch
            )
        })?;
        out.push((src.clone(), bin.clone()));
        queue.push(src);
    }
    let mut seen = std::collections::HashSet::new();
    while let Some(elf) = queue.pop() {
        let (needed, interp) = dynamic_info(&elf)?;
        if let Some(interp) = interp {
            let src = in_root(&root, Path::new(&interp))
                .with_context(|| format!("interpreter {interp} not in the packages"))?;
            if seen.insert(interp.clone()) {
                out.push((src, PathBuf::from(interp)));
            }
        }
        for lib in needed {
            if !seen.insert(lib.clone()) {
                continue;
            }
            let src = lib_dirs
                .iter()
                .find_map(|d| in_root(&root, &Path::new("/").join(d).join(&lib)))
                .with_context(|| {
                    format!("{lib} (needed by {}) not in the packages", elf.display())
                })?;
            out.push((
                src.clone(),
                PathBuf::from(format!("/lib/{multiarch}/{lib}")),
            ));
            queue.push(src);
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The Debian package (without `:arch`) that installed host file `file`.
fn package_of(file: &Path) -> Result<String> {
    let mut candidates = vec![file.to_path_buf()];
    if let Ok(c) = std::fs::canonicalize(file) {
        candidates.push(c.clone());
        // Merged /usr: dpkg may know a file by its /lib or by its /usr/lib name.
        if let Ok(rest) = c.strip_prefix("/usr") {
            candidates.push(Path::new("/").join(rest));
        }
    }
    for c in &candidates {
        let out = std::process::Command::new("dpkg")
            .arg("-S")
            .arg(c)
            .output()
            .context("running dpkg -S")?;
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            if let Some((pkg, _)) = text.lines().next().and_then(|l| l.split_once(": ")) {
                let pkg = pkg.split(',').next().unwrap_or(pkg).trim();
                return Ok(pkg.split(':').next().unwrap_or(pkg).to_owned());
            }
        }
    }
    bail!("no Debian package owns {}", file.display())
}

/// `path` (absolute, as the guest sees it) inside the unpacked tree `root`, following symlinks
/// within the tree (absolute targets are taken relative to `root`); `None` if it is not there.
fn in_root(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut p = root.join(path.strip_prefix("/").ok()?);
    for _ in 0..16 {
        let meta = std::fs::symlink_metadata(&p).ok()?;
        if !meta.file_type().is_symlink() {
            return meta.is_file().then_some(p);
        }
        let target = std::fs::read_link(&p).ok()?;
        p = if target.is_absolute() {
            root.join(target.strip_prefix("/").ok()?)
        } else {
            p.parent()?.join(target)
        };
    }
    None
}

/// The `DT_NEEDED` libraries and the program interpreter of ELF `path`, as `readelf` reads them
/// (any architecture).
fn dynamic_info(path: &Path) -> Result<(Vec<String>, Option<String>)> {
    let out = std::process::Command::new("readelf")
        .args(["-d", "-l", "-W"])
        .arg(path)
        .output()
        .context("running readelf (binutils)")?;
    if !out.status.success() {
        bail!("readelf {} failed", path.display());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut needed = Vec::new();
    let mut interp = None;
    for line in text.lines() {
        // " 0x0000000000000001 (NEEDED)             Shared library: [libc.so.6]"
        if line.contains("(NEEDED)")
            && let Some(lib) = line.split('[').nth(1).and_then(|r| r.split(']').next())
        {
            needed.push(lib.to_owned());
        }
        // "      [Requesting program interpreter: /lib/ld-linux-aarch64.so.1]"
        if let Some(rest) = line.split("program interpreter: ").nth(1) {
            interp = rest.split(']').next().map(str::to_owned);
        }
    }
    Ok((needed, interp))
}

/// Whether `path` is an ELF executable with a program interpreter (dynamically linked).
/// `None` when it is not an ELF file at all (a script, say).
pub fn elf_is_dynamic(path: &Path) -> Result<Option<bool>> {
    let mut bytes = Vec::new();
    File::open(path)
        .with_context(|| format!("opening {}", path.display()))?
        .take(1 << 20)
        .read_to_end(&mut bytes)?;
    if bytes.len() < 0x34 || &bytes[..4] != b"\x7fELF" || bytes[5] != 1 {
        return Ok(None);
    }
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let (phoff, phentsize, phnum) = match bytes[4] {
        1 => (u32_at(0x1c).map(|v| v as usize), u16_at(0x2a), u16_at(0x2c)),
        2 => (
            bytes
                .get(0x20..0x28)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize),
            u16_at(0x36),
            u16_at(0x38),
        ),
        _ => return Ok(None),
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (phoff, phentsize, phnum) else {
        return Ok(None);
    };
    for i in 0..phnum {
        match u32_at(phoff + i * phentsize) {
            Some(3) => return Ok(Some(true)), // PT_INTERP
            Some(_) => {}
            None => return Ok(None),
        }
    }
    Ok(Some(false))
}
