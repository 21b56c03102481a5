//! What `cargo xtask dist` ships, tested as a user meets it: the .deb installed with dpkg on this
//! machine (the installed binary traces the real workload, every field compared; the installed
//! unit verified; remove and purge leave what they should), and the OCI image run under
//! containerd + runc with host pid, tracing a workload on the host and one in another container.
//!
//! They need the artefacts, so plain `cargo test` skips them; `cargo xtask test` builds the
//! artefacts and runs them with `--ignored`, with these set:
//! - `SENDFILE_TRACE_DEB`: the .deb for this machine's architecture;
//! - `SENDFILE_TRACE_IMAGE`: the OCI archive, `SENDFILE_TRACE_IMAGE_REF` the image name in it;
//! - `SENDFILE_WORKLOAD_STATIC_BIN`: the static workload (run inside a scratch container).

mod support;

use std::{
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use support::*;

/// The comm the workload has when it does not rename itself.
const DEFAULT_COMM: &[u8] = b"sendfile-worklo";

/// A path from the environment that `cargo xtask test` sets.
fn env_path(var: &str) -> PathBuf {
    let p = PathBuf::from(std::env::var_os(var).unwrap_or_else(|| {
        panic!(
            "{var} is not set: run these tests with `cargo xtask test`, which builds the artefacts"
        )
    }));
    assert!(p.is_file(), "{var}={} is not a file", p.display());
    p
}

/// Runs a command to completion, failing the test with its output if it fails.
fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `dpkg ARGS`, waiting (up to 10 min) while another dpkg or apt holds the lock.
fn dpkg(args: &[&str]) -> Output {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let out = Command::new("dpkg")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .expect("cannot run dpkg");
        let err = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && err.contains("lock") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_secs(2));
            continue;
        }
        assert!(
            out.status.success(),
            "dpkg {args:?} failed ({}):\n{}{err}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
        return out;
    }
}

/// dpkg's status of the package: "" when dpkg does not know it.
fn package_status() -> String {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "sendfile-trace"])
        .output()
        .expect("cannot run dpkg-query");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Purges the package if a failed test left it installed (the machine is left as found).
struct PurgeOnDrop;

impl Drop for PurgeOnDrop {
    fn drop(&mut self) {
        if !package_status().is_empty() {
            let _ = Command::new("dpkg").args(["-P", "sendfile-trace"]).status();
        }
    }
}

/// Paths the package would create that do not exist now (directories like /usr/bin exist and
/// stay; everything else must go with it).
fn new_paths(deb: &Path) -> Vec<PathBuf> {
    // `dpkg-deb -c`: tar's verbose listing, the path last (no names with spaces here).
    let out = run(Command::new("dpkg-deb").arg("-c").arg(deb));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| PathBuf::from(p.trim_start_matches('.').trim_end_matches('/')))
        .filter(|p| p.as_os_str().len() > 1 && !p.exists())
        .collect()
}

/// Paths the package's scripts or systemd may have made, which purge must remove too.
const MADE_BY_SCRIPTS: [&str; 3] = [
    "/etc/systemd/system/multi-user.target.wants/sendfile-trace.service",
    "/var/log/sendfile-trace",
    "/var/log/private/sendfile-trace",
];

