//! Loop (bench) mode: many sendfile calls from a page-cache file to /dev/null, one summary line.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context as _;

use crate::record::{self, LoopSummary};
use crate::sys::{self, LOOP_ABI};

/// How loop threads share descriptors and pause.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sharing {
    /// All threads use the first thread's two descriptors.
    pub shared: bool,
    /// Every this many calls, a thread sleeps 1 to 3 ms.
    pub pause_every: Option<u64>,
}

/// Runs `threads` threads of `calls` sendfile calls of `size` bytes each; false if any call did
/// not move the expected number of bytes.
pub fn run(
    dir: &Path,
    calls: u64,
    size: u64,
    threads: u32,
    sharing: Sharing,
) -> anyhow::Result<bool> {
    let count = usize::try_from(size).context("--size does not fit in size_t")?;
    let path = dir.join(format!("loop-{size}.bin"));
    write_file(&path, size)?;
    let expect = size.min(sys::MAX_RW_COUNT) as i64;
    let bad = AtomicU64::new(0);
    let first_bad = AtomicU64::new(0);
    let barrier = Barrier::new(threads as usize + 1);

    // Open every descriptor first: a failure must not leave threads waiting at the barrier.
    let mut fds = Vec::new();
    for _ in 0..threads {
        let input = File::open(&path)?;
        let null = OpenOptions::new().write(true).open("/dev/null")?;
        fds.push((input, null));
    }
    let first = (fds[0].0.as_raw_fd(), fds[0].1.as_raw_fd());

    let elapsed = std::thread::scope(|s| -> anyhow::Result<u64> {
        let mut handles = Vec::new();
        for (n, (input, null)) in fds.iter().enumerate() {
            let (barrier, bad, first_bad) = (&barrier, &bad, &first_bad);
            handles.push(s.spawn(move || {
                let (out_fd, in_fd) = if sharing.shared {
                    (first.1, first.0)
                } else {
                    (null.as_raw_fd(), input.as_raw_fd())
                };
                let pause = std::time::Duration::from_millis(1 + n as u64 % 3);
                let mut offset: i64 = 0;
                let ptr: *mut i64 = &mut offset;
                barrier.wait();
                for i in 0..calls {
                    if let Some(every) = sharing.pause_every
                        && i % every == every - 1
                    {
                        std::thread::sleep(pause);
                    }
                    // SAFETY: `ptr` points to `offset`, alive for the whole loop.
                    unsafe { ptr.write_volatile(0) };
                    let ret = sys::raw_sendfile(LOOP_ABI.nr, out_fd, in_fd, ptr as usize, count);
                    if ret != expect && bad.fetch_add(1, Ordering::Relaxed) == 0 {
                        first_bad.store(ret as u64, Ordering::Relaxed);
                    }
                }
            }));
        }
        barrier.wait();
        let start = Instant::now();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a loop thread panicked"))?;
        }
        Ok(start.elapsed().as_nanos() as u64)
    })?;
    fs::remove_file(&path)?;

    let total = calls * u64::from(threads);
    emit_summary("loop", total, elapsed)?;
    let bad = bad.into_inner();
    if bad > 0 {
        eprintln!(
            "sendfile-workload: loop: {bad} of {total} calls did not return {expect} (first: {})",
            first_bad.into_inner() as i64
        );
    }
    Ok(bad == 0)
}

/// Writes a `size`-byte file (real data, so it sits in the page cache) at `path`.
fn write_file(path: &Path, size: u64) -> anyhow::Result<()> {
    let mut file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8).collect();
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// Makes `calls` raw getpid(2) syscalls (no libc caching) and prints one summary line with
/// `"case":"getpid-loop"`.
pub fn getpid_loop(calls: u64) -> anyhow::Result<bool> {
    let start = Instant::now();
    for _ in 0..calls {
        // SAFETY: getpid has no arguments and no preconditions.
        std::hint::black_box(unsafe { libc::syscall(libc::SYS_getpid) });
    }
    let elapsed = start.elapsed().as_nanos() as u64;
    emit_summary("getpid-loop", calls, elapsed)?;
    Ok(true)
}

/// Prints the summary line of a loop mode.
fn emit_summary(case: &'static str, calls: u64, elapsed_ns: u64) -> anyhow::Result<()> {
    record::emit(&LoopSummary {
        case,
        calls,
        elapsed_ns,
        ns_per_call: if calls == 0 {
            0.0
        } else {
            elapsed_ns as f64 / calls as f64
        },
    })
}
