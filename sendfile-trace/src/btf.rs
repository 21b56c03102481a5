//! The kernel struct offsets the BPF programs need, read from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`) at load time, so that one BPF object runs on every kernel.
//!
//! A small reader of the BTF format (kernel `Documentation/bpf/btf.rst`): only struct and union
//! members, the modifiers between them, and sizes. aya's own parser keeps its type table private,
//! and `btf-rs` is LGPL, which this MIT/Apache project does not link.

use std::collections::HashMap;

use sendfile_trace_common::Offsets;

const BTF_MAGIC: u16 = 0xeb9f;
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
#[derive(Clone, Debug)]
struct Member {
    name: String,
    ty: u32,
    bit_offset: u32,
    bitfield: bool,
}

/// One BTF type, reduced to what offsets need.
#[derive(Clone, Debug, Default)]
struct Type {
    kind: u32,
    name: String,
    /// Size (int, struct, union, enum) or referenced type id (ptr, typedef, modifiers).
    size_or_type: u32,
    members: Vec<Member>,
    /// Array element type.
    elem: u32,
}

/// Parsed kernel BTF.
pub struct Btf {
    types: Vec<Type>,
    structs: HashMap<String, u32>,
}

/// Why offsets could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
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

impl Btf {
    /// Parses a little-endian BTF blob.
    pub fn parse(b: &[u8]) -> Result<Btf, BtfError> {
        if u16_at(b, 0)? != BTF_MAGIC {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(b, 4)? as usize;
        let (type_off, type_len) = (u32_at(b, 8)? as usize, u32_at(b, 12)? as usize);
        let (str_off, str_len) = (u32_at(b, 16)? as usize, u32_at(b, 20)? as usize);
        let types_sec = b
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(BtfError::Malformed("type section out of bounds"))?;
        let strings = b
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?;
        let string = |off: u32| -> String {
            let s = strings.get(off as usize..).unwrap_or_default();
            let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
            String::from_utf8_lossy(&s[..end]).into_owned()
        };
        // Type id 0 is void.
        let mut types = vec![Type::default()];
        let mut structs = HashMap::new();
        let mut o = 0;
        while o < types_sec.len() {
            let name_off = u32_at(types_sec, o)?;
            let info = u32_at(types_sec, o + 4)?;
            let size_or_type = u32_at(types_sec, o + 8)?;
            let (kind, vlen, kind_flag) = ((info >> 24) & 0x1f, info & 0xffff, info >> 31 == 1);
            o += 12;
            let mut t = Type {
                kind,
                name: string(name_off),
                size_or_type,
                ..Type::default()
            };
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                // KIND_PTR (2), FWD, TYPEDEF, modifiers, FUNC, FLOAT, TYPE_TAG: nothing more.
                KIND_ARRAY => {
                    t.elem = u32_at(types_sec, o)?;
                    12
                }
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen as usize {
                        let m = o + i * 12;
                        let raw = u32_at(types_sec, m + 8)?;
                        let (bit_offset, bits) = if kind_flag {
                            (raw & 0xff_ffff, raw >> 24)
                        } else {
                            (raw, 0)
                        };
                        t.members.push(Member {
                            name: string(u32_at(types_sec, m)?),
                            ty: u32_at(types_sec, m + 4)?,
                            bit_offset,
                            bitfield: bits != 0,
                        });
                    }
                    12 * vlen as usize
                }
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen as usize,
                KIND_DATASEC | KIND_ENUM64 => 12 * vlen as usize,
                _ => 0,
            };
            o += extra;
            if kind == KIND_STRUCT && !t.name.is_empty() && !t.members.is_empty() {
                // The first complete definition wins (duplicates are identical).
                structs.entry(t.name.clone()).or_insert(types.len() as u32);
            }
            types.push(t);
        }
        Ok(Btf { types, structs })
    }

    /// Reads and parses `/sys/kernel/btf/vmlinux`.
    pub fn from_sys_fs() -> Result<Btf, String> {
        let path = crate::system::VMLINUX_BTF;
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        Btf::parse(&bytes).map_err(|e| format!("{path}: {e}"))
    }

    fn ty(&self, id: u32) -> Result<&Type, BtfError> {
        self.types
            .get(id as usize)
            .ok_or(BtfError::Malformed("type id out of range"))
    }

    /// Follows typedefs and modifiers to the underlying type id.
    fn resolve(&self, mut id: u32) -> Result<u32, BtfError> {
        for _ in 0..32 {
            let t = self.ty(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type
                }
                _ => return Ok(id),
            }
        }
        Err(BtfError::Malformed("modifier chain too long"))
    }

    /// Finds member `name` of struct/union `id`, looking inside anonymous members; returns its
    /// bit offset from the start of `id` and the member.
    fn member(&self, id: u32, name: &str) -> Result<Option<(u32, Member)>, BtfError> {
        let t = self.ty(self.resolve(id)?)?;
        for m in &t.members {
            if m.name == name {
                return Ok(Some((m.bit_offset, m.clone())));
            }
            if m.name.is_empty() {
                let inner = self.resolve(m.ty)?;
                if matches!(self.ty(inner)?.kind, KIND_STRUCT | KIND_UNION)
                    && let Some((off, found)) = self.member(inner, name)?
                {
                    return Ok(Some((m.bit_offset + off, found)));
                }
            }
        }
        Ok(None)
    }

    /// Byte offset of `path` (e.g. `["d_name", "len"]`) inside struct `strukt`; each path element
    /// may list alternative names separated by `|` (renamed fields).
    pub fn offset_of(&self, strukt: &str, path: &[&str]) -> Result<u32, BtfError> {
        let what = || format!("{strukt}.{}", path.join("."));
        let mut id = *self
            .structs
            .get(strukt)
            .ok_or_else(|| BtfError::Missing(format!("struct {strukt}")))?;
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
        let id = *self
            .structs
            .get(strukt)
            .ok_or_else(|| BtfError::Missing(format!("struct {strukt}")))?;
        Ok(self.ty(id)?.size_or_type)
    }

    /// Every offset the BPF programs use.
    pub fn offsets(&self) -> Result<Offsets, BtfError> {
        let o = |s: &str, p: &str| self.offset_of(s, &p.split('.').collect::<Vec<_>>());
        let offsets = self.all_offsets(o)?;
        // The path walk reads d_parent, d_name.hash_len and d_name.name in one go, and the fd
        // lookup fdtable.max_fds and fdtable.fd.
        if offsets.dentry_name_len != offsets.dentry_parent + 12
            || offsets.dentry_name != offsets.dentry_parent + 16
        {
            return Err(BtfError::Missing(
                "dentry with d_parent, d_name.hash_len, d_name.name adjacent".into(),
            ));
        }
        if offsets.fdt_fd != offsets.fdt_max_fds + 8 {
            return Err(BtfError::Missing(
                "fdtable with max_fds and fd adjacent".into(),
            ));
        }
        if offsets.file_path_dentry != offsets.file_path_mnt + 8 {
            return Err(BtfError::Missing(
                "path with mnt and dentry adjacent".into(),
            ));
        }
        Ok(offsets)
    }

    fn all_offsets(
        &self,
        o: impl Fn(&str, &str) -> Result<u32, BtfError>,
    ) -> Result<Offsets, BtfError> {
        Ok(Offsets {
            task_ti_status: o("task_struct", "thread_info.status")?,
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_from_this_kernel() {
        let btf = Btf::from_sys_fs().expect("these tests need kernel BTF");
        let o = btf.offsets().unwrap();
        // x86_64 layouts stable for years: thread_info first in task_struct, f_path.mnt before
        // f_path.dentry, sk_common at the start of sock.
        assert_eq!(o.task_ti_status, 16);
        assert_eq!(o.file_path_dentry, o.file_path_mnt + 8);
        assert!(o.sk_family < 32 && o.sk_num < 32);
        assert_eq!(o.upid_size, 16);
        assert_eq!(o.dentry_name, o.dentry_name_len + 4);
        assert!(matches!(
            btf.offset_of("task_struct", &["no_such_field"]),
            Err(BtfError::Missing(_))
        ));
    }
}
