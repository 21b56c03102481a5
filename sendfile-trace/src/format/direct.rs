//! Hand-written JSON for the hot record (one sendfile call) in every JSON format: the bytes go
//! straight into the output `Vec`, the constant runs of keys and punctuation as `&'static [u8]`,
//! integers through `itoa`, strings through [`json::write_str`] (the escapes of
//! [`json::SafeFormatter`]). What it writes is byte for byte what the `Serialize` path writes
//! (each record's own `Serialize`, `EcsDoc`, `OcsfDoc`), which stays as the reference: the tests
//! in `format::tests` render many records, hostile names included, both ways and compare.
//!
//! The serde walk costs a key and a value call per field, with a comma decision between each;
//! here a run of constant keys is one copy.

use super::{
    ECS_VERSION, OCSF_VERSION, base_name, errno_description, fd_type, is_inet, json, lower,
    path_of, rfc3339_into, shown_path, socket_of,
};
use crate::event::{Endpoint, Executable, FdInfo, FdKind, PathInfo, SendfileEvent, SocketInfo};

/// The output buffer, with the few kinds of value a record holds.
struct Out<'a>(&'a mut Vec<u8>);

impl Out<'_> {
    /// Constant bytes (keys, punctuation).
    #[inline(always)]
    fn raw(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    /// A JSON string, escaped as [`json::write_str`] escapes.
    #[inline(always)]
    fn str(&mut self, s: &str) {
        json::write_str(self.0, s);
    }
    /// A string or `null`.
    #[inline(always)]
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.str(s),
            None => self.raw(b"null"),
        }
    }
    /// An integer in decimal, as serde_json (itoa) writes it: twenty `0`s are appended (a
    /// constant store), the digits written over the first ones, two at a time, and the rest
    /// cut off, so that no copy of a variable length (a `memcpy` call each) and no reload of
    /// narrow stores from a stack buffer is made.
    #[inline(always)]
    fn int(&mut self, n: impl Int) {
        let (negative, mut n) = n.sign_abs();
        if negative {
            self.0.push(b'-');
        }
        let len = n.checked_ilog10().map_or(1, |l| l as usize + 1);
        let start = self.0.len();
        self.0.extend_from_slice(&[b'0'; 20]);
        let digits = &mut self.0[start..start + 20];
        let mut at = len;
        while n >= 100 {
            let d = (n % 100) as usize * 2;
            n /= 100;
            at -= 2;
            digits[at..at + 2].copy_from_slice(&PAIRS[d..d + 2]);
        }
        if n >= 10 {
            let d = n as usize * 2;
            digits[..2].copy_from_slice(&PAIRS[d..d + 2]);
        } else {
            digits[0] = b'0' + n as u8;
        }
        self.0.truncate(start + len);
    }
    /// An integer or `null`.
    #[inline(always)]
    fn opt_int(&mut self, n: Option<impl Int>) {
        match n {
            Some(n) => self.int(n),
            None => self.raw(b"null"),
        }
    }
    /// An integer as a JSON string (`"33"`, the `Decimal` of the flat schemas).
    #[inline(always)]
    fn decimal(&mut self, n: u64) {
        self.0.push(b'"');
        self.int(n);
        self.0.push(b'"');
    }
    #[inline(always)]
    fn bool(&mut self, b: bool) {
        self.raw(if b { b"true" } else { b"false" });
    }
    /// A timestamp as `rfc3339` writes it, quoted (digits and separators: nothing to escape).
    #[inline(always)]
    fn rfc3339(&mut self, ns: u64) {
        let mut buf = [0u8; 30];
        self.0.push(b'"');
        self.raw(rfc3339_into(ns, &mut buf).as_bytes());
        self.0.push(b'"');
    }
}

/// The two digits of every number below 100.
const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// The integer types of the records, as a sign and a magnitude.
trait Int: Copy {
    fn sign_abs(self) -> (bool, u64);
}

