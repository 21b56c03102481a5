//! Container ids from cgroup paths, accepted only in the layouts the container runtimes create.
//!
//! A name alone proves nothing: anyone who may create a cgroup (root, or a user in the subtree
//! systemd delegates to them) can name one `docker-<64 hex>.scope`. So the id is taken from the
//! caller's full cgroup v2 path, from the root, and only where a runtime puts its containers:
//! under parents that only root can create. The path is resolved from the cgroup id the kernel
//! reports for each call (`open_by_handle_at` on the cgroup2 mount, then the descriptor's link),
//! once per cgroup, and kept.

use std::{
    collections::HashMap,
    ffi::OsStr,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

/// Whether `s` is a full container id: 64 lower-case hex digits, as every runtime here writes.
fn is_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `<prefix><64 hex>.scope` → the id.
fn scope_id<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let id = name.strip_prefix(prefix)?.strip_suffix(".scope")?;
    is_id(id).then_some(id)
}

/// A Kubernetes pod cgroup under the systemd driver: `kubepods[-<qos>]-pod<uid>.slice`.
fn is_pod_slice(name: &str, qos: Option<&str>) -> bool {
    let prefix = match qos {
        Some(q) => format!("kubepods-{q}-pod"),
        None => "kubepods-pod".to_owned(),
    };
    name.strip_prefix(&prefix)
        .and_then(|r| r.strip_suffix(".slice"))
        .is_some_and(|uid| {
            !uid.is_empty() && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'_')
        })
}

/// A Kubernetes pod cgroup under the cgroupfs driver: `pod<uid>`.
fn is_pod_dir(name: &str) -> bool {
    name.strip_prefix("pod").is_some_and(|uid| {
        !uid.is_empty() && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
    })
}

/// The container id of a cgroup v2 path (from the cgroup root, e.g.
/// `/system.slice/docker-<id>.scope`), if the path is one a runtime creates; cgroups below a
/// container's (made inside it) belong to it. The layouts:
///
/// - docker: `/system.slice/docker-<id>.scope` (systemd driver), `/docker/<id>` (cgroupfs);
/// - containerd, nerdctl, `ctr run`: `/<namespace>/<id>` for the namespaces `default`, `k8s.io`,
///   `moby`; `/system.slice/nerdctl-<id>.scope`;
/// - podman: `/machine.slice/libpod-<id>.scope`, `/libpod_parent/libpod-<id>`, and rootless
///   `/user.slice/user-<uid>.slice/user@<uid>.service/user.slice/libpod-<id>.scope`;
/// - Kubernetes (containerd, cri-o, docker): `/kubepods.slice/[kubepods-<qos>.slice/]
///   kubepods[-<qos>]-pod<uid>.slice/{cri-containerd,crio,docker}-<id>.scope` (systemd) and
///   `/kubepods/[<qos>/]pod<uid>/<id>` (cgroupfs), with qos `burstable` or `besteffort`.
///
/// Conmon's `crio-conmon-<id>.scope` is the monitor, not the container: not matched.
pub fn container_id_of_path(path: &str) -> Option<String> {
    let c: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let at = |i: usize| c.get(i).copied().unwrap_or("");
    let found = match at(0) {
        "system.slice" => scope_id(at(1), "docker-").or_else(|| scope_id(at(1), "nerdctl-")),
        "docker" | "default" | "k8s.io" | "moby" => Some(at(1)).filter(|id| is_id(id)),
        "machine.slice" => scope_id(at(1), "libpod-"),
        "libpod_parent" => at(1).strip_prefix("libpod-").filter(|id| is_id(id)),
        "user.slice" => {
            let uid = at(1).strip_prefix("user-")?.strip_suffix(".slice")?;
            (uid.bytes().all(|b| b.is_ascii_digit())
                && at(2) == format!("user@{uid}.service")
                && at(3) == "user.slice")
                .then(|| scope_id(at(4), "libpod-"))?
        }
        "kubepods.slice" => {
            let (qos, pod) = match at(1) {
                "kubepods-burstable.slice" => (Some("burstable"), 2),
                "kubepods-besteffort.slice" => (Some("besteffort"), 2),
                _ => (None, 1),
            };
            is_pod_slice(at(pod), qos)
                .then(|| {
                    let name = at(pod + 1);
                    scope_id(name, "cri-containerd-")
                        .or_else(|| scope_id(name, "crio-"))
                        .or_else(|| scope_id(name, "docker-"))
                })
                .flatten()
        }
        "kubepods" => {
            let pod = if matches!(at(1), "burstable" | "besteffort") {
                2
            } else {
                1
            };
            is_pod_dir(at(pod))
                .then(|| Some(at(pod + 1)).filter(|id| is_id(id)))
                .flatten()
        }
        _ => None,
    };
    found.map(str::to_owned)
}

