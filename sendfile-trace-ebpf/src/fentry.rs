//! fentry + fexit on the syscall functions (BTF trampolines): the first fallback.
//!
//! A tracing program is loaded against one function, so each attach point has its own pair;
//! userspace loads the pairs whose function exists on the running kernel.

use aya_ebpf::{
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};
use sendfile_trace_common::Hook;

use crate::{capture, regs};

/// fentry of `__x64_sys_sendfile64`.
#[fentry]
pub fn sendfile_fentry_x64(ctx: FEntryContext) -> u32 {
    if let Some(r) = regs::read_regs(ctx.arg::<u64>(0)) {
        capture::enter(regs::x64_args(&r), Hook::Fentry as u32);
    }
    0
}

/// fexit of `__x64_sys_sendfile64`: argument 1 is the return value.
#[fexit]
pub fn sendfile_fexit_x64(ctx: FExitContext) -> u32 {
    capture::exit(ctx.arg::<i64>(1));
    0
}

macro_rules! ia32_pair {
    ($entry:ident, $exit:ident, $func:literal) => {
        #[doc = concat!("fentry of `", $func, "`.")]
        #[fentry]
        pub fn $entry(ctx: FEntryContext) -> u32 {
            if let Some(r) = regs::read_regs(ctx.arg::<u64>(0)) {
                capture::enter(regs::ia32_args(&r), Hook::Fentry as u32);
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

ia32_pair!(
    sendfile_fentry_ia32_a,
    sendfile_fexit_ia32_a,
    "first ia32 entry point"
);
ia32_pair!(
    sendfile_fentry_ia32_b,
    sendfile_fexit_ia32_b,
    "second ia32 entry point"
);
ia32_pair!(
    sendfile_fentry_ia32_c,
    sendfile_fexit_ia32_c,
    "third ia32 entry point"
);