macro_rules! unsigned {
    ($($t:ty),*) => {$(
        impl Int for $t {
            #[inline(always)]
            fn sign_abs(self) -> (bool, u64) {
                (false, u64::from(self))
            }
        }
    )*};
}
unsigned!(u8, u16, u32, u64);

macro_rules! signed {
    ($($t:ty),*) => {$(
        impl Int for $t {
            #[inline(always)]
            fn sign_abs(self) -> (bool, u64) {
                (self < 0, u64::from(self.unsigned_abs()))
            }
        }
    )*};
}
signed!(i32, i64);

// ---------------------------------------------------------------------------------------------
// tracee: the `Serialize` of `SendfileEvent` (camelCase, declaration order; `FdInfo` flattens
// its internally tagged kind: `fd`, then `type`, then the kind's fields).

/// Appends one call in the tracee contract.
pub(super) fn tracee(e: &SendfileEvent<'_>, out: &mut Vec<u8>) {
    out.reserve(768);
    let mut w = Out(out);
    w.raw(b"{\"timestamp\":");
    w.int(e.timestamp);
    w.raw(b",\"processorId\":");
    w.int(e.processor_id);
    w.raw(b",\"processId\":");
    w.opt_int(e.process_id);
    w.raw(b",\"threadId\":");
    w.opt_int(e.thread_id);
    w.raw(b",\"parentProcessId\":");
    w.opt_int(e.parent_process_id);
    w.raw(b",\"hostProcessId\":");
    w.int(e.host_process_id);
    w.raw(b",\"hostThreadId\":");
    w.int(e.host_thread_id);
    w.raw(b",\"hostParentProcessId\":");
    w.opt_int(e.host_parent_process_id);
    w.raw(b",\"userId\":");
    w.int(e.user_id);
    w.raw(b",\"groupId\":");
    w.int(e.group_id);
    w.raw(b",\"processName\":");
    w.str(&e.process_name);
    if let Some(hex) = &e.process_name_hex {
        w.raw(b",\"processNameHex\":");
        w.str(hex);
    }
    w.raw(b",\"executable\":");
    match &e.executable {
        Some(x) => tracee_executable(&mut w, x),
        None => w.raw(b"null"),
    }
    w.raw(b",\"threadStartTime\":");
    w.opt_int(e.thread_start_time);
    w.raw(b",\"mountNamespace\":");
    w.opt_int(e.mount_namespace);
    w.raw(b",\"pidNamespace\":");
    w.opt_int(e.pid_namespace);
    w.raw(b",\"hostName\":");
    w.str(e.host_name);
    w.raw(b",\"cgroupId\":");
    w.int(e.cgroup_id);
    w.raw(b",\"containerId\":");
    w.opt_str(e.container_id.as_deref());
    w.raw(b",\"eventId\":");
    w.str(e.event_id);
    w.raw(b",\"eventName\":");
    w.str(e.event_name);
    w.raw(b",\"syscall\":");
    w.str(e.syscall);
    w.raw(b",\"syscallNr\":");
    w.int(e.syscall_nr);
    w.raw(b",\"returnValue\":");
    w.int(e.return_value);
    w.raw(b",\"errno\":");
    w.opt_str(e.errno.as_deref());
    w.raw(b",\"argsNum\":");
    w.int(e.args_num);
    w.raw(b",\"args\":[");
    for (i, (a, (name, ty, head))) in e.args.iter().zip(ARGS).enumerate() {
        if i > 0 {
            w.raw(b",");
        }
        if a.name == name && a.ty == ty {
            // The decoder's names and types: one constant run.
            w.raw(head);
        } else {
            w.raw(b"{\"name\":");
            w.str(a.name);
            w.raw(b",\"type\":");
            w.str(a.ty);
            w.raw(b",\"value\":");
        }
        match a.value {
            crate::event::ArgValue::Int(v) => w.int(v),
            crate::event::ArgValue::U64(v) => w.int(v),
        }
        w.raw(b"}");
    }
    w.raw(b"],\"inFd\":");
    tracee_fd(&mut w, &e.in_fd);
    w.raw(b",\"outFd\":");
    tracee_fd(&mut w, &e.out_fd);
    w.raw(b",\"offsetValue\":");
    w.opt_int(e.offset_value);
    w.raw(b",\"offsetAfter\":");
    w.opt_int(e.offset_after);
    w.raw(b",\"durationNs\":");
    w.int(e.duration_ns);
    w.raw(b",\"contextFlags\":{\"isCompat\":");
    w.bool(e.context_flags.is_compat);
    if e.context_flags.flow_fallback {
        w.raw(b",\"flowFallback\":true");
    }
    w.raw(b"},\"hook\":");
    w.str(e.hook);
    w.raw(b",\"schemaVersion\":");
    w.int(e.schema_version);
    w.raw(b"}");
}

