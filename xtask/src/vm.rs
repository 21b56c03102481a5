//! `cargo xtask vm [--arch x86_64|aarch64] --kernel <6.1|6.12|host> [--hook H] [--include FILE]...
//! [--timeout SECS] -- COMMAND...`: boot a Debian kernel under QEMU (TCG) and run one command
//! inside it, or run it on the host (`--kernel host`) through the same interface. Exits with the
//! command's status.
//!
//! - Kernels: the newest `linux-image-6.1.0-*-amd64` / `linux-image-6.12.*+deb*-amd64` apt
//!   knows (`-arm64`, from the `arm64` foreign architecture, with `--arch aarch64`),
//!   `apt-get download`ed and `dpkg -x`ed once into `target/vm-cache/<kernel>/root`
//!   (`aarch64-<kernel>` for arm64); an x86 payload is decompressed once to `vmlinux-<release>`
//!   and booted through PVH (saves ~2 s of XZ decompression under TCG on 6.1). QEMU and
//!   busybox-static (`:arm64`, unpacked into the cache, for arm64 guests) are apt-installed if
//!   missing. Delete `target/vm-cache/<kernel>` to pick up a newer kernel.
//! - arm64 guests: `qemu-system-aarch64 -M virt -cpu max` (which also runs AArch32 code at EL0,
//!   so 32-bit compat binaries work), the PL011 UART as the console and two virtio consoles
//!   (`/dev/hvc0`, `/dev/hvc1`) for stdout and stderr; on kernels that build virtio-pci and
//!   virtio-console as modules (6.1) they are loaded from the kernel package first.
//! - Guest: an initramfs with static busybox; proc, sysfs, devtmpfs, tmpfs (/tmp, /run),
//!   tracefs, debugfs, bpffs and cgroup2 mounted, `lo` up (127.0.0.1 and ::1), the kernel's
//!   config at `/boot/config-<release>`, cwd `/`, PATH `/:/bin:/sbin:/usr/bin:/usr/sbin`.
//!   `--include` files land at `/` + basename (mode kept; must be static binaries). On the host
//!   they are copied to a temporary directory put first on PATH, so call them by bare name.
//!   `--host-binary /usr/sbin/nginx` copies a dynamically linked host program to the same path
//!   in the guest, with the shared libraries and program interpreter `ldd` resolves for it.
//! - Environment: `SENDFILE_TRACE_KERNEL=<6.1|6.12|host>`, `SENDFILE_TRACE_IN_VM=1` (guest
//!   only), `SENDFILE_TRACE_HOOK=H` with `--hook`.
//! - Command: run as `sh -c SCRIPT` (see [`shell_script`]), stdin `/dev/null`.
//! - Output: stdout and stderr travel on serial ports of their own (ttyS1, ttyS2 on x86; hvc0,
//!   hvc1 on arm64; raw, so bytes pass unchanged) and come out live and separate on the runner's
//!   stdout and stderr. ttyS0 (ttyAMA0) is the console (`quiet loglevel=1`): it carries the exit marker; anything else on it (a kernel
//!   emergency, an oops: `oops=panic` is set) is shown on stderr prefixed `vm console:`.
//! - Failure: a VM that panics, never reports, or outlives `--timeout` (default 600 s, QEMU
//!   killed) is an error carrying the last 40 lines of all ports.

mod initramfs;
mod kernel;

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Kernels `--kernel` accepts; `host` runs the command without a VM.
pub const KERNELS: &[&str] = &["6.1", "6.12", "host"];

/// Guest architectures `--arch` accepts (Rust `target_arch` names).
pub const ARCHES: &[&str] = &["x86_64", "aarch64"];

