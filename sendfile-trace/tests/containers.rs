//! `containerId` against a real container runtime: the static workload run by containerd + runc
//! (`ctr run`, containerd's own cgroup layout `/default/<id>`) gets its container's id, and a
//! process that names its cgroup like a container's (`/<anything>/docker-<id>.scope`) gets null.

mod support;

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use support::*;

/// Finds a program on PATH (the tests need containerd, ctr, runc and tar; `cargo xtask test`
/// installs them).
fn program(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|f| f.is_file())
        })
        .unwrap_or_else(|| panic!("{name} is not installed (cargo xtask test installs it)"))
}

/// A private containerd (own root, state and socket), stopped and removed on drop.
struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("sendfile-trace-containerd-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let config = dir.path().join("config.toml");
        // Only what `ctr run` needs: no CRI plugin, no listeners beyond the socket.
        std::fs::write(
            &config,
            "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n",
        )
        .unwrap();
        let child = Command::new(program("containerd"))
            .arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--state")
            .arg(dir.path().join("state"))
            .arg("--address")
            .arg(dir.path().join("sock"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("containerd.log")).unwrap())
            .spawn()
            .unwrap();
        let c = Containerd { child, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !c.ctr().arg("version").output().unwrap().status.success() {
            assert!(
                Instant::now() < deadline,
                "containerd did not start: {}",
                std::fs::read_to_string(c.dir.path().join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        c
    }

    fn ctr(&self) -> Command {
        let mut c = Command::new(program("ctr"));
        c.arg("--address").arg(self.dir.path().join("sock"));
        c
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = wait_timeout(&mut self.child, Duration::from_secs(10));
        // Snapshots of exited containers are unmounted already; anything left is unmounted
        // lazily so the directory can go.
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let root = self.dir.path().to_string_lossy().into_owned();
            for m in mounts.lines().filter_map(|l| l.split(' ').nth(1)) {
                if m.starts_with(&root) {
                    let _ = Command::new("umount").args(["-l", m]).status();
                }
            }
        }
    }
}

fn sha256(path: &Path) -> String {
    let out = Command::new(program("sha256sum"))
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

/// Writes `bytes` as a blob of the OCI layout in `dir`; returns (digest, size).
fn blob(dir: &Path, bytes: &[u8]) -> (String, usize) {
    let tmp = dir.join("blob.tmp");
    std::fs::write(&tmp, bytes).unwrap();
    let digest = sha256(&tmp);
    std::fs::rename(&tmp, dir.join("blobs/sha256").join(&digest)).unwrap();
    (format!("sha256:{digest}"), bytes.len())
}

/// An OCI image archive holding only `binary` as `/sendfile-workload` (what `buildah bud` makes
/// of `FROM scratch` + `COPY`), built with tar and sha256sum.
fn image_archive(work: &Path, binary: &Path, name: &str) -> PathBuf {
    let layout = work.join("image");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let staging = work.join("rootfs");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::copy(binary, staging.join("sendfile-workload")).unwrap();
    let layer_tar = work.join("layer.tar");
    let ok = Command::new(program("tar"))
        .args(["--owner=0", "--group=0", "-C"])
        .arg(&staging)
        .arg("-cf")
        .arg(&layer_tar)
        .arg("sendfile-workload")
        .status()
        .unwrap();
    assert!(ok.success());
    let (layer, layer_size) = blob(&layout, &std::fs::read(&layer_tar).unwrap());
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/sendfile-workload"]},
        "rootfs": {"type": "layers", "diff_ids": [layer]},
    });
    let (config, config_size) = blob(&layout, config.to_string().as_bytes());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer, "size": layer_size}],
    });
    let (manifest, manifest_size) = blob(&layout, manifest.to_string().as_bytes());
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest, "size": manifest_size,
                       "annotations": {"io.containerd.image.name": name,
                                       "org.opencontainers.image.ref.name": "test"}}],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let archive = work.join("image.tar");
    let ok = Command::new(program("tar"))
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .args(["oci-layout", "index.json", "blobs"])
        .status()
        .unwrap();
    assert!(ok.success());
    archive
}

/// A 64-hex-digit id unique to this test run.
fn fresh_id(salt: u64) -> String {
    format!(
        "{:016x}",
        (u64::from(std::process::id()) ^ now_ns()).wrapping_mul(0x9e37_79b9_7f4a_7c15 ^ salt)
    )
    .repeat(4)
}