/// sendfile's arguments as the decoder names them, with what the tracee contract writes before
/// each value.
const ARGS: [(&str, &str, &[u8]); 4] = [
    (
        "out_fd",
        "int",
        b"{\"name\":\"out_fd\",\"type\":\"int\",\"value\":",
    ),
    (
        "in_fd",
        "int",
        b"{\"name\":\"in_fd\",\"type\":\"int\",\"value\":",
    ),
    (
        "offset",
        "off_t*",
        b"{\"name\":\"offset\",\"type\":\"off_t*\",\"value\":",
    ),
    (
        "count",
        "size_t",
        b"{\"name\":\"count\",\"type\":\"size_t\",\"value\":",
    ),
];

fn tracee_executable(w: &mut Out<'_>, x: &Executable) {
    w.raw(b"{\"path\":");
    w.str(&x.path);
    if let Some(hex) = &x.path_hex {
        w.raw(b",\"pathHex\":");
        w.str(hex);
    }
    w.raw(b",\"truncated\":");
    w.bool(x.truncated);
    if x.pseudo {
        w.raw(b",\"pseudo\":true");
    }
    if x.detached {
        w.raw(b",\"detached\":true");
    }
    w.raw(b"}");
}

fn tracee_fd(w: &mut Out<'_>, fd: &FdInfo) {
    w.raw(b"{\"fd\":");
    w.int(fd.fd);
    match &fd.kind {
        FdKind::File(p) => tracee_path(w, b",\"type\":\"file\",\"path\":", p),
        FdKind::Chardev(p) => tracee_path(w, b",\"type\":\"chardev\",\"path\":", p),
        FdKind::Other(p) => tracee_path(w, b",\"type\":\"other\",\"path\":", p),
        FdKind::Pipe { inode } => {
            w.raw(b",\"type\":\"pipe\",\"inode\":");
            w.int(*inode);
        }
        FdKind::Socket(s) => tracee_socket(w, s),
        FdKind::AnonInode { name } => {
            w.raw(b",\"type\":\"anon_inode\",\"name\":");
            w.str(name);
        }
        FdKind::Unknown { reason } => {
            w.raw(b",\"type\":\"unknown\",\"reason\":");
            w.str(reason);
        }
    }
    w.raw(b"}");
}

fn tracee_path(w: &mut Out<'_>, head: &[u8], p: &PathInfo) {
    w.raw(head);
    w.str(&p.path);
    if let Some(hex) = &p.path_hex {
        w.raw(b",\"pathHex\":");
        w.str(hex);
    }
    w.raw(b",\"truncated\":");
    w.bool(p.truncated);
    w.raw(b",\"inode\":");
    w.int(p.inode);
    w.raw(b",\"dev\":");
    w.int(p.dev);
    w.raw(b",\"deleted\":");
    w.bool(p.deleted);
    if p.pseudo {
        w.raw(b",\"pseudo\":true");
    }
    if p.detached {
        w.raw(b",\"detached\":true");
    }
    if p.outside_root {
        w.raw(b",\"outsideRoot\":true");
    }
}

fn tracee_socket(w: &mut Out<'_>, s: &SocketInfo) {
    w.raw(b",\"type\":\"socket\",\"family\":");
    w.str(&s.family);
    w.raw(b",\"protocol\":");
    w.str(&s.protocol);
    w.raw(b",\"inode\":");
    w.int(s.inode);
    w.raw(b",\"local\":");
    endpoint(w, &s.local);
    w.raw(b",\"remote\":");
    endpoint(w, &s.remote);
}

