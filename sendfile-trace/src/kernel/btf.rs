//! The kernel struct offsets the BPF programs need, read from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`) at load time, so that one BPF object runs on every kernel.
//!
//! A small reader of the BTF format (kernel `Documentation/bpf/btf.rst`): only struct and union
//! members, the modifiers between them, and sizes. aya's own parser keeps its type table private,
//! and `btf-rs` is LGPL, which this MIT/Apache project does not link.

use std::collections::HashMap;

use sendfile_trace_common::{FILE_WINDOW, INODE_WINDOW, Offsets};

const BTF_MAGIC: u16 = 0xeb9f;

/// The `task_struct` member holding this architecture's "32-bit syscall" bit, which the
/// tracepoint hook tests on every syscall: x86 `thread_info.status` (`TS_COMPAT`), arm64
/// `thread_info.flags` (`TIF_32BIT`; arm64's `thread_info` has no `status`).
#[cfg(target_arch = "x86_64")]
pub const COMPAT_WORD: &str = "thread_info.status";
/// The `task_struct` member holding this architecture's "32-bit syscall" bit, which the
/// tracepoint hook tests on every syscall: x86 `thread_info.status` (`TS_COMPAT`), arm64
/// `thread_info.flags` (`TIF_32BIT`; arm64's `thread_info` has no `status`).
#[cfg(target_arch = "aarch64")]
pub const COMPAT_WORD: &str = "thread_info.flags";
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// A struct or union member.
#[derive(Clone, Copy, Debug)]
struct Member {
    name_off: u32,
    ty: u32,
    bit_offset: u32,
    bitfield: bool,
}

/// Parsed kernel BTF: the raw bytes and, per type id, where its record starts. Members are read
/// on demand, so that loading costs one pass and one small vector (vmlinux has ~150k types; a
/// full parse would dominate the tracer's start time and peak memory).
pub struct Btf {
    data: Vec<u8>,
    strings: std::ops::Range<usize>,
    /// Offset in `data` of each type's record; index 0 (void) is unused.
    starts: Vec<u32>,
    /// Named structs with members, by name.
    structs: HashMap<Box<[u8]>, u32>,
}

/// Why offsets could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The BTF blob is malformed.
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    /// A struct or field the programs read is missing.
    #[error("this kernel's BTF has no {0}")]
    Missing(String),
    /// A field is a bitfield or not byte-aligned.
    #[error("{0} is a bitfield in this kernel's BTF")]
    Bitfield(String),
}