/// How the guests of one architecture boot.
pub struct Machine {
    /// QEMU binary.
    pub qemu: &'static str,
    /// Debian package that has it.
    pub qemu_package: &'static str,
    /// Machine and CPU arguments.
    pub args: &'static str,
    /// Debian's name of the architecture (kernel package suffix, `:arch` qualifier).
    pub debian_arch: &'static str,
    /// Guest devices: console, the command's stdout, its stderr.
    pub ports: [&'static str; 3],
}

/// The machine of `arch` (one of [`ARCHES`]).
pub fn machine(arch: &str) -> Result<&'static Machine> {
    // Single-threaded TCG: with one host thread per vCPU (MTTCG, QEMU 7.2) a 6.12 boot once died
    // of "Oops: int3" in patched kernel text (a vCPU ran a stale translation of a text_poke),
    // and kprobes patch text the same way. It costs about 0.2 s of boot.
    static X86_64: Machine = Machine {
        qemu: "qemu-system-x86_64",
        qemu_package: "qemu-system-x86",
        args: "-accel tcg,thread=single -cpu max",
        debian_arch: "amd64",
        ports: ["ttyS0", "ttyS1", "ttyS2"],
    };
    // `virt` has one UART; stdout and stderr go to virtio consoles. `-cpu max` includes AArch32
    // at EL0. Single-threaded TCG for the same reason as on x86 (kprobes patch kernel text).
    static AARCH64: Machine = Machine {
        qemu: "qemu-system-aarch64",
        qemu_package: "qemu-system-arm",
        args: "-M virt -accel tcg,thread=single -cpu max",
        debian_arch: "arm64",
        ports: ["ttyAMA0", "hvc0", "hvc1"],
    };
    match arch {
        "x86_64" => Ok(&X86_64),
        "aarch64" => Ok(&AARCH64),
        _ => bail!(
            "unknown architecture {arch:?}; expected one of {}",
            ARCHES.join(", ")
        ),
    }
}

/// How many lines of serial output a failure shows.
const TAIL_LINES: usize = 40;

/// How long QEMU may take to power off after the command reported its status.
const POWEROFF_GRACE: Duration = Duration::from_secs(10);

