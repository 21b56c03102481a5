//! Kernel-side filters: parsing `--pid`, `--comm`, `--uid`, `--cgroup`, `--container`,
//! `--errors-only`, `--min-bytes` and `--out-type` into what the BPF programs read.
//!
//! Repeated values of one flag are alternatives (OR); different flags must all match (AND).

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use clap::ValueEnum;
use sendfile_trace_common::{Filters, MAX_CGROUP_FILTERS, MAX_FILTER_VALUES, fd_kind, filter};

/// `CGROUP2_SUPER_MAGIC`.
const CGROUP2_MAGIC: i64 = 0x6367_7270;

/// Where cgroup v2 is mounted: `/sys/fs/cgroup` on unified hosts, `/sys/fs/cgroup/unified` on
/// hybrid ones; read from `/proc/self/mountinfo`.
pub fn cgroup2_root() -> Result<PathBuf, String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
    info.lines()
        .find_map(|line| {
            let (mount, fs) = line.split_once(" - ")?;
            let point = mount.split(' ').nth(4)?;
            (fs.split(' ').next() == Some("cgroup2")).then(|| unescape_mountinfo(point))
        })
        .ok_or_else(|| "cgroup v2 is not mounted: --cgroup and --container need it".to_owned())
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape_mountinfo(s: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(oct) = s.get(i + 1..i + 4)
            && let Ok(v) = u8::from_str_radix(oct, 8)
        {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// What `--out-type` admits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutType {
    /// Sockets.
    Socket,
    /// Regular files.
    File,
    /// Pipes and FIFOs.
    Pipe,
    /// Character devices.
    Chardev,
}

impl OutType {
    fn kind(self) -> u32 {
        match self {
            OutType::Socket => fd_kind::SOCKET,
            OutType::File => fd_kind::FILE,
            OutType::Pipe => fd_kind::PIPE,
            OutType::Chardev => fd_kind::CHARDEV,
        }
    }
}

/// The filters, resolved and ready to load.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilterSet {
    /// Admitted tgids.
    pub pids: Vec<u32>,
    /// Admitted comms, NUL-padded.
    pub comms: Vec<[u8; 16]>,
    /// Admitted uids.
    pub uids: Vec<u32>,
    /// Admitted cgroups as (level, id).
    pub cgroups: Vec<(u64, u64)>,
    /// Admitted out_fd kinds.
    pub out_types: Vec<OutType>,
    /// Only failed calls.
    pub errors_only: bool,
    /// Only calls that moved at least this many bytes.
    pub min_bytes: Option<u64>,
}

impl FilterSet {
    /// The global the BPF programs read.
    pub fn globals(&self) -> Filters {
        let mut f = Filters::default();
        let mut on = |bit, yes: bool| {
            if yes {
                f.enabled |= bit
            }
        };
        on(filter::PID, !self.pids.is_empty());
        on(filter::COMM, !self.comms.is_empty());
        on(filter::UID, !self.uids.is_empty());
        on(filter::CGROUP, !self.cgroups.is_empty());
        on(filter::OUT_TYPE, !self.out_types.is_empty());
        on(filter::ERRORS_ONLY, self.errors_only);
        on(filter::MIN_BYTES, self.min_bytes.is_some());
        for t in &self.out_types {
            f.out_kinds |= 1 << t.kind();
        }
        f.min_bytes = self.min_bytes.unwrap_or(0);
        f.cgroup_count = self.cgroups.len() as u32;
        for (slot, &(level, id)) in f.cgroups.iter_mut().zip(&self.cgroups) {
            *slot = [level, id];
        }
        f
    }

    /// Checks the counts the kernel side can hold.
    pub fn check(&self) -> Result<(), String> {
        let max = MAX_FILTER_VALUES as usize;
        for (flag, n) in [
            ("--pid", self.pids.len()),
            ("--comm", self.comms.len()),
            ("--uid", self.uids.len()),
        ] {
            if n > max {
                return Err(format!("{flag} given {n} times: at most {max} values"));
            }
        }
        if self.cgroups.len() > MAX_CGROUP_FILTERS {
            return Err(format!(
                "--cgroup/--container match {} cgroups: at most {MAX_CGROUP_FILTERS}; name fewer",
                self.cgroups.len()
            ));
        }
        Ok(())
    }
}

/// Parses a `--pid` value.
pub fn parse_pid(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(p) if p > 0 && p <= 1 << 22 => Ok(p),
        _ => Err(format!(
            "`{s}` is not a process id: use a number from 1 to 4194304"
        )),
    }
}