fn u16_at(b: &[u8], o: usize) -> Result<u16, BtfError> {
    b.get(o..o + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or(BtfError::Malformed("truncated"))
}

fn u32_at(b: &[u8], o: usize) -> Result<u32, BtfError> {
    b.get(o..o + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

/// Bytes after a type's 12-byte header.
fn extra_len(kind: u32, vlen: usize) -> usize {
    match kind {
        KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
        KIND_ARRAY => 12,
        KIND_STRUCT | KIND_UNION => 12 * vlen,
        KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
        KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
        // KIND_PTR (2), FWD, TYPEDEF, modifiers, FUNC, FLOAT, TYPE_TAG: nothing more.
        _ => 0,
    }
}

impl Btf {
    /// Indexes a little-endian BTF blob.
    pub fn parse(data: Vec<u8>) -> Result<Btf, BtfError> {
        let b = &data;
        if u16_at(b, 0)? != BTF_MAGIC {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(b, 4)? as usize;
        let (type_off, type_len) = (u32_at(b, 8)? as usize, u32_at(b, 12)? as usize);
        let (str_off, str_len) = (u32_at(b, 16)? as usize, u32_at(b, 20)? as usize);
        let types = hdr_len + type_off..hdr_len + type_off + type_len;
        let strings = hdr_len + str_off..hdr_len + str_off + str_len;
        if types.end > b.len() || strings.end > b.len() {
            return Err(BtfError::Malformed("section out of bounds"));
        }
        let mut starts = vec![0u32];
        let mut structs = HashMap::new();
        let mut o = types.start;
        while o < types.end {
            let name_off = u32_at(b, o)?;
            let info = u32_at(b, o + 4)?;
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            if kind == KIND_STRUCT && name_off != 0 && vlen > 0 {
                let s = b
                    .get(strings.start + name_off as usize..strings.end)
                    .unwrap_or_default();
                let name = &s[..s.iter().position(|&c| c == 0).unwrap_or(s.len())];
                // The first complete definition wins (duplicates are identical).
                structs.entry(name.into()).or_insert(starts.len() as u32);
            }
            starts.push(o as u32);
            o += 12 + extra_len(kind, vlen);
        }
        Ok(Btf {
            data,
            strings,
            starts,
            structs,
        })
    }

    /// Reads and indexes `/sys/kernel/btf/vmlinux`.
    pub fn from_sys_fs() -> Result<Btf, BtfError> {
        let path = crate::kernel::system::VMLINUX_BTF;
        let bytes = std::fs::read(path).map_err(|source| BtfError::Read { path, source })?;
        Btf::parse(bytes)
    }

    /// The string at `off` in the string section.
    fn string(&self, off: u32) -> &[u8] {
        let s = self
            .data
            .get(self.strings.start + off as usize..self.strings.end)
            .unwrap_or_default();
        &s[..s.iter().position(|&c| c == 0).unwrap_or(s.len())]
    }

    /// (kind, vlen, size-or-type, record start) of type `id`.
    fn header(&self, id: u32) -> Result<(u32, usize, u32, usize), BtfError> {
        let start = *self
            .starts
            .get(id as usize)
            .filter(|_| id != 0)
            .ok_or(BtfError::Malformed("type id out of range"))? as usize;
        let info = u32_at(&self.data, start + 4)?;
        Ok((
            (info >> 24) & 0x1f,
            (info & 0xffff) as usize,
            u32_at(&self.data, start + 8)?,
            start,
        ))
    }

    /// Follows typedefs and modifiers to the underlying type id.
    fn resolve(&self, mut id: u32) -> Result<u32, BtfError> {
        for _ in 0..32 {
            let (kind, _, next, _) = self.header(id)?;
            match kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = next
                }
                _ => return Ok(id),
            }
        }
        Err(BtfError::Malformed("modifier chain too long"))
    }

    /// The members of struct/union `id` (empty for other kinds).
    fn members(&self, id: u32) -> Result<Vec<Member>, BtfError> {
        let (kind, vlen, _, start) = self.header(id)?;
        if !matches!(kind, KIND_STRUCT | KIND_UNION) {
            return Ok(Vec::new());
        }
        let kind_flag = u32_at(&self.data, start + 4)? >> 31 == 1;
        (0..vlen)
            .map(|i| {
                let m = start + 12 + i * 12;
                let raw = u32_at(&self.data, m + 8)?;
                let (bit_offset, bits) = if kind_flag {
                    (raw & 0xff_ffff, raw >> 24)
                } else {
                    (raw, 0)
                };
                Ok(Member {
                    name_off: u32_at(&self.data, m)?,
                    ty: u32_at(&self.data, m + 4)?,
                    bit_offset,
                    bitfield: bits != 0,
                })
            })
            .collect()
    }

    /// Finds member `name` of struct/union `id`, looking inside anonymous members; returns its
    /// bit offset from the start of `id` and the member.
    fn member(&self, id: u32, name: &str) -> Result<Option<(u32, Member)>, BtfError> {
        for m in self.members(self.resolve(id)?)? {
            let m_name = self.string(m.name_off);
            if m_name == name.as_bytes() {
                return Ok(Some((m.bit_offset, m)));
            }
            if m_name.is_empty()
                && let Some((off, found)) = self.member(m.ty, name)?
            {
                return Ok(Some((m.bit_offset + off, found)));
            }
        }
        Ok(None)
    }

    /// The id of the named struct with members.
    fn struct_id(&self, name: &str) -> Result<u32, BtfError> {
        self.structs
            .get(name.as_bytes())
            .copied()
            .ok_or_else(|| BtfError::Missing(format!("struct {name}")))
    }

    /// Byte offset of `path` (e.g. `["d_name", "len"]`) inside struct `strukt`; each path element
    /// may list alternative names separated by `|` (renamed fields).
    pub fn offset_of(&self, strukt: &str, path: &[&str]) -> Result<u32, BtfError> {
        let what = || format!("{strukt}.{}", path.join("."));
        let mut id = self.struct_id(strukt)?;
        let mut bits = 0;
        for field in path {
            let mut found = None;
            for alt in field.split('|') {
                if let Some(hit) = self.member(id, alt)? {
                    found = Some(hit);
                    break;
                }
            }
            let (off, m) = found.ok_or_else(|| BtfError::Missing(what()))?;
            if m.bitfield || (bits + off) % 8 != 0 {
                return Err(BtfError::Bitfield(what()));
            }
            bits += off;
            id = m.ty;
        }
        Ok(bits / 8)
    }

    /// Size in bytes of struct `strukt`.
    pub fn size_of(&self, strukt: &str) -> Result<u32, BtfError> {
        Ok(self.header(self.struct_id(strukt)?)?.2)
    }

    /// Every offset the BPF programs use.
    pub fn offsets(&self) -> Result<Offsets, BtfError> {
        let o = |s: &str, p: &str| self.offset_of(s, &p.split('.').collect::<Vec<_>>());
        let mut offsets = self.all_offsets(o)?;
        offsets.file_window = offsets.file_inode.min(offsets.file_path_mnt);
        check_layout(&offsets)?;
        Ok(offsets)
    }

    fn all_offsets(
        &self,
        o: impl Fn(&str, &str) -> Result<u32, BtfError>,
    ) -> Result<Offsets, BtfError> {
        Ok(Offsets {
            task_compat_word: o("task_struct", COMPAT_WORD)?,
            task_tgid: o("task_struct", "tgid")?,
            task_real_parent: o("task_struct", "real_parent")?,
            task_group_leader: o("task_struct", "group_leader")?,
            task_thread_pid: o("task_struct", "thread_pid")?,
            task_start_boottime: o("task_struct", "start_boottime")?,
            task_files: o("task_struct", "files")?,
            task_mm: o("task_struct", "mm")?,
            task_nsproxy: o("task_struct", "nsproxy")?,
            task_cgroups: o("task_struct", "cgroups")?,
            pid_level: o("pid", "level")?,
            pid_numbers: o("pid", "numbers")?,
            upid_size: self.size_of("upid")?,
            upid_nr: o("upid", "nr")?,
            upid_ns: o("upid", "ns")?,
            pid_ns_inum: o("pid_namespace", "ns.inum")?,
            nsproxy_mnt_ns: o("nsproxy", "mnt_ns")?,
            mnt_ns_inum: o("mnt_namespace", "ns.inum")?,
            mm_exe_file: o("mm_struct", "exe_file")?,
            files_fdt: o("files_struct", "fdt")?,
            fdt_max_fds: o("fdtable", "max_fds")?,
            fdt_fd: o("fdtable", "fd")?,
            file_path_mnt: o("file", "f_path.mnt")?,
            file_path_dentry: o("file", "f_path.dentry")?,
            file_inode: o("file", "f_inode")?,
            file_private_data: o("file", "private_data")?,
            inode_mode: o("inode", "i_mode")?,
            inode_ino: o("inode", "i_ino")?,
            inode_sb: o("inode", "i_sb")?,
            sb_dev: o("super_block", "s_dev")?,
            dentry_parent: o("dentry", "d_parent")?,
            dentry_name_len: o("dentry", "d_name.len")?,
            dentry_name: o("dentry", "d_name.name")?,
            dentry_hash_pprev: o("dentry", "d_hash.pprev")?,
            mount_mnt: o("mount", "mnt")?,
            mount_parent: o("mount", "mnt_parent")?,
            mount_mountpoint: o("mount", "mnt_mountpoint")?,
            vfsmount_root: o("vfsmount", "mnt_root")?,
            socket_sk: o("socket", "sk")?,
            sk_family: o("sock", "__sk_common.skc_family")?,
            sk_protocol: o("sock", "sk_protocol")?,
            sk_type: o("sock", "sk_type")?,
            sk_rcv_saddr: o("sock", "__sk_common.skc_rcv_saddr")?,
            sk_daddr: o("sock", "__sk_common.skc_daddr")?,
            sk_num: o("sock", "__sk_common.skc_num")?,
            sk_dport: o("sock", "__sk_common.skc_dport")?,
            sk_v6_rcv_saddr: o("sock", "__sk_common.skc_v6_rcv_saddr")?,
            sk_v6_daddr: o("sock", "__sk_common.skc_v6_daddr")?,
            unix_addr: o("unix_sock", "addr")?,
            unix_peer: o("unix_sock", "peer")?,
            unix_address_len: o("unix_address", "len")?,
            unix_address_name: o("unix_address", "name")?,
            css_set_dfl_cgrp: o("css_set", "dfl_cgrp")?,
            cgroup_kn: o("cgroup", "kn")?,
            kn_name: o("kernfs_node", "name")?,
            kn_parent: o("kernfs_node", "__parent|parent")?,
            file_window: 0,
            task_fs: o("task_struct", "fs")?,
            fs_root: o("fs_struct", "root")?,
            mnt_ns_root: o("mnt_namespace", "root")?,
            sb_magic: o("super_block", "s_magic")?,
            bpf_loop: self.has_enum_value("bpf_func_id", "BPF_FUNC_loop") as u32,
        })
    }

    /// Whether the enum named `name` has a value named `value`.
    pub fn has_enum_value(&self, name: &str, value: &str) -> bool {
        self.starts.iter().skip(1).any(|&start| {
            let start = start as usize;
            let (Ok(name_off), Ok(info)) =
                (u32_at(&self.data, start), u32_at(&self.data, start + 4))
            else {
                return false;
            };
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            // Values are (name_off, val) pairs in ENUM, (name_off, lo32, hi32) in ENUM64.
            let step = match kind {
                KIND_ENUM => 8,
                KIND_ENUM64 => 12,
                _ => return false,
            };
            self.string(name_off) == name.as_bytes()
                && (0..vlen).any(|i| {
                    u32_at(&self.data, start + 12 + i * step)
                        .is_ok_and(|v| self.string(v) == value.as_bytes())
                })
        })
    }
}

/// The layout the BPF programs' combined reads rely on: one read per path component (the leaf's
/// hash link, d_parent, d_name), one per mount crossed (mnt_parent, mnt_mountpoint, mnt_root),
/// one per file (f_inode and f_path) and one per inode (i_mode, i_sb, i_ino).
fn check_layout(o: &Offsets) -> Result<(), BtfError> {
    let need = |ok: bool, what: &str| {
        if ok {
            Ok(())
        } else {
            Err(BtfError::Missing(what.to_string()))
        }
    };
    need(
        o.dentry_parent == o.dentry_hash_pprev + 8
            && o.dentry_name_len == o.dentry_parent + 12
            && o.dentry_name == o.dentry_parent + 16,
        "dentry with d_hash.pprev, d_parent, d_name.hash_len, d_name.name adjacent",
    )?;
    need(
        o.fdt_fd == o.fdt_max_fds + 8,
        "fdtable with max_fds and fd adjacent",
    )?;
    need(
        o.file_path_dentry == o.file_path_mnt + 8,
        "path with mnt and dentry adjacent",
    )?;
    need(
        o.mount_mountpoint == o.mount_parent + 8
            && o.mount_mnt + o.vfsmount_root == o.mount_parent + 16,
        "mount with mnt_parent, mnt_mountpoint, mnt.mnt_root adjacent",
    )?;
    let in_window = |start: u32, off: u32, size: u32, window: u32| {
        off >= start && (off - start).is_multiple_of(8) && off - start + size <= window
    };
    need(
        in_window(o.file_window, o.file_inode, 8, FILE_WINDOW)
            && in_window(o.file_window, o.file_path_mnt, 16, FILE_WINDOW),
        "file with f_inode and f_path within 48 bytes",
    )?;
    need(
        in_window(o.inode_mode, o.inode_sb, 8, INODE_WINDOW)
            && in_window(o.inode_mode, o.inode_ino, 8, INODE_WINDOW),
        "inode with i_mode, i_sb and i_ino within 80 bytes",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_from_this_kernel() {
        let btf = Btf::from_sys_fs().expect("these tests need kernel BTF");
        let o = btf.offsets().unwrap();
        // Layouts stable for years: thread_info first in task_struct (x86 `status` after the
        // 8-byte flags and syscall_work; arm64 `flags` first), f_path.mnt before f_path.dentry,
        // sk_common at the start of sock.
        #[cfg(target_arch = "x86_64")]
        assert_eq!(o.task_compat_word, 16);
        #[cfg(target_arch = "aarch64")]
        assert_eq!(o.task_compat_word, 0);
        assert_eq!(o.file_path_dentry, o.file_path_mnt + 8);
        assert!(o.sk_family < 32 && o.sk_num < 32);
        assert_eq!(o.upid_size, 16);
        assert_eq!(o.dentry_name, o.dentry_name_len + 4);
        assert!(matches!(
            btf.offset_of("task_struct", &["no_such_field"]),
            Err(BtfError::Missing(_))
        ));
        // bpf_loop is in every kernel since 5.17 (this host's is newer).
        assert_eq!(o.bpf_loop, 1);
        assert!(btf.has_enum_value("bpf_func_id", "BPF_FUNC_map_lookup_elem"));
        assert!(!btf.has_enum_value("bpf_func_id", "BPF_FUNC_no_such_helper"));
        assert!(!btf.has_enum_value("no_such_enum", "BPF_FUNC_loop"));
    }
}