/// An `Endpoint` as its own `Serialize` writes it (the same in every format), or `null`.
fn endpoint(w: &mut Out<'_>, end: &Option<Endpoint>) {
    match end {
        Some(Endpoint::Inet { ip, port }) => {
            w.raw(b"{\"ip\":");
            w.str(ip);
            w.raw(b",\"port\":");
            w.int(*port);
            w.raw(b"}");
        }
        Some(Endpoint::Unix { path, path_hex }) => {
            w.raw(b"{\"path\":");
            w.str(path);
            if let Some(hex) = path_hex {
                w.raw(b",\"pathHex\":");
                w.str(hex);
            }
            w.raw(b"}");
        }
        None => w.raw(b"null"),
    }
}

// ---------------------------------------------------------------------------------------------
// The details shared by ECS (`sendfile`) and OCSF (`unmapped.sendfile`): `Details` and
// `SortedFd`, keys in sorted order.

fn details(w: &mut Out<'_>, e: &SendfileEvent<'_>, gid: Option<u32>) {
    w.raw(b"{\"bytes\":");
    w.opt_int((e.return_value >= 0).then_some(e.return_value));
    w.raw(b",\"cgroup_id\":");
    w.int(e.cgroup_id);
    w.raw(b",\"compat\":");
    w.bool(e.context_flags.is_compat);
    w.raw(b",\"count\":");
    w.int(e.args[3].value_u64());
    w.raw(b",\"cpu\":");
    w.int(e.processor_id);
    if let Some(gid) = gid {
        w.raw(b",\"gid\":");
        w.int(gid);
    }
    w.raw(b",\"hook\":");
    w.str(e.hook);
    w.raw(b",\"in_fd\":");
    w.int(e.in_fd.fd);
    w.raw(b",\"in_fd_info\":");
    sorted_fd(w, &e.in_fd);
    w.raw(b",\"in_fd_type\":\"");
    w.raw(fd_type(&e.in_fd).as_bytes());
    w.raw(b"\"");
    w.raw(b",\"offset_after\":");
    w.opt_int(e.offset_after);
    w.raw(b",\"offset_before\":");
    w.opt_int(e.offset_value);
    w.raw(b",\"offset_ptr\":");
    w.int(e.args[2].value_u64());
    w.raw(b",\"out_fd\":");
    w.int(e.out_fd.fd);
    w.raw(b",\"out_fd_info\":");
    sorted_fd(w, &e.out_fd);
    w.raw(b",\"out_fd_type\":\"");
    w.raw(fd_type(&e.out_fd).as_bytes());
    w.raw(b"\"");
    if let Some(hex) = &e.process_name_hex {
        w.raw(b",\"process_name_hex\":");
        w.str(hex);
    }
    w.raw(b",\"return_value\":");
    w.int(e.return_value);
    w.raw(b",\"schema_version\":");
    w.int(e.schema_version);
    w.raw(b",\"syscall\":");
    w.str(e.syscall);
    w.raw(b",\"syscall_nr\":");
    w.int(e.syscall_nr);
    w.raw(b"}");
}

