//! The event contract (Tracee's legacy field names) and the enrichment that builds an event
//! from a joined call: [`decode`] reads the kernel records, [`join`] pairs entry and exit,
//! [`container`] names the container of a cgroup.

pub mod container;
pub mod decode;
pub mod flow;
pub mod join;
pub mod lifecycle;

use self::decode::{fd_info, hex, unresolved};
pub use self::{
    container::{Containers, container_id_of_path},
    decode::{Entry, ProcCtx, comm_bytes, st_dev},
};

use std::borrow::Cow;

use sendfile_trace_common::{
    Hook, NR_SENDFILE_I386, NR_SENDFILE64_I386, SendfileRecord, entry_status, flags,
};
use serde::Serialize;

use crate::{SCHEMA_VERSION, kernel::system::WallClock};

/// The native `sendfile` syscall number of the architecture this binary (and the BPF object it
/// embeds) is built for.
#[cfg(target_arch = "x86_64")]
const NR_SENDFILE64_NATIVE: u32 = sendfile_trace_common::NR_SENDFILE64_X86_64;
/// The native `sendfile` syscall number of the architecture this binary (and the BPF object it
/// embeds) is built for.
#[cfg(target_arch = "aarch64")]
const NR_SENDFILE64_NATIVE: u32 = sendfile_trace_common::NR_SENDFILE64_AARCH64;

/// Per-host context added to every event.
#[derive(Clone, Debug)]
pub struct Enricher {
    /// This host's name.
    pub host_name: String,
    /// Boot-time to wall-clock conversion.
    pub clock: WallClock,
    /// Container ids by cgroup id.
    pub containers: Containers,
}

/// One sendfile call, as written to the output.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SendfileEvent<'a> {
    /// Wall-clock ns since the epoch at syscall entry.
    pub timestamp: u64,
    /// CPU the call entered on.
    pub processor_id: u32,
    /// Thread group id in the caller's own pid namespace (null if its entry record was lost).
    pub process_id: Option<u32>,
    /// Thread id in the caller's own pid namespace (null if its entry record was lost).
    pub thread_id: Option<u32>,
    /// Parent's thread group id in the caller's own pid namespace (0 if the parent is outside
    /// it; null if the entry record was lost).
    pub parent_process_id: Option<u32>,
    /// Thread group id in the host (initial) pid namespace.
    pub host_process_id: u32,
    /// Thread id in the host pid namespace.
    pub host_thread_id: u32,
    /// Parent's thread group id in the host pid namespace (null if the entry record was lost).
    pub host_parent_process_id: Option<u32>,
    /// Real uid of the caller.
    pub user_id: u32,
    /// Real gid of the caller.
    pub group_id: u32,
    /// The thread's comm; invalid UTF-8 shown as U+FFFD (the exact bytes are in
    /// `processNameHex`).
    pub process_name: Cow<'a, str>,
    /// Hex of the exact comm bytes, present only when they are not valid UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_name_hex: Option<String>,
    /// The program the process runs (`mm->exe_file`), resolved in the kernel; null for a
    /// kernel thread or a lost entry record.
    pub executable: Option<Executable>,
    /// Wall-clock ns since the epoch when the calling thread started.
    pub thread_start_time: Option<u64>,
    /// Inode number of the caller's mount namespace.
    pub mount_namespace: Option<u32>,
    /// Inode number of the caller's pid namespace.
    pub pid_namespace: Option<u32>,
    /// Host name.
    pub host_name: &'a str,
    /// cgroup v2 id of the caller.
    pub cgroup_id: u64,
    /// Container id from the caller's full cgroup path, in the layouts docker, containerd,
    /// cri-o, podman and Kubernetes create (see [`container_id_of_path`]), or null.
    pub container_id: Option<String>,
    /// Tracee's event id for sendfile ("40").
    pub event_id: &'static str,
    /// Always "sendfile".
    pub event_name: &'static str,
    /// The syscall used: "sendfile64" (x86_64 40, arm64 71, compat 239) or "sendfile" (compat
    /// 187).
    pub syscall: &'static str,
    /// The syscall number used (40 or 71, 187, 239).
    pub syscall_nr: u32,
    /// Raw result: bytes moved, or -errno.
    pub return_value: i64,
    /// Name of the error (`"EBADF"`), or null on success.
    pub errno: Option<Cow<'static, str>>,
    /// Always 4.
    pub args_num: u8,
    /// out_fd, in_fd, offset (the pointer), count.
    pub args: [Arg; 4],
    /// in_fd as resolved in the kernel at syscall entry.
    pub in_fd: FdInfo,
    /// out_fd as resolved in the kernel at syscall entry.
    pub out_fd: FdInfo,
    /// Value at the offset pointer at entry; null if the pointer is NULL or unreadable.
    pub offset_value: Option<i64>,
    /// Value at the offset pointer at exit; null if the pointer is NULL or unreadable.
    pub offset_after: Option<i64>,
    /// Time spent in the syscall, ns.
    pub duration_ns: u64,
    /// Context flags.
    pub context_flags: ContextFlags,
    /// The hook that saw the call.
    pub hook: &'static str,
    /// Version of this contract.
    pub schema_version: u32,
}

