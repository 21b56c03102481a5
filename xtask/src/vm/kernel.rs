//! Debian kernels and host tools from apt: fetched once into `target/vm-cache/`, never installed
//! as the host's kernel.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Once;

use anyhow::{Context, Result, bail};

use super::Machine;

/// Package used when apt cannot list candidates (measured to work, 2026-11/12).
fn fallback_package(debian_arch: &str, kernel: &str) -> Option<String> {
    match kernel {
        "6.1" => Some(format!("linux-image-6.1.0-56-{debian_arch}")),
        "6.12" => Some(format!("linux-image-6.12.117+deb12-{debian_arch}")),
        _ => None,
    }
}

/// The sort key of a `linux-image-*-<arch>` package name if it belongs to `kernel`:
/// 6.1 is `linux-image-6.1.0-<abi>-amd64`, 6.12 is `linux-image-6.12.<n>+deb<d>-amd64` (`arm64`
/// in place of `amd64` for arm64).
fn package_key(debian_arch: &str, kernel: &str, name: &str) -> Option<(u64, u64)> {
    let mid = name
        .strip_prefix("linux-image-")?
        .strip_suffix(debian_arch)?
        .strip_suffix('-')?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match kernel {
        "6.1" => {
            let abi = mid.strip_prefix("6.1.0-")?;
            all_digits(abi).then(|| (abi.parse().ok().unwrap_or(0), 0))
        }
        "6.12" => {
            let (sub, deb) = mid.strip_prefix("6.12.")?.split_once("+deb")?;
            (all_digits(sub) && all_digits(deb))
                .then(|| (sub.parse().unwrap_or(0), deb.parse().unwrap_or(0)))
        }
        _ => None,
    }
}

/// The newest package apt knows for `kernel` of `debian_arch`, if any.
fn newest_package(debian_arch: &str, kernel: &str) -> Option<String> {
    let out = Command::new("apt-cache")
        .args(["pkgnames", "linux-image-6."])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|n| {
            package_key(debian_arch, kernel, n.trim()).map(|k| (k, n.trim().to_owned()))
        })
        .max()
        .map(|(_, n)| n)
}

static APT_UPDATE: Once = Once::new();

/// Runs `apt-get update` at most once per process.
fn apt_update() {
    APT_UPDATE.call_once(|| {
        eprintln!("xtask vm: apt-get update");
        let _ = Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status();
    });
}

/// Runs an apt command quietly; on failure returns its output as the error.
fn apt(cmd: &str, args: &[&str], dir: Option<&Path>) -> Result<()> {
    let mut c = Command::new(cmd);
    c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    if let Some(dir) = dir {
        c.current_dir(dir);
    }
    let out = c
        .output()
        .with_context(|| format!("running {cmd} (is this a Debian-like host?)"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Finds `prog` on PATH.
pub fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.is_file())
}

/// The `vmlinuz-*` under an unpacked package root.
fn vmlinuz_in(root: &Path) -> Option<PathBuf> {
    std::fs::read_dir(root.join("boot"))
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
}

/// Whether dpkg knows `debian_arch` (the host's own or a foreign one it was told about).
fn dpkg_has_arch(debian_arch: &str) -> bool {
    let out = |args: &[&str]| {
        Command::new("dpkg")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    out(&["--print-architecture"]).trim() == debian_arch
        || out(&["--print-foreign-architectures"])
            .lines()
            .any(|l| l.trim() == debian_arch)
}

static FOREIGN_UPDATE: Once = Once::new();

/// Makes apt see the packages of `debian_arch` (`dpkg --add-architecture`, then one
/// `apt-get update`); only downloads use them, nothing of that architecture is installed.
fn ensure_dpkg_arch(debian_arch: &str) -> Result<()> {
    if dpkg_has_arch(debian_arch) {
        return Ok(());
    }
    eprintln!("xtask vm: dpkg --add-architecture {debian_arch} (for downloads only)");
    apt("dpkg", &["--add-architecture", debian_arch], None)?;
    let mut result = Ok(());
    FOREIGN_UPDATE.call_once(|| {
        result = apt(
            "apt-get",
            &["-o", "DPkg::Lock::Timeout=600", "update", "-q"],
            None,
        );
    });
    result
}

/// `name:arch` for apt when `machine` is not the host's architecture.
fn qualified(machine: &Machine, name: &str) -> String {
    if machine.debian_arch == host_debian_arch() {
        name.to_owned()
    } else {
        format!("{name}:{}", machine.debian_arch)
    }
}

/// The host's Debian architecture.
fn host_debian_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    }
}

