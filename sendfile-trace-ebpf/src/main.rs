//! Kernel side of sendfile-trace.
//!
//! Three probe families capture the same call; userspace attaches exactly one of them:
//! [`kprobe`] (kprobe + kretprobe on the syscall function, tried first), [`fentry`]
//! (fentry + fexit on the same functions) and [`tracepoint`] (syscall tracepoints, plus raw
//! `sys_enter`/`sys_exit` for 32-bit tasks). All of them funnel into [`capture`]. What differs
//! between x86_64 and arm64 lives in [`arch`], chosen when the object is built.
#![no_std]
#![no_main]
// Atomic read-modify-write on map memory (see flow.rs): the bpf target's `AtomicU64` has none.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod arch;
mod capture;
mod fd;
mod fentry;
mod floor;
mod flow;
mod kernel;
mod kprobe;
mod regs;
mod task;
mod tracepoint;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