/// One syscall argument as Tracee writes it.
#[derive(Debug, Serialize)]
pub struct Arg {
    /// Argument name.
    pub name: &'static str,
    /// C type.
    #[serde(rename = "type")]
    pub ty: &'static str,
    /// Value.
    pub value: ArgValue,
}

/// An argument's value.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ArgValue {
    /// A file descriptor.
    Int(i32),
    /// A pointer or a size.
    U64(u64),
}

/// A path read in the kernel; attacker-controlled bytes, so never assumed to be UTF-8.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Executable {
    /// The path; invalid UTF-8 shown as U+FFFD (the exact bytes are in `pathHex`).
    pub path: String,
    /// Hex of the exact path bytes, present only when they are not valid UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_hex: Option<String>,
    /// The path walk hit its bound: `path` is the tail end of the real path.
    pub truncated: bool,
    /// The file is in no mounted file system (memfd, SysV shared memory, ...): `path` is the
    /// kernel's name for it, as `/proc/PID/fd` shows it (`/memfd:NAME (deleted)`), not a path
    /// on any disk. Present only when true.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pseudo: bool,
    /// The file's mount is not attached to the caller's mount tree (lazily unmounted with
    /// `umount -l`, or another mount namespace's): `path` is from the root of that mount and
    /// may name a different, real file in the caller's tree. Present only when true.
    #[serde(default, skip_serializing_if = "is_false")]
    pub detached: bool,
}

/// A file descriptor argument, resolved from the caller's fd table at syscall entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FdInfo {
    /// The descriptor number the caller passed.
    pub fd: i32,
    /// What it refers to.
    #[serde(flatten)]
    pub kind: FdKind,
}

/// What a descriptor refers to; serialized with a `"type"` tag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FdKind {
    /// A regular file or directory.
    File(PathInfo),
    /// A character device (e.g. `/dev/null`).
    Chardev(PathInfo),
    /// Anything else with a path (block device, FIFO on disk, ...).
    Other(PathInfo),
    /// A pipe; both ends share the inode.
    Pipe {
        /// pipefs inode number (as `fstat` reports it).
        inode: u64,
    },
    /// A socket.
    Socket(SocketInfo),
    /// An anonymous inode (eventfd, memfd-less epoll, ...), by its name (`[eventfd]`).
    AnonInode {
        /// The anon inode's name.
        name: String,
    },
    /// Not resolvable; `reason` says why.
    Unknown {
        /// Why (e.g. `"not open"`).
        reason: String,
    },
}

/// A descriptor with a path in the file system.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PathInfo {
    /// Full path across mounts, from the root of the mount namespace (see `detached`,
    /// `outsideRoot` and `pseudo` for the files this does not name).
    pub path: String,
    /// Hex of the exact path bytes, present only when they are not valid UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_hex: Option<String>,
    /// The path walk hit its bound: `path` is the tail end of the real path.
    pub truncated: bool,
    /// Inode number.
    pub inode: u64,
    /// Device, encoded as `stat(2)`'s `st_dev`.
    pub dev: u64,
    /// The file was unlinked (no names left).
    pub deleted: bool,
    /// The file is in no mounted file system (memfd, SysV shared memory, ...): `path` is the
    /// kernel's name for it, as `/proc/PID/fd` shows it (`/memfd:NAME (deleted)`), not a path
    /// on any disk. Present only when true.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pseudo: bool,
    /// The file's mount is not attached to the caller's mount tree (lazily unmounted with
    /// `umount -l`, or another mount namespace's): `path` is from the root of that mount and
    /// may name a different, real file in the caller's tree. Present only when true.
    #[serde(default, skip_serializing_if = "is_false")]
    pub detached: bool,
    /// The file is outside the caller's root directory (chroot, pivot_root): `path` is from the
    /// root of the mount namespace, which the caller cannot see. Present only when true.
    #[serde(default, skip_serializing_if = "is_false")]
    pub outside_root: bool,
}

