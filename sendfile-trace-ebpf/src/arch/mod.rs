//! What differs between the architectures the kernel side supports: the layout of the saved
//! user registers (`struct pt_regs`) the syscall wrappers receive, the syscall numbers, and how
//! a 32-bit (compat) syscall is recognised.
//!
//! The object is built once per target architecture (`--cfg bpf_target_arch="…"`, which
//! `cargo xtask build-ebpf` passes, as aya-ebpf itself uses for `ProbeContext::arg`): the BPF
//! instruction set is the same on both, but these layouts are not, and the userspace binary that
//! embeds the object is itself built for one architecture. Choosing at build time keeps every
//! program free of run-time dispatch and lets the verifier see only the code that can run.
//!
//! Each architecture module offers the same items: `Regs`, `read_regs`, `native_args`,
//! `compat_args`, `syscall_nr`, `in_compat_syscall` and the `NR_*` numbers.

#[cfg(bpf_target_arch = "aarch64")]
mod aarch64;
#[cfg(bpf_target_arch = "x86_64")]
mod x86_64;

#[cfg(bpf_target_arch = "aarch64")]
pub use aarch64::*;
#[cfg(bpf_target_arch = "x86_64")]
pub use x86_64::*;

#[cfg(not(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64")))]
compile_error!(
    "build the kernel side for one architecture: RUSTFLAGS='--cfg bpf_target_arch=\"x86_64\"' \
     or \"aarch64\" (`cargo xtask build-ebpf` does this)"
);