/// Arguments of `cargo xtask vm`.
#[derive(clap::Args, Debug)]
pub struct VmArgs {
    /// Guest architecture: x86_64 or aarch64 (arm64, emulated).
    #[arg(long, default_value = "x86_64", value_parser = clap::builder::PossibleValuesParser::new(ARCHES))]
    pub arch: String,
    /// Kernel to boot: 6.1 or 6.12 (Debian, under QEMU), or host (no VM).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(KERNELS))]
    pub kernel: String,
    /// Sets SENDFILE_TRACE_HOOK for the command.
    #[arg(long)]
    pub hook: Option<String>,
    /// File copied into the guest at / + its basename, mode kept (repeatable). With
    /// `--kernel host` the files go to a temporary directory put first on PATH.
    #[arg(long = "include", value_name = "FILE")]
    pub includes: Vec<PathBuf>,
    /// A dynamically linked host program (absolute path) copied into the guest at the same path,
    /// with the shared libraries `ldd` finds for it (repeatable). Ignored with `--kernel host`.
    #[arg(long = "host-binary", value_name = "PATH")]
    pub host_binaries: Vec<PathBuf>,
    /// Seconds before the VM (or host command) is killed and the run fails.
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    pub timeout: u64,
    /// The command: one argument is a shell script, several are a quoted argv.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Entry point of `cargo xtask vm`; returns the command's exit status.
pub fn run(args: VmArgs) -> Result<i32> {
    let mut env = Vec::new();
    if let Some(hook) = args.hook {
        env.push(("SENDFILE_TRACE_HOOK".to_owned(), hook));
    }
    run_in_vm(
        &args.arch,
        &args.kernel,
        &args.includes,
        &args.host_binaries,
        &env,
        &args.command,
        Duration::from_secs(args.timeout),
    )
}

/// The workspace root (parent of the xtask crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// `<workspace>/target/vm-cache`, where kernels and temporary files live.
pub fn cache_dir() -> PathBuf {
    workspace_root().join("target").join("vm-cache")
}

/// Returns the vmlinuz of Debian kernel `kernel` (6.1 or 6.12) for `arch`, downloading it if
/// needed.
pub fn ensure_kernel(arch: &str, kernel: &str) -> Result<PathBuf> {
    let tmp = TempDir::new()?;
    kernel::ensure(machine(arch)?, kernel, &cache_dir(), &tmp.path)
}

/// Runs `command` (see [`shell_script`]) with `env` and `includes` under `kernel` (6.1, 6.12 or
/// host) of `arch`, failing after `timeout`; returns the command's exit status. `host_binaries`
/// (with their libraries) are copied into the guest at their own paths; for a foreign `arch`
/// they are taken from that architecture's Debian packages (see [`initramfs::foreign`]).
pub fn run_in_vm(
    arch: &str,
    kernel: &str,
    includes: &[PathBuf],
    host_binaries: &[PathBuf],
    env: &[(String, String)],
    command: &[String],
    timeout: Duration,
) -> Result<i32> {
    if !KERNELS.contains(&kernel) {
        bail!(
            "unknown kernel {kernel:?}; expected one of {}",
            KERNELS.join(", ")
        );
    }
    let script = shell_script(command)?;
    let mut full_env = env.to_vec();
    if kernel != "host" {
        full_env.push(("SENDFILE_TRACE_IN_VM".into(), "1".into()));
    }
    full_env.push(("SENDFILE_TRACE_KERNEL".into(), kernel.into()));
    for (k, _) in &full_env {
        if !is_var_name(k) {
            bail!("invalid environment variable name {k:?}");
        }
    }
    for inc in includes {
        if !inc.is_file() {
            bail!("--include {}: not a regular file", inc.display());
        }
        if kernel != "host" && initramfs::elf_is_dynamic(inc)? == Some(true) {
            eprintln!(
                "xtask vm: warning: {} is dynamically linked; only --host-binary brings its \
                 libraries",
                inc.display()
            );
        }
    }
    let machine = machine(arch)?;
    if kernel == "host" {
        if arch != std::env::consts::ARCH {
            bail!(
                "--kernel host runs on this {} host, not on {arch}",
                std::env::consts::ARCH
            );
        }
        run_on_host(includes, &full_env, &script, timeout)
    } else {
        let host_files = if arch == std::env::consts::ARCH {
            initramfs::with_libraries(host_binaries)?
                .into_iter()
                .map(|p| (p.clone(), p))
                .collect()
        } else {
            let tmp = TempDir::new()?;
            initramfs::foreign(machine, host_binaries, &cache_dir(), &tmp.path)?
        };
        run_qemu(
            machine,
            arch,
            kernel,
            includes,
            &host_files,
            &full_env,
            &script,
            timeout,
        )
    }
}

/// The `sh -c` script for `command`: a single argument is used as a script as it is (so
/// `-- 'a | b; exit 3'` works), several are quoted and joined (so `-- sh -c 'x y'` keeps its argv);
/// leading `NAME=value` arguments stay variable assignments (only their value is quoted).
pub fn shell_script(command: &[String]) -> Result<String> {
    match command {
        [] => bail!("no command given"),
        [one] => Ok(one.clone()),
        many => {
            let mut words = Vec::new();
            let mut assigning = true;
            for arg in many {
                let assignment = arg
                    .split_once('=')
                    .filter(|(name, _)| assigning && is_var_name(name));
                match assignment {
                    Some((name, value)) => words.push(format!("{name}={}", shell_quote(value))),
                    None => {
                        assigning = false;
                        words.push(shell_quote(arg));
                    }
                }
            }
            Ok(words.join(" "))
        }
    }
}

/// Whether `s` is a valid shell variable name.
fn is_var_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:,+@%".contains(&b));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A unique directory under `target/vm-cache/tmp`, removed on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new() -> Result<Self> {
        let base = cache_dir().join("tmp");
        std::fs::create_dir_all(&base).with_context(|| format!("creating {}", base.display()))?;
        // Leftovers of runs that were killed: their pid is gone.
        if let Ok(entries) = std::fs::read_dir(&base) {
            for e in entries.filter_map(|e| e.ok()) {
                let name = e.file_name();
                let pid = name.to_str().and_then(|n| n.split('-').next());
                if pid.is_some_and(|p| !Path::new("/proc").join(p).exists()) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let path = base.join(format!("{}-{}", std::process::id(), nonce()));
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// 16 random hex digits.
fn nonce() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// Shell-style exit code of a finished process (128 + signal when killed).
fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// Sends SIGKILL to `child`'s process group (it leads one) and to `child` itself.
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
}

/// `--kernel host`: runs the script with the host's `sh`, includes first on PATH.
fn run_on_host(
    includes: &[PathBuf],
    env: &[(String, String)],
    script: &str,
    timeout: Duration,
) -> Result<i32> {
    let tmp = TempDir::new()?;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .envs(env.iter().map(|(k, v)| (k, v)));
    if !includes.is_empty() {
        let bin = tmp.path.join("bin");
        std::fs::create_dir(&bin)?;
        for inc in includes {
            let name = inc.file_name().context("--include without a file name")?;
            std::fs::copy(inc, bin.join(name))
                .with_context(|| format!("copying {}", inc.display()))?;
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![bin];
        dirs.extend(std::env::split_paths(&path));
        cmd.env("PATH", std::env::join_paths(dirs)?);
    }
    let mut child = cmd.process_group(0).spawn().context("running sh")?;
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(exit_code(status));
        }
        if start.elapsed() >= timeout {
            kill_group(&mut child);
            let _ = child.wait();
            bail!(
                "command timed out after {} s on the host",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Installs QEMU for `machine` if it is missing; returns its path.
fn ensure_qemu(machine: &Machine) -> Result<PathBuf> {
    if let Some(q) = kernel::which(machine.qemu) {
        return Ok(q);
    }
    crate::tools::apt_install(&[machine.qemu_package])?;
    kernel::which(machine.qemu).with_context(|| format!("{} not found after install", machine.qemu))
}

/// Finds a statically linked busybox for `machine`: the host's for the host's architecture
/// (installing busybox-static if there is none), else busybox-static of that architecture
/// unpacked into the cache.
fn ensure_busybox(machine: &Machine, arch: &str) -> Result<PathBuf> {
    if arch != std::env::consts::ARCH {
        let tmp = TempDir::new()?;
        let root = kernel::foreign_packages(machine, &["busybox-static"], &cache_dir(), &tmp.path)?;
        let b = root.join("bin/busybox");
        return if b.is_file() {
            Ok(b)
        } else {
            bail!("busybox-static:{} has no bin/busybox", machine.debian_arch)
        };
    }
    let find = || {
        ["/bin/busybox", "/usr/bin/busybox"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file() && matches!(initramfs::elf_is_dynamic(p), Ok(Some(false))))
    };
    if let Some(b) = find() {
        return Ok(b);
    }
    crate::tools::apt_install(&["busybox-static"])?;
    find().context("no static busybox in /bin after installing busybox-static")
}

/// The last lines of all serial output, for error messages.
#[derive(Clone, Default)]
struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    fn push(&self, tag: &str, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let mut q = self.0.lock().unwrap();
        if q.len() == TAIL_LINES {
            q.pop_front();
        }
        q.push_back(format!("{tag}| {}", line.trim_end_matches(['\r', '\n'])));
    }

    fn render(&self) -> String {
        let q = self.0.lock().unwrap();
        if q.is_empty() {
            return "(no output at all)".into();
        }
        q.iter().map(|l| format!("  {l}\n")).collect()
    }
}

/// Where a serial port's bytes go on the host.
#[derive(Clone, Copy)]
enum Sink {
    Stdout,
    Stderr,
    /// The console: scanned line by line for the marker, anything else shown on stderr.
    Console,
}

/// What the console reader learned.
#[derive(Default)]
struct ConsoleState {
    status: Option<i32>,
    at: Option<Instant>,
}

/// Accepts QEMU's connection on `listener` and pumps the port's bytes to `sink`.
fn serial_reader(
    listener: UnixListener,
    sink: Sink,
    tag: &'static str,
    tail: Tail,
    marker: String,
    console: Arc<Mutex<ConsoleState>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        drop(listener);
        let mut buf = [0u8; 8192];
        let mut line = Vec::new();
        loop {
            let n = match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            match sink {
                Sink::Stdout => {
                    let mut o = std::io::stdout().lock();
                    let _ = o.write_all(chunk).and_then(|_| o.flush());
                }
                Sink::Stderr => {
                    let _ = std::io::stderr().lock().write_all(chunk);
                }
                Sink::Console => {}
            }
            for &b in chunk {
                line.push(b);
                if b == b'\n' {
                    finish_line(&line, sink, tag, &tail, &marker, &console);
                    line.clear();
                }
            }
        }
        if !line.is_empty() {
            finish_line(&line, sink, tag, &tail, &marker, &console);
        }
    })
}

/// Records one complete line of a port; on the console, parses the marker or shows the line.
fn finish_line(
    line: &[u8],
    sink: Sink,
    tag: &str,
    tail: &Tail,
    marker: &str,
    console: &Mutex<ConsoleState>,
) {
    if let Sink::Console = sink {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\r', '\n']);
        if let Some(pos) = text.find(marker) {
            let rest = text[pos + marker.len()..].trim();
            if let Some(uptime) = rest.strip_prefix("-START") {
                let line = format!("(command started, guest uptime{uptime} s)");
                tail.push(tag, line.as_bytes());
                return;
            }
            let mut c = console.lock().unwrap();
            c.status = Some(rest.parse().unwrap_or(1));
            c.at = Some(Instant::now());
            return;
        }
        // After the marker only shutdown noise ("reboot: Power down") follows.
        let done = console.lock().unwrap().status.is_some();
        if !done && !text.trim().is_empty() {
            eprintln!("vm console: {text}");
        }
    }
    tail.push(tag, line);
}

/// Kills QEMU if the runner leaves early.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// How the QEMU run ended.
enum Ending {
    Exited(ExitStatus),
    HungAfterStatus,
    TimedOut,
}

/// Boots `kernel` under QEMU with an initramfs that runs `script`.
#[allow(clippy::too_many_arguments)]
fn run_qemu(
    machine: &Machine,
    arch: &str,
    kernel: &str,
    includes: &[PathBuf],
    host_files: &[(PathBuf, PathBuf)],
    env: &[(String, String)],
    script: &str,
    timeout: Duration,
) -> Result<i32> {
    let qemu = ensure_qemu(machine)?;
    let busybox = ensure_busybox(machine, arch)?;
    let vmlinuz = ensure_kernel(arch, kernel)?;
    let image = if arch == "x86_64" {
        kernel::boot_image(&vmlinuz)
    } else {
        vmlinuz.clone()
    };
    let tmp = TempDir::new()?;
    let marker = format!("XTASK-VM-EXIT-{}", nonce());
    let initrd = tmp.path.join("initramfs.cpio");
    let kconfig = kernel::kconfig_of(&vmlinuz);
    initramfs::write(
        &initrd,
        &initramfs::Guest {
            busybox: &busybox,
            kconfig: kconfig.as_deref(),
            modules: &kernel::console_modules(&vmlinuz),
            ports: machine.ports,
            includes,
            host_files,
            env,
            script,
            marker: &marker,
        },
    )?;

    // Unix socket paths are limited to 108 bytes; fall back to /tmp for deep workspaces.
    let sock_tmp;
    let sock_dir = if tmp.path.as_os_str().len() < 90 {
        &tmp.path
    } else {
        let dir = std::env::temp_dir().join(format!("xtask-vm-{}-{}", std::process::id(), nonce()));
        std::fs::create_dir(&dir)?;
        sock_tmp = TempDir { path: dir };
        &sock_tmp.path
    };
    let tail = Tail::default();
    let console = Arc::new(Mutex::new(ConsoleState::default()));
    let ports = [
        ("console", Sink::Console),
        ("stdout", Sink::Stdout),
        ("stderr", Sink::Stderr),
    ];
    let mut socks = Vec::new();
    let mut readers = Vec::new();
    let mut qemu_cmd = Command::new(&qemu);
    qemu_cmd.args(machine.args.split_whitespace()).args(
        "-smp 2 -m 1G -nodefaults -no-user-config -display none -monitor none -no-reboot -nic none"
            .split_whitespace(),
    );
    if arch != "x86_64" {
        qemu_cmd.args(["-device", "virtio-serial-pci,id=vser"]);
    }
    for (i, (tag, sink)) in ports.into_iter().enumerate() {
        let path = sock_dir.join(format!("ttyS{i}.sock"));
        let listener =
            UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
        readers.push(serial_reader(
            listener,
            sink,
            tag,
            tail.clone(),
            marker.clone(),
            console.clone(),
        ));
        qemu_cmd
            .arg("-chardev")
            .arg(format!("socket,id=s{i},path={}", path.display()));
        if arch == "x86_64" || i == 0 {
            qemu_cmd.arg("-serial").arg(format!("chardev:s{i}"));
        } else {
            qemu_cmd
                .arg("-device")
                .arg(format!("virtconsole,chardev=s{i},bus=vser.0"));
        }
        socks.push(path);
    }
    qemu_cmd
        .arg("-kernel")
        .arg(&image)
        .arg("-initrd")
        .arg(&initrd)
        .arg("-append")
        .arg(format!(
            "console={} panic=-1 quiet loglevel=1 oops=panic",
            machine.ports[0]
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());

    let start = Instant::now();
    let mut child = KillOnDrop(
        qemu_cmd
            .spawn()
            .with_context(|| format!("starting {}", qemu.display()))?,
    );
    let mut qemu_stderr = child.0.stderr.take().context("QEMU stderr")?;
    let qemu_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = qemu_stderr.read_to_string(&mut s);
        s
    });

    let deadline = start + timeout;
    let ending = loop {
        if let Some(status) = child.0.try_wait()? {
            break Ending::Exited(status);
        }
        let reported = console.lock().unwrap().at;
        if reported.is_some_and(|t| t.elapsed() > POWEROFF_GRACE) {
            let _ = child.0.kill();
            let _ = child.0.wait();
            break Ending::HungAfterStatus;
        }
        if Instant::now() >= deadline {
            let _ = child.0.kill();
            let _ = child.0.wait();
            break Ending::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = start.elapsed();
    // Unblock readers whose connection never came (QEMU died early): connect to them ourselves.
    for path in &socks {
        let _ = UnixStream::connect(path);
    }
    for r in readers {
        let _ = r.join();
    }
    let qemu_err = qemu_err.join().unwrap_or_default();
    for l in qemu_err.lines() {
        tail.push("qemu", l.as_bytes());
    }
    if std::env::var_os("XTASK_VM_VERBOSE").is_some() {
        eprintln!(
            "xtask vm: kernel {kernel}: QEMU ran {:.1} s",
            elapsed.as_secs_f64()
        );
    }
    let status = console.lock().unwrap().status;
    match (status, ending) {
        // Once the command has reported, a slow poweroff does not matter.
        (Some(code), _) => Ok(code),
        (None, Ending::Exited(st)) => bail!(
            "VM (kernel {kernel}) ended ({st}) after {:.1} s without reporting the command's exit \
             status (boot failure or panic?). Last serial lines:\n{}",
            elapsed.as_secs_f64(),
            tail.render()
        ),
        (None, Ending::TimedOut | Ending::HungAfterStatus) => bail!(
            "VM (kernel {kernel}) timed out after {} s; QEMU killed. Last serial lines:\n{}",
            timeout.as_secs(),
            tail.render()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::shell_script;

    fn script(args: &[&str]) -> String {
        shell_script(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn scripts() {
        assert_eq!(script(&["echo a; exit 3"]), "echo a; exit 3");
        assert_eq!(script(&["sh", "-c", "exit 3"]), "sh -c 'exit 3'");
        assert_eq!(
            script(&["A=x y", "B=/b", "cmd", "C=d"]),
            "A='x y' B=/b cmd 'C=d'"
        );
        assert_eq!(script(&["echo", "it's", ""]), r"echo 'it'\''s' ''");
    }
}