/// Parses a `--comm` value into the kernel's NUL-padded 16 bytes.
pub fn parse_comm(s: &str) -> Result<[u8; 16], String> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 15 || b.contains(&0) {
        return Err(format!(
            "`{s}` cannot be a process name: the kernel keeps 1 to 15 bytes of it (use the first \
             15, as `ps -o comm` shows)"
        ));
    }
    let mut comm = [0u8; 16];
    comm[..b.len()].copy_from_slice(b);
    Ok(comm)
}

/// Parses a `--uid` value: a number or a user name.
pub fn parse_uid(s: &str) -> Result<u32, String> {
    if let Ok(uid) = s.parse::<u32>() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(s) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        _ => Err(format!(
            "`{s}` is neither a uid nor a user name known to this host"
        )),
    }
}

/// Parses a `--min-bytes` value.
pub fn parse_min_bytes(s: &str) -> Result<u64, String> {
    s.parse::<u64>()
        .ok()
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(|| format!("`{s}` is not a byte count: use a whole number such as 4096"))
}

// The statfs type's width differs between glibc and musl (the VM builds).
#[allow(clippy::unnecessary_cast)]
fn is_cgroup2(root: &Path) -> bool {
    nix::sys::statfs::statfs(root)
        .map(|s| s.filesystem_type().0 as i64 == CGROUP2_MAGIC)
        .unwrap_or(false)
}

/// (level, id) of a cgroup directory under `root`.
fn cgroup_at(root: &Path, dir: &Path) -> Result<(u64, u64), String> {
    let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a cgroup directory", dir.display()));
    }
    let rel = dir
        .strip_prefix(root)
        .map_err(|_| format!("{} is not under {}", dir.display(), root.display()))?;
    Ok((rel.components().count() as u64, meta.ino()))
}

/// Every cgroup directory under `root`, depth first.
fn walk_cgroups(root: &Path, mut visit: impl FnMut(&Path) -> bool) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if !visit(&dir) {
            return;
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
}

/// Resolves a `--cgroup` value: a path (absolute, or relative to the cgroup v2 root) or an id.
pub fn resolve_cgroup(root: &Path, s: &str) -> Result<(u64, u64), String> {
    if !is_cgroup2(root) {
        return Err(format!(
            "--cgroup needs cgroup v2, and {} is not a cgroup2 mount",
            root.display()
        ));
    }
    if let Ok(id) = s.parse::<u64>() {
        let mut found = None;
        walk_cgroups(root, |dir| {
            if std::fs::metadata(dir).is_ok_and(|m| m.ino() == id) {
                found = Some(dir.to_path_buf());
                return false;
            }
            true
        });
        let dir = found.ok_or_else(|| {
            format!(
                "--cgroup {s}: no cgroup with that id under {} (ids are the cgroup directories' \
                 inode numbers)",
                root.display()
            )
        })?;
        return cgroup_at(root, &dir);
    }
    let p = Path::new(s);
    let given: PathBuf = if p.starts_with(root) {
        p.to_path_buf()
    } else {
        root.join(p.strip_prefix("/").unwrap_or(p))
    };
    let dir = confine(root, &given).map_err(|e| format!("--cgroup {s}: {e}"))?;
    cgroup_at(root, &dir).map_err(|e| format!("--cgroup {s}: {e}"))
}

/// `dir` with `..` and symlinks resolved, if it is a cgroup under the cgroup2 mount `root`;
/// otherwise why not (a path that climbs out of the mount, or a directory that is not a cgroup,
/// would make the kernel filter match nothing, silently).
fn confine(root: &Path, dir: &Path) -> Result<PathBuf, String> {
    let real_root = std::fs::canonicalize(root).map_err(|e| format!("{}: {e}", root.display()))?;
    let real = std::fs::canonicalize(dir).map_err(|e| {
        format!(
            "{}: {e} (give a cgroup path under {}, such as /system.slice/nginx.service)",
            dir.display(),
            root.display()
        )
    })?;
    if !real.starts_with(&real_root) {
        return Err(format!(
            "{} is outside the cgroup2 mount {}: give a cgroup path under it, such as \
             /system.slice/nginx.service",
            real.display(),
            root.display()
        ));
    }
    if !is_cgroup2(&real) || !real.join("cgroup.procs").is_file() {
        return Err(format!(
            "{} is not a cgroup (not a directory of the cgroup2 filesystem)",
            real.display()
        ));
    }
    Ok(real
        .strip_prefix(&real_root)
        .map_or(real.clone(), |rel| root.join(rel)))
}