#[test]
#[ignore = "needs the .deb: cargo xtask test builds it and runs this"]
fn deb_installs_traces_verifies_and_purges_without_leftovers() {
    let _serial = serial();
    require_root();
    let deb = env_path("SENDFILE_TRACE_DEB");
    assert_eq!(
        package_status(),
        "",
        "sendfile-trace is already known to dpkg on this machine; this test installs and purges \
         its own copy: purge it first (dpkg -P sendfile-trace)"
    );
    for p in MADE_BY_SCRIPTS {
        assert!(
            std::fs::symlink_metadata(p).is_err(),
            "{p} exists before the install"
        );
    }
    let created = new_paths(&deb);
    let bin = Path::new("/usr/bin/sendfile-trace");
    let conffile = Path::new("/etc/sendfile-trace/config.toml");
    for p in [bin, conffile] {
        assert!(
            created.iter().any(|c| c == p),
            "{} is not in the package",
            p.display()
        );
    }

    let _purge = PurgeOnDrop;
    dpkg(&["-i", deb.to_str().unwrap()]);
    assert_eq!(package_status(), "install ok installed");
    for p in &created {
        assert!(
            std::fs::symlink_metadata(p).is_ok(),
            "{} not installed",
            p.display()
        );
    }

    // --version: the crate version and the commit this test was built from.
    let out = run(Command::new(bin).arg("--version"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("sendfile-trace {}\n", sendfile_trace::cli::VERSION)
    );

    // The installed binary traces the real workload: every call, every field.
    let start = now_ns();
    let tracer = Tracer::start_command(Command::new(bin), "auto", &["--format", "tracee"])
        .unwrap_or_else(|f| panic!("installed tracer did not start: {f:?}"));
    let calls = run_workload(&workload_bin(), &[]);
    let stopped = tracer.stop();
    let window = (start, now_ns());
    check_frame(&stopped);
    let hook = stopped.records[0]["hook"].as_str().unwrap().to_owned();
    compare(&stopped.records, &calls, &hook, DEFAULT_COMM, window);
    eprintln!(
        "installed /usr/bin/sendfile-trace ({hook}): {} calls matched field by field",
        calls.len()
    );

    // The installed unit, as systemd reads it (ExecStart names the installed binary).
    let unit = "/lib/systemd/system/sendfile-trace.service";
    let text = std::fs::read_to_string(unit).unwrap();
    assert!(
        text.contains("\nExecStart=/usr/bin/sendfile-trace "),
        "{text}"
    );
    let out = Command::new("systemd-analyze")
        .args(["verify", unit])
        .output()
        .expect("cannot run systemd-analyze");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("sendfile-trace.service"),
        "systemd-analyze verify {unit}: {err}"
    );

    // The conffile is dpkg's.
    let conffiles =
        run(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "sendfile-trace"]));
    assert!(
        String::from_utf8_lossy(&conffiles.stdout).contains("/etc/sendfile-trace/config.toml "),
        "not a conffile: {}",
        String::from_utf8_lossy(&conffiles.stdout)
    );

    // remove: only the conffile (and its directory) stay.
    dpkg(&["-r", "sendfile-trace"]);
    assert_eq!(package_status(), "deinstall ok config-files");
    for p in &created {
        let kept = p == conffile || p == conffile.parent().unwrap();
        assert_eq!(
            std::fs::symlink_metadata(p).is_ok(),
            kept,
            "after dpkg -r, {} {}",
            p.display(),
            if kept { "is gone" } else { "is still there" }
        );
    }

    // purge: nothing at all.
    dpkg(&["-P", "sendfile-trace"]);
    assert_eq!(package_status(), "");
    for p in created
        .iter()
        .map(PathBuf::as_path)
        .chain(MADE_BY_SCRIPTS.map(Path::new))
    {
        assert!(
            std::fs::symlink_metadata(p).is_err(),
            "after dpkg -P, {} is still there",
            p.display()
        );
    }
}

