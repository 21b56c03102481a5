//! Loop (bench) mode: many sendfile calls from a page-cache file to /dev/null, one summary line.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::record::{self, LoopSummary};
use crate::sys::{self, LOOP_ABI};

/// How loop threads share descriptors and pause.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sharing {
    /// All threads use the first thread's two descriptors.
    pub shared: bool,
    /// Every this many calls, a thread sleeps 1 to 3 ms; every tenth time, all threads meet
    /// and sleep [`TOGETHER`] together.
    pub pause_every: Option<u64>,
}

/// How long all threads sleep together at every tenth pause: far longer than a 1 ms
/// `--flow-idle` plus the tracer's sweep period (5 ms), even on a slow emulated machine, so that
/// the tracer retires the threads' flows while the process is still running, whatever the
/// timing; the calls that follow race the retirement.
const TOGETHER: Duration = Duration::from_millis(60);

/// Runs `threads` threads of `calls` sendfile calls of `size` bytes each, as fast as possible or
/// paced at `rate` calls per second in all, sharing descriptors and pausing as `sharing` says;
/// false if any call did not move the expected number of bytes.
pub fn run(
    dir: &Path,
    calls: u64,
    size: u64,
    threads: u32,
    rate: Option<u64>,
    sharing: Sharing,
) -> anyhow::Result<bool> {
    let count = usize::try_from(size).context("--size does not fit in size_t")?;
    let path = dir.join(format!("loop-{size}.bin"));
    write_file(&path, size)?;
    let expect = size.min(sys::MAX_RW_COUNT) as i64;
    let bad = AtomicU64::new(0);
    let first_bad = AtomicU64::new(0);
    let barrier = Barrier::new(threads as usize + 1);
    let together = Barrier::new(threads as usize);
    let cpu_ns = AtomicU64::new(0);
    // Each thread's share of the rate.
    let per_thread_rate = rate.map(|r| (r as f64 / f64::from(threads)).max(1e-9));

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
            let (barrier, together) = (&barrier, &together);
            let (bad, first_bad, cpu_ns) = (&bad, &first_bad, &cpu_ns);
            handles.push(s.spawn(move || {
                let (out_fd, in_fd) = if sharing.shared {
                    (first.1, first.0)
                } else {
                    (null.as_raw_fd(), input.as_raw_fd())
                };
                let pause = Duration::from_millis(1 + n as u64 % 3);
                let mut offset: i64 = 0;
                let ptr: *mut i64 = &mut offset;
                let mut i = 0u64;
                let call = || {
                    if let Some(every) = sharing.pause_every
                        && i % every == every - 1
                    {
                        // Every thread makes the same number of calls, so each meets the others
                        // equally often.
                        if (i / every) % 10 == 9 {
                            together.wait();
                            std::thread::sleep(TOGETHER);
                        } else {
                            std::thread::sleep(pause);
                        }
                    }
                    i += 1;
                    // SAFETY: `ptr` points to `offset`, alive for the whole loop.
                    unsafe { ptr.write_volatile(0) };
                    let ret = sys::raw_sendfile(LOOP_ABI.nr, out_fd, in_fd, ptr as usize, count);
                    if ret != expect && bad.fetch_add(1, Ordering::Relaxed) == 0 {
                        first_bad.store(ret as u64, Ordering::Relaxed);
                    }
                };
                barrier.wait();
                let used = match per_thread_rate {
                    None => {
                        let mut call = call;
                        let cpu = thread_cpu_ns();
                        (0..calls).for_each(|_| call());
                        thread_cpu_ns() - cpu
                    }
                    Some(rate) => paced(calls, rate, call),
                };
                cpu_ns.fetch_add(used, Ordering::Relaxed);
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
    emit_summary("loop", total, elapsed, cpu_ns.into_inner())?;
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
    let cpu_start = thread_cpu_ns();
    for _ in 0..calls {
        // SAFETY: getpid has no arguments and no preconditions.
        std::hint::black_box(unsafe { libc::syscall(libc::SYS_getpid) });
    }
    let elapsed = start.elapsed().as_nanos() as u64;
    emit_summary("getpid-loop", calls, elapsed, thread_cpu_ns() - cpu_start)?;
    Ok(true)
}

/// Makes `calls` calls at `rate` per second: each 1 ms slice makes the calls that are due by
/// then back to back and sleeps until the next slice (a late start catches up, so the average
/// rate holds while the thread gets the CPU). Returns the CPU time of the batches of calls
/// only, so that what the sleeps and wakeups cost does not blur the cost of a call.
fn paced(calls: u64, rate: f64, mut call: impl FnMut()) -> u64 {
    const SLICE: Duration = Duration::from_millis(1);
    let start = Instant::now();
    let mut done = 0u64;
    let mut busy = 0u64;
    while done < calls {
        let due = ((start.elapsed().as_secs_f64() * rate) as u64 + 1).min(calls);
        if done < due {
            let cpu = thread_cpu_ns();
            while done < due {
                call();
                done += 1;
            }
            busy += thread_cpu_ns() - cpu;
        }
        if done < calls {
            std::thread::sleep(SLICE);
        }
    }
    busy
}

/// CPU time (user + system) this thread has used, in ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to; the clock id is a constant the kernel knows.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Prints the summary line of a loop mode.
fn emit_summary(
    case: &'static str,
    calls: u64,
    elapsed_ns: u64,
    cpu_ns: u64,
) -> anyhow::Result<()> {
    let per_call = |ns: u64| {
        if calls == 0 {
            0.0
        } else {
            ns as f64 / calls as f64
        }
    };
    record::emit(&LoopSummary {
        case,
        calls,
        elapsed_ns,
        ns_per_call: per_call(elapsed_ns),
        cpu_ns_per_call: per_call(cpu_ns),
    })
}