/// Resolves a `--container` value (a full id or a prefix of at least 12 hex digits) to the
/// cgroups whose name carries it (docker, containerd, cri-o, podman).
pub fn resolve_container(root: &Path, s: &str) -> Result<Vec<(u64, u64)>, String> {
    if s.len() < 12 || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "`{s}` is not a container id: use 12 to 64 hex digits, as `docker ps` or `crictl ps` \
             shows"
        ));
    }
    if !is_cgroup2(root) {
        return Err(format!(
            "--container needs cgroup v2, and {} is not a cgroup2 mount",
            root.display()
        ));
    }
    let want = s.to_ascii_lowercase();
    let mut hits = Vec::new();
    walk_cgroups(root, |dir| {
        let path = dir.strip_prefix(root).ok().and_then(|p| p.to_str());
        if let Some(path) = path
            && crate::event::container_id_of_path(path).is_some_and(|id| id.starts_with(&want))
            && let Ok(c) = cgroup_at(root, dir)
        {
            hits.push(c);
        }
        true
    });
    if hits.is_empty() {
        return Err(format!(
            "--container {s}: no cgroup under {} carries that id: is the container running? \
             (containers are resolved when the tracer starts)",
            root.display()
        ));
    }
    Ok(hits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked() {
        assert_eq!(parse_pid("42"), Ok(42));
        assert!(parse_pid("0").unwrap_err().contains("not a process id"));
        assert!(parse_pid("-3").is_err());
        assert!(parse_pid("x").is_err());
        assert_eq!(&parse_comm("nginx").unwrap()[..6], b"nginx\0");
        assert!(parse_comm("sixteen_bytes_xx").unwrap_err().contains("15"));
        assert!(parse_comm("").is_err());
        assert_eq!(parse_uid("0"), Ok(0));
        assert_eq!(parse_uid("root"), Ok(0));
        assert!(
            parse_uid("no-such-user-here")
                .unwrap_err()
                .contains("neither")
        );
        assert_eq!(parse_min_bytes("4096"), Ok(4096));
        assert!(parse_min_bytes("-1").is_err());
        let root = cgroup2_root().unwrap();
        assert!(
            resolve_container(&root, "xyz")
                .unwrap_err()
                .contains("not a container id")
        );
        assert!(
            resolve_container(&root, "0123456789abcdef")
                .unwrap_err()
                .contains("is the container running")
        );
        assert_eq!(unescape_mountinfo("/a\\040b"), PathBuf::from("/a b"));
    }

    #[test]
    fn globals_carry_every_filter() {
        let f = FilterSet {
            pids: vec![1],
            out_types: vec![OutType::Socket, OutType::Pipe],
            errors_only: true,
            min_bytes: Some(10),
            cgroups: vec![(2, 99)],
            ..FilterSet::default()
        }
        .globals();
        assert_eq!(
            f.enabled,
            filter::PID
                | filter::OUT_TYPE
                | filter::ERRORS_ONLY
                | filter::MIN_BYTES
                | filter::CGROUP
        );
        assert_eq!(f.out_kinds, 1 << fd_kind::SOCKET | 1 << fd_kind::PIPE);
        assert_eq!(
            (f.min_bytes, f.cgroup_count, f.cgroups[0]),
            (10, 1, [2, 99])
        );
    }

    #[test]
    fn cgroups_resolve_by_path_and_id() {
        let root = cgroup2_root().unwrap();
        let (level, id) = resolve_cgroup(&root, "/").unwrap();
        assert_eq!(level, 0);
        assert_eq!(resolve_cgroup(&root, &id.to_string()).unwrap(), (0, id));
        assert!(resolve_cgroup(&root, "/no/such/group").is_err());
    }

    #[test]
    fn cgroup_paths_stay_in_the_cgroup2_mount() {
        let root = cgroup2_root().unwrap();
        for bad in [
            "../../../../etc",
            "/../../../../etc",
            &format!("{}/../../../../../../etc", root.display()),
        ] {
            let e = resolve_cgroup(&root, bad).unwrap_err();
            assert!(e.contains("outside the cgroup2 mount"), "{bad}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        // A file of a cgroup is not a cgroup.
        let e = resolve_cgroup(&root, "/cgroup.procs").unwrap_err();
        assert!(e.contains("not a cgroup"), "{e}");
        // `..` that stays inside resolves to the cgroup it names.
        let mine = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let mine = mine
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap()
            .to_owned();
        if mine != "/" {
            let up = format!("{mine}/..");
            let parent = resolve_cgroup(&root, &up).unwrap();
            assert_eq!(parent.0, mine.matches('/').count() as u64 - 1);
        }
    }
}