/// Most cgroups whose container ids are kept; the cache starts over when full (each entry is
/// cheap to resolve again), so a process that makes many cgroups cannot grow the tracer.
const CACHE_MAX: usize = 16384;

/// Resolves a cgroup id to its path from the cgroup v2 root.
type Resolver = Box<dyn Fn(u64) -> Option<String> + Send + Sync>;

/// Container ids by cgroup id, resolved once per cgroup (cgroup ids are not reused while the
/// system runs).
pub struct Containers {
    resolve: Resolver,
    /// foldhash (seeded) rather than SipHash: one lookup per event, keyed by cgroup ids the
    /// kernel picks.
    cache: Mutex<HashMap<u64, Option<Arc<str>>, foldhash::fast::RandomState>>,
}

impl std::fmt::Debug for Containers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Containers").finish_non_exhaustive()
    }
}

impl Clone for Containers {
    fn clone(&self) -> Self {
        // Clones start with no cache and resolve nothing: only the daemon's own copy resolves.
        Containers::with_resolver(|_| None)
    }
}

impl Containers {
    /// Resolves through the cgroup2 mount at `root` (see [`crate::kernel::filter::cgroup2_root`]);
    /// with no mount, or without the right to open handles (CAP_DAC_READ_SEARCH), every
    /// `containerId` is null.
    pub fn new(root: Option<PathBuf>) -> Containers {
        let mount = root.and_then(|r| {
            let fd = std::fs::File::open(&r).ok()?;
            Some((OwnedFd::from(fd), r))
        });
        match mount {
            Some((fd, root)) => Containers::with_resolver(move |id| cgroup_path(&fd, &root, id)),
            None => Containers::with_resolver(|_| None),
        }
    }

    /// With another way to find a cgroup's path (tests, benches).
    pub fn with_resolver(f: impl Fn(u64) -> Option<String> + Send + Sync + 'static) -> Containers {
        Containers {
            resolve: Box::new(f),
            cache: Mutex::new(HashMap::default()),
        }
    }

    /// The container id of the cgroup with this id, if it is a container's.
    pub fn id_of(&self, cgroup_id: u64) -> Option<String> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(hit) = cache.get(&cgroup_id) {
            return hit.as_deref().map(str::to_owned);
        }
        let found: Option<Arc<str>> = (self.resolve)(cgroup_id)
            .and_then(|p| container_id_of_path(&p))
            .map(Into::into);
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(cgroup_id, found.clone());
        found.as_deref().map(str::to_owned)
    }
}