/// For `skip_serializing_if`: the anomaly flags are written only when set.
fn is_false(b: &bool) -> bool {
    !*b
}

/// A socket descriptor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SocketInfo {
    /// `AF_INET`, `AF_INET6`, `AF_UNIX`, or `AF_<n>`.
    pub family: Cow<'static, str>,
    /// `TCP`, `UDP`, ... for inet; `STREAM`, `DGRAM`, `SEQPACKET` for UNIX.
    pub protocol: Cow<'static, str>,
    /// sockfs inode number (as `fstat` and `/proc/PID/fd` report it).
    pub inode: u64,
    /// This end's address, or null when unbound.
    pub local: Option<Endpoint>,
    /// The peer's address, or null when unconnected.
    pub remote: Option<Endpoint>,
}

/// One end of a socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Endpoint {
    /// IPv4 or IPv6 address and port.
    Inet {
        /// Address in its usual text form.
        ip: String,
        /// Port.
        port: u16,
    },
    /// A UNIX socket's path (`@name` for the abstract namespace).
    Unix {
        /// The path; invalid UTF-8 shown as U+FFFD.
        path: String,
        /// Hex of the exact bytes, present only when they are not valid UTF-8.
        #[serde(rename = "pathHex", skip_serializing_if = "Option::is_none")]
        path_hex: Option<String>,
    },
}

/// Flags about the call's context.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContextFlags {
    /// Made through the 32-bit (ia32) syscall entry.
    pub is_compat: bool,
    /// (flows) The call should have been counted in a flow but the flow table was full: it is
    /// traced on its own instead. Present only when true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub flow_fallback: bool,
}

/// Name of a syscall error for a raw return value, or `None` for success.
pub fn errno_name(ret: i64) -> Option<Cow<'static, str>> {
    if !(-4095..0).contains(&ret) {
        return None;
    }
    let n = (-ret) as i32;
    // Kernel-internal codes that can reach a syscall exit probe before signal handling.
    let internal = match n {
        512 => Some("ERESTARTSYS"),
        513 => Some("ERESTARTNOINTR"),
        514 => Some("ERESTARTNOHAND"),
        515 => Some("ENOIOCTLCMD"),
        516 => Some("ERESTART_RESTARTBLOCK"),
        _ => None,
    };
    if let Some(name) = internal {
        return Some(Cow::Borrowed(name));
    }
    let e = nix::errno::Errno::from_raw(n);
    if e == nix::errno::Errno::UnknownErrno {
        Some(Cow::Owned(format!("E{n}")))
    } else {
        Some(Cow::Owned(format!("{e:?}")))
    }
}

/// The name of the syscall a call or flow made, from its number and whether it was a 32-bit
/// call: the i386 numbers for compat calls, this architecture's own otherwise.
pub fn syscall_name(compat: bool, nr: u32) -> &'static str {
    match (compat, nr) {
        (true, NR_SENDFILE_I386) => "sendfile",
        (true, NR_SENDFILE64_I386) | (false, NR_SENDFILE64_NATIVE) => "sendfile64",
        _ => "unknown",
    }
}