/// Downloads `packages` of `machine`'s architecture and unpacks them all into one tree,
/// `cache/<debian_arch>-packages/<names>/`, once; returns that tree.
pub fn foreign_packages(
    machine: &Machine,
    packages: &[&str],
    cache: &Path,
    tmp: &Path,
) -> Result<PathBuf> {
    let mut sorted = packages.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let key = sorted.join("+");
    let key = if key.len() > 100 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        format!("set-{:016x}", h.finish())
    } else {
        key
    };
    let root = cache
        .join(format!("{}-packages", machine.debian_arch))
        .join(key);
    if root.join(".complete").is_file() {
        return Ok(root);
    }
    ensure_dpkg_arch(machine.debian_arch)?;
    let dl = tmp.join("download");
    std::fs::create_dir_all(&dl)?;
    let names: Vec<String> = sorted.iter().map(|p| qualified(machine, p)).collect();
    let args: Vec<&str> = ["download", "-q"]
        .into_iter()
        .chain(names.iter().map(String::as_str))
        .collect();
    eprintln!(
        "xtask vm: fetching {} into {}",
        names.join(" "),
        root.display()
    );
    if apt("apt-get", &args, Some(&dl)).is_err() {
        apt_update();
        apt("apt-get", &args, Some(&dl))?;
    }
    let staging = root.with_extension(format!("part.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    for deb in std::fs::read_dir(&dl)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
    {
        apt(
            "dpkg",
            &[
                "-x",
                deb.to_str().context("non-UTF-8 path")?,
                staging.to_str().context("non-UTF-8 path")?,
            ],
            None,
        )?;
    }
    std::fs::write(staging.join(".complete"), "")?;
    let _ = std::fs::remove_dir_all(&root);
    if std::fs::rename(&staging, &root).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    Ok(root)
}

/// Kernel modules a guest loads (in this order) before it can use its virtio consoles, when
/// the kernel builds them as modules (Debian arm64 6.1 does; 6.12 builds them in).
const CONSOLE_MODULES: [&str; 4] = [
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_console",
];

/// The `.ko` files of [`CONSOLE_MODULES`] that the kernel of `vmlinuz` has as modules, in load
/// order (empty when they are built in, or for compressed modules busybox cannot load).
pub fn console_modules(vmlinuz: &Path) -> Vec<PathBuf> {
    let Some(root) = vmlinuz.parent().and_then(Path::parent) else {
        return Vec::new();
    };
    let Some(release) = vmlinuz
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
    else {
        return Vec::new();
    };
    let kernel = root.join("lib/modules").join(release).join("kernel");
    let mut found = Vec::new();
    for name in CONSOLE_MODULES {
        let file = format!("{name}.ko");
        for dir in ["drivers/virtio", "drivers/char"] {
            let p = kernel.join(dir).join(&file);
            if p.is_file() {
                found.push(p);
            }
        }
    }
    found
}

/// Downloads and unpacks the newest `linux-image` package of `kernel` (6.1 or 6.12) for
/// `machine` into `cache/<kernel>/root` (`cache/<arch>-<kernel>/root` for a foreign one) unless
/// it is there already; returns the vmlinuz path.
pub fn ensure(machine: &Machine, kernel: &str, cache: &Path, tmp: &Path) -> Result<PathBuf> {
    let arch = machine.debian_arch;
    let fallback =
        fallback_package(arch, kernel).with_context(|| format!("unknown VM kernel {kernel:?}"))?;
    let dir = if arch == "amd64" {
        cache.join(kernel)
    } else {
        cache.join(format!("{arch}-{kernel}"))
    };
    let root = dir.join("root");
    if let Some(v) = vmlinuz_in(&root) {
        return Ok(v);
    }
    ensure_dpkg_arch(arch)?;
    // A tree without a kernel is debris of an interrupted run.
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&dir)?;
    let package = newest_package(arch, kernel)
        .or_else(|| {
            apt_update();
            newest_package(arch, kernel)
        })
        .unwrap_or_else(|| fallback.clone());
    eprintln!(
        "xtask vm: fetching {package} (about 70 MB) into {}",
        dir.display()
    );
    let dl = tmp.join("download");
    std::fs::create_dir_all(&dl)?;
    let download = |p: &str| {
        apt(
            "apt-get",
            &["download", "-q", &qualified(machine, p)],
            Some(&dl),
        )
    };
    let mut got = download(&package);
    if got.is_err() {
        apt_update();
        got = download(&package);
    }
    let package = if got.is_err() && package != fallback {
        download(&fallback)
            .with_context(|| format!("downloading {package}: {:#}", got.unwrap_err()))?;
        fallback
    } else {
        got?;
        package
    };
    let deb = std::fs::read_dir(&dl)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    // Unpack beside the cache and rename into place, so concurrent runs never see half a tree.
    let staging = dir.join(format!("root.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    apt(
        "dpkg",
        &[
            "-x",
            deb.to_str().context("non-UTF-8 path")?,
            staging.to_str().context("non-UTF-8 path")?,
        ],
        None,
    )?;
    std::fs::remove_file(&deb)?;
    if vmlinuz_in(&staging).is_none() {
        let _ = std::fs::remove_dir_all(&staging);
        bail!("{package} has no /boot/vmlinuz-*");
    }
    if std::fs::rename(&staging, &root).is_err() {
        // Another run won the race; use its tree.
        let _ = std::fs::remove_dir_all(&staging);
    }
    std::fs::write(dir.join("package"), format!("{package}\n"))?;
    vmlinuz_in(&root).context("kernel cache vanished")
}

/// The `config-*` beside `vmlinuz`, if any.
pub fn kconfig_of(vmlinuz: &Path) -> Option<PathBuf> {
    let name = vmlinuz.file_name()?.to_str()?;
    let config = vmlinuz.with_file_name(name.replacen("vmlinuz-", "config-", 1));
    config.is_file().then_some(config)
}

/// The image QEMU should boot: the uncompressed ELF `vmlinux` next to the cache when it can be
/// made (booted through PVH it skips the in-guest decompression, which under TCG costs about
/// 2.3 s for the XZ-compressed 6.1 kernel), else `vmlinuz` itself.
pub fn boot_image(vmlinuz: &Path) -> PathBuf {
    let dir = vmlinuz
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent);
    let name = vmlinuz.file_name().and_then(|n| n.to_str());
    let (Some(dir), Some(name)) = (dir, name) else {
        return vmlinuz.to_path_buf();
    };
    // Named by release, so a refreshed cache never boots a stale extraction.
    let vmlinux = dir.join(name.replacen("vmlinuz-", "vmlinux-", 1));
    if vmlinux.is_file() {
        return vmlinux;
    }
    let failed = dir.join(format!("{name}.unavailable"));
    if failed.exists() {
        return vmlinuz.to_path_buf();
    }
    match extract_vmlinux(vmlinuz, &vmlinux) {
        Ok(()) => vmlinux,
        Err(e) => {
            eprintln!("xtask vm: booting the compressed kernel ({e:#})");
            let _ = std::fs::write(&failed, format!("{e:#}\n"));
            vmlinuz.to_path_buf()
        }
    }
}

