//! Container ids from cgroup names, as the container runtimes name their cgroups.

/// The container id carried by a cgroup name (`docker-<id>.scope`, `cri-containerd-<id>.scope`,
/// `crio-<id>.scope`, `libpod-<id>.scope`, or a bare 64-hex-digit id under the cgroupfs driver).
pub fn container_id_of(cgroup_name: &str) -> Option<String> {
    let base = cgroup_name.strip_suffix(".scope").unwrap_or(cgroup_name);
    let id = base.rsplit('-').next().unwrap_or(base);
    let conmon = base.contains("conmon");
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) && !conmon)
        .then(|| id.to_ascii_lowercase())
}