impl Enricher {
    /// Builds the event for one exit record and the entry record of the same call, if it came.
    pub fn event<'a>(&'a self, r: &'a SendfileRecord, entry: Option<&Entry>) -> SendfileEvent<'a> {
        let comm = comm_bytes(&r.comm);
        let process_name = String::from_utf8_lossy(comm);
        let process_name_hex = matches!(process_name, Cow::Owned(_)).then(|| hex(comm));
        let compat = r.flags & flags::COMPAT != 0;
        let syscall = syscall_name(compat, r.syscall_nr);
        let valid = |bit: u32, v: i64| (r.flags & bit != 0).then_some(v);
        let (in_fd, out_fd) = match entry {
            Some(e) => (
                fd_info(r.in_fd, e, &e.rec.in_fd),
                fd_info(r.out_fd, e, &e.rec.out_fd),
            ),
            None => {
                let why = if r.entry_status == entry_status::RING_FULL {
                    "ring buffer full at syscall entry"
                } else {
                    "entry record missing"
                };
                (unresolved(r.in_fd, why), unresolved(r.out_fd, why))
            }
        };
        let proc = entry.and_then(|e| e.proc.as_deref());
        SendfileEvent {
            timestamp: self.clock.wall_ns(r.start_ns),
            processor_id: r.cpu,
            process_id: proc.map(|p| p.ns_tgid),
            thread_id: entry.map(|e| e.rec.ns_tid),
            parent_process_id: proc.map(|p| p.ns_ppid),
            host_process_id: (r.pid_tgid >> 32) as u32,
            host_thread_id: r.pid_tgid as u32,
            host_parent_process_id: proc.map(|p| p.host_ppid),
            user_id: r.uid_gid as u32,
            group_id: (r.uid_gid >> 32) as u32,
            process_name,
            process_name_hex,
            executable: proc.and_then(|p| p.executable.clone()),
            thread_start_time: entry.map(|e| self.clock.wall_ns(e.rec.thread_start_ns)),
            mount_namespace: proc.map(|p| p.mnt_ns),
            pid_namespace: proc.map(|p| p.pid_ns),
            host_name: &self.host_name,
            cgroup_id: r.cgroup_id,
            container_id: self.containers.id_of(r.cgroup_id),
            event_id: "40",
            event_name: "sendfile",
            syscall,
            syscall_nr: r.syscall_nr,
            return_value: r.ret,
            errno: errno_name(r.ret),
            args_num: 4,
            args: [
                Arg {
                    name: "out_fd",
                    ty: "int",
                    value: ArgValue::Int(r.out_fd),
                },
                Arg {
                    name: "in_fd",
                    ty: "int",
                    value: ArgValue::Int(r.in_fd),
                },
                Arg {
                    name: "offset",
                    ty: "off_t*",
                    value: ArgValue::U64(r.offset_ptr),
                },
                Arg {
                    name: "count",
                    ty: "size_t",
                    value: ArgValue::U64(r.count),
                },
            ],
            in_fd,
            out_fd,
            offset_value: valid(flags::OFFSET_BEFORE_VALID, r.offset_before),
            offset_after: valid(flags::OFFSET_AFTER_VALID, r.offset_after),
            duration_ns: r.end_ns.saturating_sub(r.start_ns),
            context_flags: ContextFlags {
                is_compat: compat,
                flow_fallback: r.flags & flags::FLOW_FALLBACK != 0,
            },
            hook: Hook::from_u32(r.hook).map_or("unknown", Hook::name),
            schema_version: SCHEMA_VERSION,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sendfile_trace_common::{EntryRecord, FdRecord, Seg, fd_flags, fd_kind, fd_reason};

    use super::decode::*;
    use serde_json::{Value, json};

    fn record() -> SendfileRecord {
        let mut comm = [0u8; 16];
        comm[..5].copy_from_slice(b"nginx");
        SendfileRecord {
            kind: sendfile_trace_common::kind::EXIT,
            entry_status: entry_status::WRITTEN,
            start_ns: 1_000,
            end_ns: 1_500,
            pid_tgid: (4242u64 << 32) | 4243,
            uid_gid: (7u64 << 32) | 1000,
            cgroup_id: 4321,
            offset_ptr: 140723599012848,
            offset_before: 0,
            offset_after: 21952,
            count: 21952,
            ret: 21952,
            out_fd: 29,
            in_fd: 30,
            cpu: 1,
            flags: flags::OFFSET_BEFORE_VALID | flags::OFFSET_AFTER_VALID,
            syscall_nr: 40,
            hook: Hook::Kprobe as u32,
            comm,
        }
    }

    fn enricher() -> Enricher {
        Enricher {
            host_name: "web-1".into(),
            clock: WallClock::now(),
            containers: Containers::with_resolver(|cg| {
                (cg == 4321).then(|| format!("/system.slice/docker-{}.scope", "a".repeat(64)))
            }),
        }
    }

    fn encode_with(r: &SendfileRecord, entry: Option<&Entry>) -> Value {
        let e = enricher();
        let line = serde_json::to_string(&e.event(r, entry)).unwrap();
        assert!(!line.contains('\n'));
        serde_json::from_str(&line).unwrap()
    }

    fn encode(r: &SendfileRecord) -> Value {
        encode_with(r, None)
    }

    fn push_raw(tail: &mut Vec<u8>, b: &[u8]) -> Seg {
        let off = tail.len() as u16;
        tail.extend_from_slice(b);
        Seg {
            off,
            len: b.len() as u16,
        }
    }

    /// An nginx-like call: a file (with a hostile name) to a TCP socket, in a docker container.
    fn entry() -> Entry {
        let mut tail = Vec::new();
        let mut rec = EntryRecord {
            kind: sendfile_trace_common::kind::ENTRY,
            pid_tgid: (4242u64 << 32) | 4243,
            start_ns: 1_000,
            thread_start_ns: 500,
            ns_tgid: 1,
            ns_tid: 2,
            ns_ppid: 0,
            host_ppid: 4000,
            mnt_ns: 4026531840,
            pid_ns: 4026531836,
            ..EntryRecord::default()
        };
        rec.in_fd = FdRecord {
            kind: fd_kind::FILE,
            ino: 1234,
            dev: (8 << 20) | 1,
            flags: fd_flags::DELETED,
            path: sendfile_trace_common::encode_path(&mut tail, b"/srv/www/a \"b\"\n\xff.jpg"),
            ..FdRecord::default()
        };
        let mut local_addr = [0u8; 16];
        local_addr[..4].copy_from_slice(&[10, 0, 0, 5]);
        let mut remote_addr = [0u8; 16];
        remote_addr[..4].copy_from_slice(&[203, 0, 113, 7]);
        rec.out_fd = FdRecord {
            kind: fd_kind::SOCKET,
            ino: 99,
            family: 2,
            protocol: 6,
            sock_type: 1,
            local_port: 80,
            remote_port: 51234,
            local_addr,
            remote_addr,
            ..FdRecord::default()
        };
        rec.exe = sendfile_trace_common::encode_path(&mut tail, b"/usr/sbin/nginx");
        let id = "a".repeat(64);
        rec.cgroup_name = push_raw(&mut tail, format!("docker-{id}.scope").as_bytes());
        rec.cgroup_parent = push_raw(&mut tail, b"system.slice");
        rec.tail_len = tail.len() as u16;
        Entry::new(rec, tail)
    }

    #[test]
    fn decodes_from_ring_bytes_and_encodes_the_contract() {
        let r = record();
        let back = SendfileRecord::from_bytes(r.as_bytes()).unwrap();
        assert_eq!(back, r);
        assert!(SendfileRecord::from_bytes(&r.as_bytes()[1..]).is_none());
        let v = encode(&back);
        let expected = json!({
            "processorId": 1, "processId": null, "threadId": null, "userId": 1000, "groupId": 7,
            "parentProcessId": null, "hostProcessId": 4242, "hostThreadId": 4243,
            "hostParentProcessId": null,
            "executable": null, "threadStartTime": null,
            "mountNamespace": null, "pidNamespace": null,
            // From the cgroup id of the exit record: known without the entry record.
            "containerId": "a".repeat(64),
            "inFd": {"fd": 30, "type": "unknown", "reason": "entry record missing"},
            "outFd": {"fd": 29, "type": "unknown", "reason": "entry record missing"},
            "processName": "nginx", "hostName": "web-1", "cgroupId": 4321, "eventId": "40",
            "eventName": "sendfile", "syscall": "sendfile64", "syscallNr": 40,
            "returnValue": 21952, "errno": null, "argsNum": 4,
            "args": [
                {"name": "out_fd", "type": "int", "value": 29},
                {"name": "in_fd", "type": "int", "value": 30},
                {"name": "offset", "type": "off_t*", "value": 140723599012848u64},
                {"name": "count", "type": "size_t", "value": 21952}
            ],
            "offsetValue": 0, "offsetAfter": 21952, "durationNs": 500,
            "contextFlags": {"isCompat": false}, "hook": "kprobe", "schemaVersion": 2
        });
        let mut got = v.clone();
        let ts = got.as_object_mut().unwrap().remove("timestamp").unwrap();
        assert_eq!(got, expected);
        assert!(ts.as_u64().unwrap() > 1_600_000_000_000_000_000);
    }

    #[test]
    fn entry_records_become_fd_objects_and_process_context() {
        let e = entry();
        // SAFETY: repr(C) plain data without implicit padding (checked in the common crate).
        let mut bytes = unsafe {
            std::slice::from_raw_parts(
                (&e.rec as *const EntryRecord).cast::<u8>(),
                EntryRecord::SIZE,
            )
        }
        .to_vec();
        bytes.extend_from_slice(&e.tail);
        let (rec, tail) = EntryRecord::from_bytes(&bytes).unwrap();
        assert_eq!(rec, e.rec);
        assert!(EntryRecord::from_bytes(&bytes[..bytes.len() - 1]).is_none());
        let back = Entry::new(rec, tail.to_vec());
        let v = encode_with(&record(), Some(&back));
        assert_eq!(
            v["inFd"],
            json!({"fd": 30, "type": "file", "path": "/srv/www/a \"b\"\n\u{fffd}.jpg",
                   "pathHex": hex(b"/srv/www/a \"b\"\n\xff.jpg"), "truncated": false,
                   "inode": 1234, "dev": 2049, "deleted": true})
        );
        assert_eq!(
            v["outFd"],
            json!({"fd": 29, "type": "socket", "family": "AF_INET", "protocol": "TCP",
                   "inode": 99, "local": {"ip": "10.0.0.5", "port": 80},
                   "remote": {"ip": "203.0.113.7", "port": 51234}})
        );
        assert_eq!(
            v["executable"],
            json!({"path": "/usr/sbin/nginx", "truncated": false})
        );
        assert_eq!(v["containerId"], "a".repeat(64));
        assert_eq!(
            (&v["processId"], &v["threadId"], &v["parentProcessId"]),
            (&json!(1), &json!(2), &json!(0))
        );
        assert_eq!(
            (&v["hostProcessId"], &v["hostParentProcessId"]),
            (&json!(4242), &json!(4000))
        );
        assert_eq!(v["mountNamespace"], 4026531840u64);
    }

    #[test]
    fn a_cached_process_part_is_not_decoded_from_the_record() {
        let full = entry();
        let mut rec = full.rec;
        rec.flags |= fd_flags::PROC_CACHED;
        rec.exe = Seg::default();
        let cached = Entry::new(rec, full.tail.clone());
        assert!(cached.proc_cached() && cached.proc.is_none());
        // Without the kept part, the process fields are null, never guessed.
        let v = encode_with(&record(), Some(&cached));
        assert_eq!(
            (&v["processId"], &v["executable"]),
            (&Value::Null, &Value::Null)
        );
        assert_eq!(v["inFd"]["type"], "file");
        // With it (what the daemon does), they are the full record's.
        let with = Entry {
            proc: full.proc.clone(),
            ..cached
        };
        assert_eq!(
            encode_with(&record(), Some(&with))["executable"]["path"],
            "/usr/sbin/nginx"
        );
    }

    #[test]
    fn sockets_and_odd_descriptors() {
        let mut e = entry();
        let mut tail = e.tail.clone();
        e.rec.out_fd = FdRecord {
            kind: fd_kind::SOCKET,
            family: 1,
            sock_type: 1,
            local_path: Seg::default(),
            remote_path: push_raw(&mut tail, b"\0abstract\0x"),
            ..FdRecord::default()
        };
        e.rec.in_fd = FdRecord {
            kind: fd_kind::UNKNOWN,
            reason: fd_reason::NOT_OPEN,
            ..FdRecord::default()
        };
        e.tail = tail;
        let v = encode_with(&record(), Some(&e));
        assert_eq!(
            v["inFd"],
            json!({"fd": 30, "type": "unknown", "reason": "not open"})
        );
        assert_eq!(v["outFd"]["protocol"], "STREAM");
        assert_eq!(v["outFd"]["local"], Value::Null);
        assert_eq!(v["outFd"]["remote"]["path"], "@abstract\u{0}x");
        let mut six = [0u8; 16];
        six[15] = 1;
        assert_eq!(
            inet_endpoint(10, &six, 443),
            Some(Endpoint::Inet {
                ip: "::1".into(),
                port: 443
            })
        );
        assert_eq!(inet_endpoint(2, &[0; 16], 0), None);
    }

    #[test]
    fn pseudo_files_are_named_as_the_kernel_does_and_anomalies_are_flagged() {
        let mut e = entry();
        let mut tail = e.tail.clone();
        let name = push_raw(&mut tail, b"\x07memfd:x");
        e.tail = tail;
        e.rec.in_fd = FdRecord {
            kind: fd_kind::FILE,
            ino: 5,
            flags: fd_flags::PSEUDO | fd_flags::OUTSIDE_ROOT,
            fs_magic: 0x0102_1994,
            path: name,
            ..FdRecord::default()
        };
        let v = encode_with(&record(), Some(&e));
        assert_eq!(
            v["inFd"],
            json!({"fd": 30, "type": "file", "path": "/memfd:x (deleted)", "truncated": false,
                   "inode": 5, "dev": 0, "deleted": true, "pseudo": true})
        );
        assert_eq!(
            pseudo_name(b"\x09[eventfd]", 0x0904_1934, 1),
            b"anon_inode:[eventfd]"
        );
        assert_eq!(pseudo_name(b"", 0x5049_5045, 77), b"pipe:[77]");
        // A lazily unmounted tree: flagged, and not also "outside root" (it has no root).
        e.rec.in_fd.flags = fd_flags::DETACHED | fd_flags::OUTSIDE_ROOT;
        e.rec.in_fd.path = sendfile_trace_common::encode_path(&mut e.tail, b"/etc/passwd");
        let v = encode_with(&record(), Some(&e));
        assert_eq!(
            (&v["inFd"]["path"], &v["inFd"]["detached"]),
            (&json!("/etc/passwd"), &json!(true))
        );
        assert!(v["inFd"].get("outsideRoot").is_none() && v["inFd"].get("pseudo").is_none());
        e.rec.in_fd.flags = fd_flags::OUTSIDE_ROOT;
        let v = encode_with(&record(), Some(&e));
        assert_eq!(v["inFd"]["outsideRoot"], true);
        // Unknown when the walk was cut short.
        e.rec.in_fd.flags = fd_flags::OUTSIDE_ROOT | fd_flags::PATH_TRUNCATED;
        assert!(
            encode_with(&record(), Some(&e))["inFd"]
                .get("outsideRoot")
                .is_none()
        );
    }

    #[test]
    fn devices_encode_like_stat() {
        assert_eq!(st_dev((8 << 20) | 1), 2049);
        assert_eq!(st_dev(254 << 20), 65024);
        assert_eq!(st_dev((1 << 20) | 3), 259);
        assert_eq!(st_dev(300), 1048620); // minor > 255: glibc makedev(0, 300)
    }

    #[test]
    fn unreadable_offset_is_null_not_zero_and_errors_are_named() {
        let mut r = record();
        r.flags = flags::COMPAT | flags::OFFSET_32BIT;
        r.syscall_nr = 187;
        r.ret = -14;
        r.count = u64::MAX;
        let v = encode(&r);
        assert_eq!(v["offsetValue"], Value::Null);
        assert_eq!(v["offsetAfter"], Value::Null);
        assert_eq!(v["errno"], "EFAULT");
        assert_eq!(v["returnValue"], -14);
        assert_eq!(v["syscall"], "sendfile");
        assert_eq!(v["contextFlags"]["isCompat"], true);
        assert_eq!(v["args"][3]["value"], u64::MAX);
    }

    #[test]
    fn errno_names() {
        assert_eq!(errno_name(0), None);
        assert_eq!(errno_name(2147479552), None);
        assert_eq!(errno_name(-9).as_deref(), Some("EBADF"));
        assert_eq!(errno_name(-11).as_deref(), Some("EAGAIN"));
        assert_eq!(errno_name(-22).as_deref(), Some("EINVAL"));
        assert_eq!(errno_name(-512).as_deref(), Some("ERESTARTSYS"));
        assert_eq!(errno_name(-4000).as_deref(), Some("E4000"));
        assert_eq!(errno_name(-5000), None);
    }

    #[test]
    fn hostile_process_names_stay_one_line_and_exact() {
        for name in [
            &b"a\"b\\c\nd"[..],
            b"\x1b[31mred\t",
            b"\xff\xfeok\x01",
            b"fifteen_chars_x",
        ] {
            let mut r = record();
            r.comm = [0; 16];
            r.comm[..name.len()].copy_from_slice(name);
            let v = encode(&r);
            match std::str::from_utf8(name) {
                Ok(s) => {
                    assert_eq!(v["processName"], s);
                    assert!(v.get("processNameHex").is_none());
                }
                Err(_) => {
                    let hex: String = name.iter().map(|b| format!("{b:02x}")).collect();
                    assert_eq!(v["processNameHex"], hex);
                    assert_eq!(v["processName"], String::from_utf8_lossy(name).as_ref());
                }
            }
        }
    }
}