/// The path from the cgroup v2 root of the cgroup `id`, opened by handle on the mount `mount`
/// (at `root`); `None` if it is gone or cannot be opened.
fn cgroup_path(mount: &OwnedFd, root: &Path, id: u64) -> Option<String> {
    /// `struct file_handle` with the 8 bytes of a kernfs handle (`FILEID_KERNFS`).
    #[repr(C)]
    struct Handle {
        handle_bytes: u32,
        handle_type: i32,
        id: u64,
    }
    const FILEID_KERNFS: i32 = 0xfe;
    let mut h = Handle {
        handle_bytes: 8,
        handle_type: FILEID_KERNFS,
        id,
    };
    // SAFETY: `h` is a file_handle with room for the 8 bytes it declares; the returned fd, if
    // any, is owned by nothing else.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount.as_raw_fd(),
            (&raw mut h).cast(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: as above.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    let rel = link.strip_prefix(root).ok()?;
    let rel = OsStr::from_bytes(rel.as_os_str().as_bytes()).to_str()?;
    Some(format!("/{rel}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_runtimes_layouts_give_an_id() {
        let id = "0123456789abcdef".repeat(4);
        for path in [
            format!("/system.slice/docker-{id}.scope"),
            format!("/system.slice/docker-{id}.scope/inner"),
            format!("/docker/{id}"),
            format!("/default/{id}"),
            format!("/k8s.io/{id}"),
            format!("/system.slice/nerdctl-{id}.scope"),
            format!("/machine.slice/libpod-{id}.scope"),
            format!("/machine.slice/libpod-{id}.scope/container"),
            format!("/libpod_parent/libpod-{id}"),
            format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{id}.scope"),
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f1e_2d3c.slice/\
                 cri-containerd-{id}.scope"
            ),
            format!("/kubepods.slice/kubepods-pod0f1e.slice/crio-{id}.scope"),
            format!("/kubepods/besteffort/pod0f1e-2d3c/{id}"),
            format!("/kubepods/pod0f1e-2d3c/{id}"),
        ] {
            assert_eq!(
                container_id_of_path(&path).as_deref(),
                Some(id.as_str()),
                "{path}"
            );
        }
        for path in [
            // Look-alikes a delegated user (or anyone naming a cgroup) can make.
            format!("/user.slice/user-1000.slice/user@1000.service/app.slice/docker-{id}.scope"),
            format!("/user.slice/user-1000.slice/user@1000.service/system.slice/docker-{id}.scope"),
            format!("/ho-fake/docker-{id}.scope"),
            format!("/system.slice/x/docker-{id}.scope"),
            format!("/{id}"),
            format!("/default/{}", id.to_uppercase()),
            format!("/kubepods.slice/kubepods-podx!.slice/crio-{id}.scope"),
            format!("/kubepods.slice/kubepods-pod0f1e.slice/crio-conmon-{id}.scope"),
            format!("/system.slice/docker-{}.scope", &id[..63]),
            "/default/t2".to_owned(),
            "/init.scope".to_owned(),
            "/".to_owned(),
        ] {
            assert_eq!(container_id_of_path(&path), None, "{path}");
        }
    }

    #[test]
    fn ids_are_resolved_once_per_cgroup() {
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let seen = calls.clone();
        let id = "ab".repeat(32);
        let c = Containers::with_resolver(move |cg| {
            seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            (cg == 7).then(|| format!("/docker/{}", "ab".repeat(32)))
        });
        assert_eq!(c.id_of(7).as_deref(), Some(id.as_str()));
        assert_eq!(c.id_of(7).as_deref(), Some(id.as_str()));
        assert_eq!(c.id_of(8), None);
        assert_eq!(c.id_of(8), None);
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 2);
    }

    #[test]
    fn this_process_cgroup_resolves_by_id() {
        // The resolver against the real cgroup2 mount: our own cgroup's id gives our own path.
        let Ok(root) = crate::kernel::filter::cgroup2_root() else {
            return;
        };
        let Ok(own) = std::fs::read_to_string("/proc/self/cgroup") else {
            return;
        };
        let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::")) else {
            return;
        };
        let dir = root.join(path.trim_start_matches('/'));
        let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&dir).unwrap());
        let fd = OwnedFd::from(std::fs::File::open(&root).unwrap());
        if nix::unistd::geteuid().is_root() {
            assert_eq!(cgroup_path(&fd, &root, ino).as_deref(), Some(path));
        }
    }
}