/// A private containerd (its own root, state and socket under a temporary directory), stopped
/// and cleaned when dropped.
struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = tempfile::Builder::new().prefix("sfd").tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "version = 2\n").unwrap();
        let log = std::fs::File::create(dir.path().join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--state")
            .arg(dir.path().join("state"))
            .arg("--address")
            .arg(dir.path().join("sock"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start containerd (cargo xtask test installs it)");
        let c = Containerd { child, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !c
            .ctr()
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            assert!(
                Instant::now() < deadline,
                "containerd did not answer within 60 s: {}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        c
    }

    /// `ctr` talking to this containerd.
    fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address").arg(self.dir.path().join("sock"));
        c
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Containers still running (a failed test) go first, then the daemon.
        if let Ok(out) = self.ctr().args(["tasks", "list", "--quiet"]).output() {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = self
                    .ctr()
                    .args(["tasks", "kill", "--signal", "SIGKILL", id])
                    .output();
                std::thread::sleep(Duration::from_millis(300));
                let _ = self.ctr().args(["tasks", "delete", "--force", id]).output();
                let _ = self.ctr().args(["containers", "delete", id]).output();
            }
        }
        // SAFETY: kill on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = wait_timeout(&mut self.child, Duration::from_secs(30));
        // Snapshots may still be mounted if a container was killed hard.
        let root = self.dir.path().join("root");
        let _ = Command::new("sh")
            .arg("-c")
            .arg(r#"grep -o " $0/[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l"#)
            .arg(&root)
            .status();
    }
}

/// The capabilities ctr gives a container by default (containerd's default Unix set).
const CTR_DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// How deploy/kubernetes/daemonset.yaml runs the tracer's container.
#[derive(Debug)]
struct DaemonSet {
    host_pid: bool,
    privileged: bool,
    read_only: bool,
    /// Capabilities added (after dropping ALL), without the CAP_ prefix.
    caps: Vec<String>,
    /// (hostPath, mountPath) of every hostPath volume.
    host_mounts: Vec<(String, String)>,
}

fn daemonset() -> DaemonSet {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/daemonset.yaml");
    let docs =
        yaml_rust2::YamlLoader::load_from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let ds = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("DaemonSet"))
        .expect("a DaemonSet");
    let spec = &ds["spec"]["template"]["spec"];
    let c = &spec["containers"][0];
    let sc = &c["securityContext"];
    let drop: Vec<&str> = sc["capabilities"]["drop"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|y| y.as_str())
        .collect();
    assert_eq!(drop, ["ALL"], "the test drops every default capability");
    let volumes = spec["volumes"].as_vec().unwrap();
    let host_mounts = c["volumeMounts"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|m| {
            let v = volumes.iter().find(|v| v["name"] == m["name"])?;
            Some((
                v["hostPath"]["path"].as_str()?.to_owned(),
                m["mountPath"].as_str().unwrap().to_owned(),
            ))
        })
        .collect();
    DaemonSet {
        host_pid: spec["hostPID"].as_bool() == Some(true),
        privileged: sc["privileged"].as_bool() == Some(true),
        read_only: sc["readOnlyRootFilesystem"].as_bool() == Some(true),
        caps: sc["capabilities"]["add"]
            .as_vec()
            .unwrap()
            .iter()
            .map(|y| y.as_str().unwrap().to_owned())
            .collect(),
        host_mounts,
    }
}

/// The number of a capability (linux/capability.h) the DaemonSet may add.
fn cap_number(name: &str) -> u32 {
    match name {
        "DAC_READ_SEARCH" => 2,
        "SYS_ADMIN" => 21,
        "SYS_RESOURCE" => 24,
        "PERFMON" => 38,
        "BPF" => 39,
        other => panic!("capability {other}: add its number here"),
    }
}

/// A 64-hex container id, as containerd under Kubernetes names them (the tracer reads the id
/// from the cgroup path).
fn container_id(tag: &str) -> String {
    let mut id = format!("{:016x}{:016x}", std::process::id(), now_ns());
    while id.len() < 64 - tag.len() {
        id.push('0');
    }
    id.push_str(tag);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    id
}

#[test]
#[ignore = "needs the OCI image: cargo xtask test builds it and runs this"]
fn image_under_containerd_traces_the_host_and_other_containers() {
    let _serial = serial();
    require_root();
    let archive = env_path("SENDFILE_TRACE_IMAGE");
    let image = std::env::var("SENDFILE_TRACE_IMAGE_REF").expect("SENDFILE_TRACE_IMAGE_REF");
    let static_workload = env_path("SENDFILE_WORKLOAD_STATIC_BIN");
    let containerd = Containerd::start();
    run(containerd.ctr().args(["images", "import"]).arg(&archive));
    let images = run(containerd.ctr().args(["images", "list", "--quiet"]));
    assert!(
        String::from_utf8_lossy(&images.stdout)
            .lines()
            .any(|l| l == image),
        "{image} not in the archive: {}",
        String::from_utf8_lossy(&images.stdout)
    );

    // The tracer as deploy/kubernetes/daemonset.yaml runs it (read from the file): in the host
    // pid namespace, root with only the capabilities it adds (ctr's default set is dropped one
    // by one: ctr has no "ALL"), a read-only root, the hostPath volumes mounted where it mounts
    // them, read-only, no seccomp filter (ctr's default, as the DaemonSet's Unconfined). The
    // pid namespace is joined through this process's own, the host's (PID 1's ns links may be
    // unreadable in a sandbox).
    let ds = daemonset();
    let own_pid_ns = format!("/proc/{}/ns/pid", std::process::id());
    assert_eq!(
        std::fs::metadata(&own_pid_ns)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap(),
        INIT_PID_NS,
        "this test must run in the host's pid namespace"
    );
    let tracer_id = format!("tracer-{}", std::process::id());
    let mut cmd = containerd.ctr();
    cmd.args(["run", "--rm"]);
    assert!(ds.host_pid && ds.read_only && !ds.privileged, "{ds:?}");
    cmd.arg("--read-only")
        .arg("--with-ns")
        .arg(format!("pid:{own_pid_ns}"));
    for cap in CTR_DEFAULT_CAPS {
        cmd.args(["--cap-drop", cap]);
    }
    for cap in &ds.caps {
        cmd.arg("--cap-add").arg(format!("CAP_{cap}"));
    }
    for (src, dst) in &ds.host_mounts {
        cmd.arg("--mount")
            .arg(format!("type=bind,src={src},dst={dst},options=rbind:ro"));
    }
    cmd.args([&image, &tracer_id, "/usr/local/bin/sendfile-trace"]);
    let start = now_ns();
    let mut tracer =
        Tracer::start_command(cmd, "auto", &["--format", "tracee"]).unwrap_or_else(|f| {
            panic!(
                "tracer in the container did not start: {f:?}\n{}",
                containerd.log()
            )
        });
    // It really runs with those three capabilities and nothing else.
    let tasks = run(containerd.ctr().args(["tasks", "list"]));
    let task_pid = String::from_utf8_lossy(&tasks.stdout)
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(tracer_id.as_str())).then(|| f.next().unwrap().to_owned())
        })
        .expect("the tracer's task");
    let status = std::fs::read_to_string(format!("/proc/{task_pid}/status")).unwrap();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    let want = ds.caps.iter().fold(0u64, |m, c| m | 1 << cap_number(c));
    assert_eq!(
        cap_eff,
        format!("{want:016x}"),
        "CapEff of the tracer in its container"
    );

    // A workload on the host, and one in a scratch container of its own.
    let calls = run_workload(&workload_bin(), &[]);
    let id = container_id("c0");
    let mut workload = containerd
        .ctr()
        .args(["run", "--rm", "--read-only"])
        .arg("--mount")
        .arg(format!(
            "type=bind,src={},dst=/sendfile-workload,options=rbind:ro",
            static_workload.display()
        ))
        .args(["--mount", "type=tmpfs,src=tmpfs,dst=/tmp,options=rw"])
        // The host's cgroup2, where the workload finds its own cgroup id (the one the tracer
        // reports); ctr's /sys/fs/cgroup holds only the v1 hierarchies on a hybrid host.
        .arg("--mount")
        .arg(format!(
            "type=bind,src={},dst=/cgroup2,options=rbind:ro",
            cgroup2_mount().display()
        ))
        .args([&image, &id, "/sendfile-workload", "--hold"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ctr run");
    // Held until the tracer has written its events: the tracer resolves a call's cgroup when it
    // reads the record, and `ctr run --rm` removes the container's cgroup as the workload exits.
    let mut go = workload.stdin.take().unwrap();
    let mut container_calls: Vec<Value> = Vec::new();
    let mut done = false;
    for l in BufReader::new(workload.stdout.take().unwrap()).lines() {
        let l = l.unwrap();
        let v: Value =
            serde_json::from_str(&l).unwrap_or_else(|e| panic!("workload line ({e}): {l}"));
        if v["hold"] == "ready" {
            go.write_all(b"go\n").and_then(|()| go.flush()).unwrap();
        } else if v["hold"] == "done" {
            done = true;
            break;
        } else {
            container_calls.push(v);
        }
    }
    if !done {
        let status = wait_timeout(&mut workload, Duration::from_secs(60));
        let mut err = String::new();
        let _ = workload.stderr.take().unwrap().read_to_string(&mut err);
        panic!("the containerised workload never said done ({status}): {err}");
    }
    tracer.wait_for("the events of the containerised workload", |written| {
        written
            .iter()
            .filter(|r| r["eventName"] == "sendfile" && r["containerId"] == id.as_str())
            .count()
            >= container_calls.len()
    });
    drop(go);
    let status = wait_timeout(&mut workload, Duration::from_secs(60));
    let mut err = String::new();
    let _ = workload.stderr.take().unwrap().read_to_string(&mut err);
    assert!(status.success(), "ctr run of the workload: {status}: {err}");
    let stopped = tracer.stop();
    let window = (start, now_ns());
    check_frame(&stopped);
    let hook = stopped.records[0]["hook"].as_str().unwrap().to_owned();
    compare(&stopped.records, &calls, &hook, DEFAULT_COMM, window);

    // The container's workload is pid 1 in its own pid namespace: compare only the events that
    // carry its container id (other containers' pid 1 may call sendfile too).
    assert!(
        !container_calls.is_empty(),
        "the containerised workload made no calls"
    );
    assert_eq!(container_calls[0]["pid"], 1);
    let in_container: Vec<Value> = stopped
        .records
        .iter()
        .filter(|r| r["containerId"] == id.as_str())
        .cloned()
        .collect();
    compare_in(
        &in_container,
        &container_calls,
        &hook,
        DEFAULT_COMM,
        window,
        Some(&id),
    );
    eprintln!(
        "image {image} under containerd ({hook}): {} host calls and {} calls in container {id} \
         matched field by field",
        calls.len(),
        container_calls.len()
    );
    drop(containerd);
}