/// Runs the held workload in container `id`: returns its call records. The container is kept
/// alive (the workload waits on stdin) until `tracer` has written its events, as a long-running
/// container would be: the tracer resolves a call's cgroup when it reads the record, and the
/// runtime removes the cgroup when the container ends.
fn run_in_container(
    containerd: &Containerd,
    tracer: &mut Tracer,
    image: &str,
    id: &str,
    comm: &str,
) -> Vec<Value> {
    let mut child = containerd
        .ctr()
        .args([
            "run",
            "--rm",
            "--mount",
            "type=tmpfs,src=tmpfs,dst=/tmp,options=rw",
        ])
        .args([image, id, "/sendfile-workload", "--hold", "--comm", comm])
        .args(["--case", "file_to_file_offset"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut records = Vec::new();
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 {
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("container output is not JSON ({e}): {line:?}"));
        line.clear();
        if v["hold"] == "ready" {
            stdin.write_all(b"go\n").unwrap();
            stdin.flush().unwrap();
        } else if v["hold"] == "done" {
            break;
        } else {
            records.push(v);
        }
    }
    tracer.wait_for("the container's events", |written| {
        written
            .iter()
            .filter(|r| r["eventName"] == "sendfile" && r["processName"] == comm)
            .count()
            >= records.len()
    });
    drop(stdin);
    let status = wait_timeout(&mut child, Duration::from_secs(60));
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
    assert!(status.success(), "ctr run failed ({status}): {err}");
    records
}

#[test]
fn container_id_comes_from_a_real_runtime_and_not_from_a_look_alike_cgroup() {
    let _serial = serial();
    require_root();
    let Some(static_workload) = workload32_bin() else {
        panic!("the static (i686) workload is needed: set SENDFILE_WORKLOAD32_BIN");
    };
    program("runc");
    let work = tempfile::tempdir().unwrap();
    let image = "docker.io/library/sendfile-trace-workload:test";
    let archive = image_archive(work.path(), &static_workload, image);
    let containerd = Containerd::start();
    let import = containerd
        .ctr()
        .args(["images", "import"])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        import.status.success(),
        "ctr images import: {}",
        String::from_utf8_lossy(&import.stderr)
    );

    // The look-alike: a cgroup anyone with a writable cgroup subtree can make.
    let fake_id = fresh_id(1);
    let fake_parent =
        cgroup2_mount().join(format!("sendfile-trace-lookalike-{}", std::process::id()));
    let fake = fake_parent.join(format!("docker-{fake_id}.scope"));
    std::fs::create_dir_all(&fake).unwrap();

    let hook = ["kprobe", "fentry", "tracepoint"]
        .into_iter()
        .find(|h| expectation(h) == Expect::Works)
        .unwrap();
    let (comm_in, comm_fake) = ("sft-in-ctr", "sft-lookalike");
    let mut tracer = Tracer::start(hook, &["--comm", comm_in, "--comm", comm_fake])
        .unwrap_or_else(|f| panic!("{f:?}"));
    let id = fresh_id(2);
    let calls = run_in_container(&containerd, &mut tracer, image, &id, comm_in);
    let held = Held::spawn(
        &workload_bin(),
        &[
            "--comm".as_ref(),
            comm_fake.as_ref(),
            "--case".as_ref(),
            "file_to_file_offset".as_ref(),
        ],
    );
    std::fs::write(fake.join("cgroup.procs"), held.pid.to_string()).unwrap();
    held.release();
    let fake_calls = held.finish();
    let stopped = tracer.stop();
    let _ = std::fs::remove_dir(&fake);
    let _ = std::fs::remove_dir(&fake_parent);
    check_frame(&stopped);

    let by_comm = |comm: &str| -> Vec<&Value> {
        stopped
            .records
            .iter()
            .filter(|r| r["eventName"] == "sendfile" && r["processName"] == comm)
            .collect()
    };
    let inside = by_comm(comm_in);
    // The i386 workload makes the case through both syscalls (187 and 239).
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(inside.len(), calls.len(), "{inside:#?}");
    for e in &inside {
        assert_eq!(e["containerId"], id.as_str(), "{e}");
        // Its own pid namespace: pid 1 there, another pid on the host.
        assert_eq!(e["processId"], 1, "{e}");
        assert_ne!(e["hostProcessId"], 1, "{e}");
    }
    let outside = by_comm(comm_fake);
    assert_eq!(outside.len(), fake_calls.len(), "{outside:#?}");
    for e in &outside {
        assert_eq!(
            e["containerId"],
            Value::Null,
            "a named cgroup is not a container: {e}"
        );
    }
}
