//! Userspace throughput (`cargo xtask bench`): the daemon's own code (decode, join, enrich,
//! encode, output queue and file sink) on recorded ring-buffer records, for each output format.
//! Events per second of CPU time of the whole process (the sink thread included), so that the
//! figure is per core and other processes taking the CPU do not blur it. Prints one JSON line
//! per format.
//!
//! The records are what the kernel side writes for nginx-like calls: an entry record (a file
//! with a 5-component path to a TCP socket) and an exit record per call; one call in 64 carries
//! the full process part, the others leave it out (`PROC_CACHED`), as in steady state.

use std::{hint::black_box, time::Instant};

use sendfile_trace::{
    event::{
        Enricher,
        join::{Join, Joined},
    },
    format::Format,
    kernel::system::WallClock,
    output::{
        Output, OutputConfig,
        sink::{SinkOptions, SinkSpec},
    },
};
use sendfile_trace_common::{
    EntryRecord, FdRecord, Hook, SendfileRecord, encode_path, entry_status, fd_flags, fd_kind,
    flags, kind,
};

/// Calls per format.
const CALLS: u32 = 200_000;

fn as_bytes<T>(v: &T) -> &[u8] {
    // SAFETY: plain #[repr(C)] records without implicit padding.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
}

/// The ring bytes of one call's entry and exit records.
fn records(i: u32, full: bool) -> (Vec<u8>, Vec<u8>) {
    let pid_tgid = (4242u64 << 32) | 4243;
    let start_ns = 1_000_000 + u64::from(i) * 1000;
    let mut tail = Vec::new();
    let mut rec = EntryRecord {
        kind: kind::ENTRY,
        pid_tgid,
        start_ns,
        thread_start_ns: 500,
        ns_tgid: 4242,
        ns_tid: 4243,
        host_ppid: 4200,
        ns_ppid: 4200,
        mnt_ns: 4026531840,
        pid_ns: 4026531836,
        flags: if full { 0 } else { fd_flags::PROC_CACHED },
        ..EntryRecord::default()
    };
    rec.in_fd = FdRecord {
        kind: fd_kind::FILE,
        ino: 1234 + u64::from(i % 100),
        dev: (8 << 20) | 1,
        path: encode_path(
            &mut tail,
            format!("/srv/www/static/img/photo-{}.jpg", i % 100).as_bytes(),
        ),
        ..FdRecord::default()
    };
    let mut local = [0u8; 16];
    local[..4].copy_from_slice(&[10, 0, 0, 5]);
    let mut remote = [0u8; 16];
    remote[..4].copy_from_slice(&[203, 0, 113, 7]);
    rec.out_fd = FdRecord {
        kind: fd_kind::SOCKET,
        ino: 99,
        family: 2,
        protocol: 6,
        sock_type: 1,
        local_port: 443,
        remote_port: 40000 + (i % 1000) as u16,
        local_addr: local,
        remote_addr: remote,
        ..FdRecord::default()
    };
    if full {
        rec.exe = encode_path(&mut tail, b"/usr/sbin/nginx");
    }
    rec.tail_len = tail.len() as u16;
    let mut entry = as_bytes(&rec).to_vec();
    entry.extend_from_slice(&tail);
    let mut comm = [0u8; 16];
    comm[..5].copy_from_slice(b"nginx");
    let exit = SendfileRecord {
        kind: kind::EXIT,
        entry_status: entry_status::WRITTEN,
        start_ns,
        end_ns: start_ns + 20_000,
        pid_tgid,
        uid_gid: (33 << 32) | 33,
        cgroup_id: 4321,
        offset_ptr: 0x7ffc_0000_1000,
        offset_before: 0,
        offset_after: 21952,
        count: 21952,
        ret: 21952,
        out_fd: 29,
        in_fd: 30,
        cpu: 1,
        flags: flags::OFFSET_BEFORE_VALID | flags::OFFSET_AFTER_VALID,
        syscall_nr: 40,
        hook: Hook::Tracepoint as u32,
        comm,
    };
    (entry, as_bytes(&exit).to_vec())
}