/// Decompresses the payload of bzImage `vmlinuz` into the ELF `out` (atomically).
fn extract_vmlinux(vmlinuz: &Path, out: &Path) -> Result<()> {
    let pvh = kconfig_of(vmlinuz)
        .and_then(|c| std::fs::read_to_string(c).ok())
        .is_some_and(|c| c.lines().any(|l| l == "CONFIG_PVH=y"));
    if !pvh {
        bail!("kernel not built with CONFIG_PVH");
    }
    let image = std::fs::read(vmlinuz)?;
    let u32_at = |o: usize| {
        image
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    if image.get(0x202..0x206) != Some(b"HdrS") {
        bail!("not a bzImage");
    }
    let setup_sects = match image[0x1f1] {
        0 => 4,
        n => n as usize,
    };
    let start = (setup_sects + 1) * 512 + u32_at(0x248).context("short bzImage")?;
    let len = u32_at(0x24c).context("short bzImage")?;
    let payload = image
        .get(start..start + len)
        .context("payload outside the bzImage")?;
    // The build appends the uncompressed size to every compressed payload.
    let size = u32_at(start + len - 4).context("short payload")?;
    let tool: &[&str] = match payload {
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => &["xz", "-dc"],
        [0x28, 0xb5, 0x2f, 0xfd, ..] => &["zstd", "-dcq"],
        [0x1f, 0x8b, ..] => &["gzip", "-dc"],
        _ => bail!("unknown payload compression"),
    };
    let mut tmp = out.as_os_str().to_owned();
    tmp.push(format!(".part.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let file = std::fs::File::create(&tmp)?;
    let mut child = Command::new(tool[0])
        .args(&tool[1..])
        .stdin(Stdio::piped())
        .stdout(file)
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("running {}", tool[0]))?;
    let mut stdin = child.stdin.take().context("decompressor stdin")?;
    // The size trailer makes some decompressors complain; the size check below decides.
    let _ = std::io::Write::write_all(&mut stdin, payload);
    drop(stdin);
    let _ = child.wait()?;
    let got = std::fs::metadata(&tmp)?.len() as usize;
    let mut magic = [0u8; 4];
    let elf = std::fs::File::open(&tmp)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && &magic == b"\x7fELF";
    if got != size || !elf {
        let _ = std::fs::remove_file(&tmp);
        bail!(
            "{} produced {got} bytes, expected an ELF of {size}",
            tool[0]
        );
    }
    std::fs::rename(&tmp, out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::package_key as key;

    fn package_key(kernel: &str, name: &str) -> Option<(u64, u64)> {
        key("amd64", kernel, name)
    }

    #[test]
    fn arm64_package_names() {
        assert_eq!(
            key("arm64", "6.12", "linux-image-6.12.117+deb12-arm64"),
            Some((117, 12))
        );
        assert_eq!(
            key("arm64", "6.1", "linux-image-6.1.0-56-arm64"),
            Some((56, 0))
        );
        assert_eq!(
            key(
                "arm64",
                "6.12",
                "linux-image-6.12.117+deb12-arm64-16k-unsigned"
            ),
            None
        );
        assert_eq!(key("arm64", "6.1", "linux-image-6.1.0-56-amd64"), None);
        assert_eq!(key("amd64", "6.1", "linux-image-6.1.0-56-arm64"), None);
    }

    #[test]
    fn package_names() {
        assert_eq!(
            package_key("6.1", "linux-image-6.1.0-56-amd64"),
            Some((56, 0))
        );
        assert_eq!(package_key("6.1", "linux-image-6.1.0-56-rt-amd64"), None);
        assert_eq!(package_key("6.1", "linux-image-6.1.0-56-cloud-amd64"), None);
        assert_eq!(package_key("6.12", "linux-image-6.1.0-56-amd64"), None);
        assert_eq!(
            package_key("6.12", "linux-image-6.12.117+deb12-amd64"),
            Some((117, 12))
        );
        assert_eq!(
            package_key("6.12", "linux-image-6.12.117+deb12-rt-amd64"),
            None
        );
        assert_eq!(package_key("6.1", "linux-image-6.12.117+deb12-amd64"), None);
    }
}