fn sorted_fd(w: &mut Out<'_>, fd: &FdInfo) {
    match &fd.kind {
        FdKind::File(p) | FdKind::Chardev(p) | FdKind::Other(p) => {
            w.raw(b"{\"deleted\":");
            w.bool(p.deleted);
            w.raw(b",\"dev\":");
            w.int(p.dev);
            w.raw(b",\"fd\":");
            w.int(fd.fd);
            w.raw(b",\"inode\":");
            w.int(p.inode);
            w.raw(b",\"path\":");
            w.str(&p.path);
            if let Some(hex) = &p.path_hex {
                w.raw(b",\"pathHex\":");
                w.str(hex);
            }
            w.raw(b",\"truncated\":");
            w.bool(p.truncated);
        }
        FdKind::Pipe { inode } => {
            w.raw(b"{\"fd\":");
            w.int(fd.fd);
            w.raw(b",\"inode\":");
            w.int(*inode);
        }
        FdKind::Socket(s) => {
            w.raw(b"{\"family\":");
            w.str(&s.family);
            w.raw(b",\"fd\":");
            w.int(fd.fd);
            w.raw(b",\"inode\":");
            w.int(s.inode);
            w.raw(b",\"local\":");
            endpoint(w, &s.local);
            w.raw(b",\"protocol\":");
            w.str(&s.protocol);
            w.raw(b",\"remote\":");
            endpoint(w, &s.remote);
        }
        FdKind::AnonInode { name } => {
            w.raw(b"{\"fd\":");
            w.int(fd.fd);
            w.raw(b",\"name\":");
            w.str(name);
        }
        FdKind::Unknown { reason } => {
            w.raw(b"{\"fd\":");
            w.int(fd.fd);
            w.raw(b",\"reason\":");
            w.str(reason);
        }
    }
    // `fd_type` names are lower-case ASCII: nothing to escape.
    w.raw(b",\"type\":\"");
    w.raw(fd_type(fd).as_bytes());
    w.raw(b"\"}");
}

// ---------------------------------------------------------------------------------------------
// ECS: `EcsDoc`, keys in sorted order.

/// Appends one call as an ECS document.
pub(super) fn ecs(e: &SendfileEvent<'_>, out: &mut Vec<u8>) {
    out.reserve(1280);
    let mut w = Out(out);
    let socket = socket_of(&e.out_fd);
    w.raw(b"{\"@timestamp\":");
    w.rfc3339(e.timestamp);
    if let Some(id) = &e.container_id {
        w.raw(b",\"container\":{\"id\":");
        w.str(id);
        w.raw(b"}");
    }
    if let Some(remote) = socket.and_then(|s| s.remote.as_ref()) {
        w.raw(b",\"destination\":");
        ecs_endpoint(&mut w, remote);
    }
    w.raw(b",\"ecs\":{\"version\":");
    w.str(ECS_VERSION);
    w.raw(b"}");
    if let Some(code) = e.errno.as_deref() {
        w.raw(b",\"error\":{\"code\":");
        w.str(code);
        w.raw(b",\"message\":");
        w.str(&errno_description(e.return_value));
        w.raw(b"}");
    }
    w.raw(if socket.is_some() {
        b",\"event\":{\"action\":\"sendfile\",\"category\":[\"file\",\"network\"]"
    } else {
        b",\"event\":{\"action\":\"sendfile\",\"category\":[\"file\"]"
    });
    w.raw(b",\"dataset\":\"sendfile_trace.sendfile\",\"duration\":");
    w.int(e.duration_ns);
    w.raw(if e.errno.is_some() {
        b",\"kind\":\"event\",\"module\":\"sendfile_trace\",\"outcome\":\"failure\",\"type\":[\"access\"]}"
    } else {
        b",\"kind\":\"event\",\"module\":\"sendfile_trace\",\"outcome\":\"success\",\"type\":[\"access\"]}"
    });
    if let Some(p) = path_of(&e.in_fd) {
        w.raw(b",\"file\":{\"device\":");
        w.decimal(p.dev);
        w.raw(b",\"inode\":");
        w.decimal(p.inode);
        w.raw(b",\"path\":");
        w.str(&shown_path(&p.path, p.truncated));
        w.raw(b"}");
    }
    w.raw(b",\"group\":{\"id\":");
    w.decimal(e.group_id.into());
    w.raw(b"},\"host\":{\"name\":");
    w.str(e.host_name);
    w.raw(b"}");
    if let Some(s) = socket.filter(|s| is_inet(s)) {
        w.raw(b",\"network\":{\"transport\":");
        w.str(&lower(&s.protocol));
        w.raw(if s.family == "AF_INET6" {
            b",\"type\":\"ipv6\"}"
        } else {
            b",\"type\":\"ipv4\"}"
        });
    }
    w.raw(b",\"process\":{");
    if let Some(x) = &e.executable {
        w.raw(b"\"executable\":");
        w.str(&shown_path(&x.path, x.truncated));
        w.raw(b",");
    }
    w.raw(b"\"name\":");
    w.str(&e.process_name);
    if let Some(pid) = e.host_parent_process_id {
        w.raw(b",\"parent\":{\"pid\":");
        w.int(pid);
        w.raw(b"}");
    }
    w.raw(b",\"pid\":");
    w.int(e.host_process_id);
    w.raw(b",\"thread\":{\"id\":");
    w.int(e.host_thread_id);
    w.raw(b"}},\"sendfile\":");
    details(&mut w, e, None);
    if let Some(local) = socket.and_then(|s| s.local.as_ref()) {
        w.raw(b",\"source\":");
        ecs_endpoint(&mut w, local);
    }
    w.raw(b",\"user\":{\"id\":");
    w.decimal(e.user_id.into());
    w.raw(b"}}");
}