fn main() {
    let calls: Vec<(Vec<u8>, Vec<u8>)> = (0..CALLS).map(|i| records(i, i % 64 == 0)).collect();
    let enricher = Enricher {
        host_name: "web-1".into(),
        clock: WallClock::now(),
        // As the daemon's, once resolved: a cache hit per event.
        containers: sendfile_trace::event::Containers::with_resolver(|_| {
            Some(format!("/system.slice/docker-{}.scope", "a".repeat(64)))
        }),
    };
    for (name, format) in [
        ("tracee", Format::Tracee),
        ("ecs", Format::Ecs),
        ("ocsf", Format::Ocsf),
        ("text", Format::Text),
    ] {
        // `pipeline FORMAT...` runs only those (`none`: only the setup, to profile by difference).
        let only: Vec<String> = std::env::args().skip(1).collect();
        if !only.is_empty() && !only.iter().any(|o| o == name) {
            continue;
        }
        // Best of ROUNDS: on a shared machine other processes only ever make a round slower.
        let best = (0..ROUNDS)
            .map(|_| run(&calls, &enricher, name, format))
            .min_by(|a, b| a.cpu_s.total_cmp(&b.cpu_s))
            .expect("rounds");
        println!(
            "{{\"format\":\"{name}\",\"events\":{CALLS},\"rounds\":{ROUNDS},\"eventsPerSecond\":{:.0},\"nsPerEvent\":{:.1},\"bytesPerEvent\":{:.0},\"sinkDropped\":{},\"wallEventsPerSecond\":{:.0}}}",
            f64::from(CALLS) / best.cpu_s,
            best.cpu_s * 1e9 / f64::from(CALLS),
            best.bytes as f64 / f64::from(CALLS),
            best.dropped,
            f64::from(CALLS) / best.wall_s,
        );
    }
}

/// Rounds per format.
const ROUNDS: u32 = 3;

/// One round's figures.
struct Round {
    cpu_s: f64,
    wall_s: f64,
    bytes: u64,
    dropped: u64,
}

/// One round: every call through the daemon's join, enrichment and output into a file.
fn run(calls: &[(Vec<u8>, Vec<u8>)], enricher: &Enricher, name: &str, format: Format) -> Round {
    let mut join = Join::default();
    let dir = std::env::temp_dir().join(format!("sendfile-trace-pipeline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("{name}.out"));
    let mut out = Output::open(&OutputConfig {
        sinks: vec![SinkSpec::File(path.clone())],
        format: Some(format),
        queue_size: 16384,
        sink: SinkOptions {
            rotate_size: 0,
            rotate_keep: 0,
            facility: 3,
            host_name: "web-1".into(),
        },
        metrics: None,
    })
    .expect("output");
    let start = Instant::now();
    let cpu_start = process_cpu_ns();
    for (entry_bytes, exit_bytes) in calls {
        // Decode and join with the daemon's own code.
        let now = Instant::now();
        assert!(matches!(join.push(entry_bytes, now), Joined::Waiting));
        let Joined::Call(r, entry) = join.push(black_box(exit_bytes), now) else {
            panic!("exit record did not complete a call");
        };
        // Enrich, encode once, queue for the sink.
        out.write(&enricher.event(&r, entry.as_ref()))
            .expect("write");
    }
    out.close(std::time::Duration::from_secs(60));
    let round = Round {
        wall_s: start.elapsed().as_secs_f64(),
        cpu_s: (process_cpu_ns() - cpu_start) as f64 / 1e9,
        dropped: out.sink_lost(),
        bytes: std::fs::metadata(&path).map_or(0, |m| m.len()),
    };
    let _ = std::fs::remove_dir_all(&dir);
    round
}

/// CPU time (user + system) of the whole process, all threads, in ns.
fn process_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to; the clock id is a constant the kernel knows.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
