//! fentry + fexit on the syscall functions (BTF trampolines): the first fallback.
//!
//! A tracing program is loaded against one function, so each attach point has its own pair;
//! userspace loads the pairs whose function exists on the running kernel.

use aya_ebpf::{
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};
use sendfile_trace_common::Hook;

use crate::{arch, capture};

/// fentry of the native syscall wrapper (`__x64_sys_sendfile64`, `__arm64_sys_sendfile64`).
#[fentry]
pub fn sendfile_fentry_native(ctx: FEntryContext) -> u32 {
    if let Some(r) = arch::read_regs(ctx.arg::<u64>(0)) {
        capture::enter(arch::native_args(&r), Hook::Fentry as u32);
    }
    0
}

/// fexit of the native syscall wrapper: argument 1 is the return value.
#[fexit]
pub fn sendfile_fexit_native(ctx: FExitContext) -> u32 {
    capture::exit(ctx.arg::<i64>(1));
    0
}

macro_rules! compat_pair {
    ($entry:ident, $exit:ident, $func:literal) => {
        #[doc = concat!("fentry of `", $func, "`.")]
        #[fentry]
        pub fn $entry(ctx: FEntryContext) -> u32 {
            if let Some(r) = arch::read_regs(ctx.arg::<u64>(0)) {
                capture::enter(arch::compat_args(&r), Hook::Fentry as u32);
            }
            0
        }

        #[doc = concat!("fexit of `", $func, "`.")]
        #[fexit]
        pub fn $exit(ctx: FExitContext) -> u32 {
            capture::exit(ctx.arg::<i64>(1));
            0
        }
    };
}

compat_pair!(
    sendfile_fentry_compat_a,
    sendfile_fexit_compat_a,
    "first compat entry point"
);
compat_pair!(
    sendfile_fentry_compat_b,
    sendfile_fexit_compat_b,
    "second compat entry point"
);
compat_pair!(
    sendfile_fentry_compat_c,
    sendfile_fexit_compat_c,
    "third compat entry point"
);