fn ecs_endpoint(w: &mut Out<'_>, end: &Endpoint) {
    match end {
        Endpoint::Inet { ip, port } => {
            w.raw(b"{\"address\":");
            w.str(ip);
            w.raw(b",\"ip\":");
            w.str(ip);
            w.raw(b",\"port\":");
            w.int(*port);
            w.raw(b"}");
        }
        Endpoint::Unix { path, .. } => {
            w.raw(b"{\"address\":");
            w.str(path);
            w.raw(b"}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// OCSF: `OcsfDoc`, keys in sorted order.

/// The constant run of `metadata` up to the original time.
const OCSF_METADATA: &[u8] = b",\"metadata\":{\"event_code\":\"sendfile\",\"original_time\":";
/// The constant run of `metadata` after the original time, with the severity that follows.
const OCSF_PRODUCT: &str = concat!(
    ",\"product\":{\"name\":\"sendfile-trace\",\"vendor_name\":\"sendfile-trace\",\"version\":\"",
    env!("CARGO_PKG_VERSION"),
    "\"},\"profiles\":[\"host\"],\"version\":"
);

/// Appends one call as an OCSF event.
pub(super) fn ocsf(e: &SendfileEvent<'_>, out: &mut Vec<u8>) {
    out.reserve(1408);
    let mut w = Out(out);
    let socket = socket_of(&e.out_fd);
    let (class_uid, activity_id): (u32, u32) = match socket {
        Some(_) => (4001, 6),
        None => (1001, 2),
    };
    w.raw(match socket {
        Some(_) => b"{\"activity_id\":6,\"activity_name\":\"Traffic\",\"actor\":{\"process\":{",
        None => b"{\"activity_id\":2,\"activity_name\":\"Read\",\"actor\":{\"process\":{",
    });
    if let Some(uid) = &e.container_id {
        w.raw(b"\"container\":{\"uid\":");
        w.str(uid);
        w.raw(b"},");
    }
    if let Some(x) = &e.executable {
        w.raw(b"\"file\":{\"name\":");
        w.str(base_name(&x.path));
        w.raw(b",\"path\":");
        w.str(&shown_path(&x.path, x.truncated));
        w.raw(b",\"type_id\":1},");
    }
    w.raw(b"\"name\":");
    w.str(&e.process_name);
    if let Some(pid) = e.host_parent_process_id {
        w.raw(b",\"parent_process\":{\"pid\":");
        w.int(pid);
        w.raw(b"}");
    }
    w.raw(b",\"pid\":");
    w.int(e.host_process_id);
    w.raw(b",\"tid\":");
    w.int(e.host_thread_id);
    w.raw(b",\"user\":{\"uid\":");
    w.decimal(e.user_id.into());
    w.raw(b"}}}");
    match socket {
        Some(s) => {
            w.raw(b",\"category_name\":\"Network Activity\",\"category_uid\":4,\"class_name\":\"Network Activity\",\"class_uid\":4001,\"connection_info\":{\"direction_id\":0");
            if is_inet(s) {
                w.raw(b",\"protocol_name\":");
                w.str(&lower(&s.protocol));
            }
            w.raw(b"}");
        }
        None => w.raw(b",\"category_name\":\"System Activity\",\"category_uid\":1,\"class_name\":\"File System Activity\",\"class_uid\":1001"),
    }
    w.raw(b",\"device\":{\"hostname\":");
    w.str(e.host_name);
    w.raw(b",\"type_id\":0}");
    if let Some(s) = socket {
        w.raw(b",\"dst_endpoint\":");
        ocsf_endpoint(&mut w, &s.remote);
    } else {
        // The file whose data is read: in_fd (sendfile's input is always a file).
        match path_of(&e.in_fd) {
            Some(p) => {
                w.raw(b",\"file\":{\"name\":");
                w.str(base_name(&p.path));
                w.raw(b",\"path\":");
                w.str(&shown_path(&p.path, p.truncated));
                w.raw(if matches!(e.in_fd.kind, FdKind::File(_)) {
                    b",\"type_id\":1,\"uid\":"
                } else {
                    b",\"type_id\":99,\"uid\":"
                });
                w.decimal(p.inode);
                w.raw(b"}");
            }
            None => w.raw(b",\"file\":{\"name\":\"\",\"type_id\":0}"),
        }
    }
    w.raw(OCSF_METADATA);
    w.rfc3339(e.timestamp);
    w.raw(OCSF_PRODUCT.as_bytes());
    w.str(OCSF_VERSION);
    w.raw(b"},\"severity\":\"Informational\",\"severity_id\":1");
    if let Some(s) = socket {
        w.raw(b",\"src_endpoint\":");
        ocsf_endpoint(&mut w, &s.local);
    }
    match e.errno.as_deref() {
        Some(code) => {
            w.raw(b",\"status\":\"Failure\",\"status_code\":");
            w.str(code);
            w.raw(b",\"status_detail\":");
            w.str(&errno_description(e.return_value));
            w.raw(b",\"status_id\":2");
        }
        None => w.raw(b",\"status\":\"Success\",\"status_id\":1"),
    }
    w.raw(b",\"time\":");
    w.int(e.timestamp / 1_000_000);
    w.raw(match socket {
        Some(_) => b",\"type_name\":\"Network Activity: Traffic\",\"type_uid\":",
        None => b",\"type_name\":\"File System Activity: Read\",\"type_uid\":",
    });
    w.int(class_uid * 100 + activity_id);
    w.raw(b",\"unmapped\":{\"sendfile\":");
    details(&mut w, e, Some(e.group_id));
    w.raw(b"}}");
}

fn ocsf_endpoint(w: &mut Out<'_>, end: &Option<Endpoint>) {
    match end {
        Some(Endpoint::Inet { ip, port }) => {
            w.raw(b"{\"ip\":");
            w.str(ip);
            w.raw(b",\"port\":");
            w.int(*port);
            w.raw(b"}");
        }
        Some(Endpoint::Unix { path, .. }) => {
            w.raw(b"{\"name\":");
            w.str(path);
            w.raw(b"}");
        }
        None => w.raw(b"{}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_written_as_itoa_writes_them() {
        let mut out = Vec::new();
        let mut check = |n: i64| {
            out.clear();
            Out(&mut out).int(n);
            assert_eq!(out, itoa::Buffer::new().format(n).as_bytes());
        };
        for n in -1000..1000 {
            check(n);
        }
        let mut p = 1i64;
        while let Some(q) = p.checked_mul(10) {
            for n in [p - 1, p, p + 1, -p, -p - 1] {
                check(n);
            }
            p = q;
        }
        check(i64::MIN);
        check(i64::MAX);
        let mut out = Vec::new();
        for n in [
            0,
            9,
            10,
            99,
            100,
            10u64.pow(19) - 1,
            10u64.pow(19),
            u64::MAX,
        ] {
            out.clear();
            Out(&mut out).int(n);
            assert_eq!(out, itoa::Buffer::new().format(n).as_bytes());
        }
    }
}
