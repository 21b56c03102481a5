//! The daemon: attach, then read → decode → enrich → write until a signal or a closed output.

use std::{
    collections::BTreeMap,
    os::fd::AsFd,
    time::{Duration, Instant},
};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya_log::EbpfLogger;
use sendfile_trace_common::{InFlight, flags, flow::is_flow_kind, lost, names, record_kind};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};

use crate::{
    SCHEMA_VERSION,
    cli::Cli,
    error::{Error, LoadError, one_line},
    event::lifecycle::{EventsLost, Fallback, TracerStart, TracerStop},
    event::{
        Containers, Enricher,
        flow::{FlowData, FlowTable, Timing, TotalsFilter},
        join::{Join, Joined},
    },
    kernel::{
        self as probes, LoadOptions,
        filter::FilterSet,
        flows::FlowMaps,
        system::{self, WallClock},
    },
    output::{Output, WriteError, WriteResult},
};

/// How often losses are checked (and reported within a second), the clock re-sampled and the
/// ring buffer drained even without a wakeup.
const TICK: Duration = Duration::from_millis(250);

/// How often the ring buffer is read without a wakeup: the kernel side wakes the reader only
/// when a quarter of the ring is waiting, so a steady trickle is read on this timer instead of
/// paying one wakeup per record.
const POLL: Duration = Duration::from_millis(10);

/// Processes whose context is kept before idle ones are forgotten (the kernel side remembers
/// at most `PROC_CACHE_SIZE`).
const PROCS_KEPT: usize = 2 * sendfile_trace_common::PROC_CACHE_SIZE as usize;

/// How long a process's context must go unused before it may be forgotten.
const PROC_IDLE: Duration = Duration::from_secs(60);

/// Records handled per turn of the loop: under a flood the ring never empties, and signals and
/// loss reports must still get their turn.
const BATCH: usize = 4096;

/// Loss reason of the calls in flight when the tracer stops: entered, not returned, so with no
/// outcome to report.
pub const UNFINISHED: &str = "unfinished";

/// Loss reason of ring-buffer records the daemon cannot decode (BPF object and daemon disagree):
/// each one is a call or a flow update that will never be reported.
pub const MALFORMED: &str = "malformed";

/// Runs the tracer until SIGINT/SIGTERM or until the output's reader goes away.
pub fn run(cli: &Cli, filters: FilterSet) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::io("cannot start the runtime"))?;
    runtime.block_on(run_async(cli, filters))
}

/// The counters and sinks of a running tracer.
struct Pipeline {
    enricher: Enricher,
    out: Output,
    events: u64,
    lost_map: PerCpuArray<MapData, u64>,
    lost_seen: [u64; lost::COUNT as usize],
    /// The entry/exit join and the kept process parts.
    join: Join,
    /// The kernel's record of which processes `procs` holds.
    proc_cache: BpfHashMap<MapData, u32, [u64; 6]>,
    /// Our main thread's comm, as the kernel keeps it (to recognise our probe call).
    own_comm: [u8; 16],
    /// Flows (`--mode flows` or a rate limit), with their kernel maps.
    flows: Option<(FlowTable, FlowMaps)>,
    /// `sendfile_flow` records written.
    flow_records: u64,
    /// Calls counted in flow records by the rate limit.
    folded_calls: u64,
    /// Flow records that could not be decoded (the join counts its own).
    flow_malformed: u64,
    /// Malformed records already reported in `events_lost`.
    malformed_seen: u64,
}

/// Boot-clock ns now (the clock of the kernel side's timestamps).
fn boot_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

impl Pipeline {
    /// Writes up to `max` records waiting in the ring buffer; `Ok(true)` if it stopped at `max`
    /// (more may be waiting).
    fn drain(&mut self, ring: &mut RingBuf<MapData>, max: usize) -> Result<bool, WriteError> {
        for _ in 0..max {
            let Some(item) = ring.next() else {
                return Ok(false);
            };
            self.handle(&item)?;
        }
        Ok(true)
    }

    /// Handles one ring-buffer record: an entry waits for its exit; an exit becomes an event.
    fn handle(&mut self, item: &[u8]) -> WriteResult {
        if let Some(k) = record_kind(item)
            && is_flow_kind(k)
        {
            return self.handle_flow(item);
        }
        match self.join.push(item, Instant::now()) {
            Joined::Waiting => {}
            Joined::Call(r, entry) => {
                if r.count == system::PROBE_COUNT && r.comm == self.own_comm {
                    log::error!(
                        "the tracer's own probe call was traced (tgid {} as the kernel reports \
                         it): the kernel side does not recognise the tracer, so its own calls \
                         are traced and another process's may be skipped",
                        r.pid_tgid >> 32
                    );
                }
                self.out.write(&self.enricher.event(&r, entry.as_ref()))?;
                self.events += 1;
            }
            Joined::Malformed(what) => log::error!(
                "malformed {what} record of {} bytes in the ring buffer: skipped (BPF object and \
                 daemon disagree)",
                item.len()
            ),
        }
        Ok(())
    }

    /// Handles a flow record: an announced flow (its entry record was the one before), an
    /// aborted one, or a process going past the rate limit.
    fn handle_flow(&mut self, item: &[u8]) -> WriteResult {
        let Some((table, maps)) = &mut self.flows else {
            self.flow_malformed += 1;
            log::error!("flow record in calls mode: skipped (BPF object and daemon disagree)");
            return Ok(());
        };
        match table.push(item, &mut self.join, maps, boot_ns()) {
            Ok(Some(t)) => self.out.write(&self.enricher.throttled(&t))?,
            Ok(None) => {}
            Err(what) => {
                self.flow_malformed += 1;
                log::error!(
                    "malformed {what} record of {} bytes in the ring buffer: skipped (BPF object \
                     and daemon disagree)",
                    item.len()
                )
            }
        }
        Ok(())
    }

    /// Writes the flow records that are due (idle, interval, eviction).
    fn sweep_flows(&mut self) -> WriteResult {
        let Some((table, maps)) = &mut self.flows else {
            return Ok(());
        };
        let done = table.sweep(boot_ns(), maps);
        self.write_flows(done)
    }

    /// Writes flow records.
    fn write_flows(&mut self, done: Vec<FlowData>) -> WriteResult {
        for d in &done {
            let folded = if d.throttled() { d.calls() } else { 0 };
            self.out.write(&self.enricher.flow_event(d))?;
            self.flow_records += 1;
            self.folded_calls += folded;
            self.out.metrics().flow_record(d.reason().name(), folded);
        }
        if let Some((table, _)) = &self.flows {
            self.out.metrics().flows_open(table.open_flows());
        }
        Ok(())
    }

    /// Bounds the kept process parts: past [`PROCS_KEPT`] processes, forgets those unused for
    /// [`PROC_IDLE`], telling the kernel too so that it sends their next record in full.
    fn trim_procs(&mut self) {
        for tgid in self.join.trim_procs(PROCS_KEPT, PROC_IDLE, Instant::now()) {
            // Not in the kernel map any more (LRU eviction) is fine too.
            let _ = self.proc_cache.remove(&tgid);
        }
    }

    /// Reports new losses counted by the kernel side, one `events_lost` per reason.
    fn report_losses(&mut self) -> WriteResult {
        for (i, name) in lost::NAMES.iter().enumerate() {
            let total = match self.lost_map.get(&(i as u32), 0) {
                Ok(per_cpu) => per_cpu.iter().sum::<u64>(),
                Err(e) => {
                    log::error!("cannot read loss counters: {}", one_line(&e));
                    continue;
                }
            };
            if total > self.lost_seen[i] {
                let delta = total - self.lost_seen[i];
                self.lost_seen[i] = total;
                self.out
                    .write(&EventsLost::new(WallClock::now_ns(), delta, name))?;
            }
        }
        let malformed = self.malformed();
        if malformed > self.malformed_seen {
            let delta = malformed - self.malformed_seen;
            self.malformed_seen = malformed;
            self.out
                .write(&EventsLost::new(WallClock::now_ns(), delta, MALFORMED))?;
        }
        self.out.report_sink_losses(WallClock::now_ns())
    }

    /// Ring-buffer records skipped because they could not be decoded.
    fn malformed(&self) -> u64 {
        self.join.malformed + self.flow_malformed
    }
}

async fn run_async(cli: &Cli, filters: FilterSet) -> Result<(), Error> {
    let mut out = Output::from_cli(cli)?;
    let opts = LoadOptions {
        ring_buffer_size: cli.ring_buffer_size,
        tracer: system::TracerSelf::current(),
        filters: filters.clone(),
        // The kernel side logs its rare paths (first loss per CPU, failed kernel reads) only
        // with -v: off, its log branches are dead code for the verifier.
        kernel_log_level: match cli.verbose {
            0 => 0,
            1 => aya_log::Level::Debug as u8,
            _ => aya_log::Level::Trace as u8,
        },
        flow_mode: cli.flow_mode(),
        rate_limit: cli.max_events_per_process.0.unwrap_or(0),
    };
    let mut attached = probes::attach(cli.hook, opts)?;
    log::info!(
        "tracing sendfile with hook {} ({})",
        attached.hook.name(),
        attached.targets.join(", ")
    );

    let take = |ebpf: &mut aya::Ebpf, name: &'static str| {
        ebpf.take_map(name).ok_or(LoadError::MissingMap(name))
    };
    let map_err = |name| move |source| LoadError::Map { name, source };
    let ring = RingBuf::try_from(take(&mut attached.ebpf, names::EVENTS)?)
        .map_err(map_err(names::EVENTS))?;
    let lost_map = PerCpuArray::try_from(take(&mut attached.ebpf, names::LOST)?)
        .map_err(map_err(names::LOST))?;
    let proc_cache = BpfHashMap::try_from(take(&mut attached.ebpf, names::PROC_CACHE)?)
        .map_err(map_err(names::PROC_CACHE))?;
    // Kept past the detach: what is still in it then are the calls in flight at the stop.
    let in_flight: BpfHashMap<MapData, u64, InFlight> =
        BpfHashMap::try_from(take(&mut attached.ebpf, names::IN_FLIGHT)?)
            .map_err(map_err(names::IN_FLIGHT))?;
    let flows = if cli.flow_mode() != 0 {
        let timing = Timing {
            idle_ns: cli.flow_idle.as_nanos() as u64,
            interval_ns: cli.flow_interval.as_nanos() as u64,
        };
        // In flows mode these apply to a flow's totals (in the kernel, to single calls).
        let filter = TotalsFilter {
            errors_only: filters.errors_only,
            min_bytes: filters.min_bytes,
        };
        Some((
            FlowTable::new(timing, filter),
            FlowMaps::take(&mut attached.ebpf)?,
        ))
    } else {
        None
    };
    // Flows are swept often enough that a record is at most a quarter of --flow-idle late.
    let flow_period = cli
        .flow_idle
        .min(cli.flow_interval)
        .div_f64(4.0)
        .clamp(Duration::from_millis(5), TICK);
    out.metrics().watch_ring(ring.as_fd(), cli.ring_buffer_size);
    // SAFETY: the ring buffer's fd stays open and unchanged for the AsyncFd's whole life: the
    // RingBuf owns it and only the AsyncFd owns the RingBuf.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| Error::io("cannot poll the ring buffer")(e.into_parts().1))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(Error::io("cannot handle SIGINT"))?;
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(Error::io("cannot handle SIGTERM"))?;
    let mut kernel_log = kernel_logger(&mut attached.ebpf, cli.verbose > 0)?;

    let host_name = system::host_name();
    let kernel_release = system::kernel_release();
    let fallback_reasons: Vec<(&str, String)> = attached
        .fallbacks
        .iter()
        .map(|(h, e)| (h.name(), e.explained()))
        .collect();
    let start = TracerStart {
        event_name: "tracer_start",
        timestamp: WallClock::now_ns(),
        host_name: &host_name,
        process_id: std::process::id(),
        hook: attached.hook.name(),
        attached: &attached.targets,
        fallbacks: fallback_reasons
            .iter()
            .map(|(hook, reason)| Fallback { hook, reason })
            .collect(),
        kernel_release: &kernel_release,
        version: env!("CARGO_PKG_VERSION"),
        ring_buffer_bytes: cli.ring_buffer_size,
        schema_version: SCHEMA_VERSION,
    };
    let startup = out.write(&start).and_then(|()| out.flush());
    // Our own call, which the kernel side must skip (checked as the records are read).
    let mut own_comm = [0u8; 16];
    if let Ok(c) = std::fs::read("/proc/thread-self/comm") {
        let c = c.strip_suffix(b"\n").unwrap_or(&c);
        let n = c.len().min(15);
        own_comm[..n].copy_from_slice(&c[..n]);
    }
    if let Err(e) = system::probe_own_call() {
        log::debug!("the probe call failed: {e}");
    }
    let mut p = Pipeline {
        enricher: Enricher {
            host_name,
            clock: WallClock::now(),
            containers: Containers::new(crate::kernel::filter::cgroup2_root().ok()),
        },
        out,
        events: 0,
        lost_map,
        lost_seen: [0; lost::COUNT as usize],
        join: Join::default(),
        proc_cache,
        own_comm,
        flows,
        flow_records: 0,
        folded_calls: 0,
        flow_malformed: 0,
        malformed_seen: 0,
    };
    if let Err(e) = startup {
        return finish(e);
    }

    let mut tick = tokio::time::interval(TICK);
    let mut poll = tokio::time::interval(POLL);
    let mut flow_tick = tokio::time::interval(flow_period);
    flow_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let flowing = p.flows.is_some();
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Records left in the ring after a full batch: drained on the next turn, without a wakeup.
    let mut backlog = false;
    let reason = loop {
        let step = tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(Error::io("polling the ring buffer"))?;
                // Clear first: a record committed while we drain wakes us again.
                guard.clear_ready();
                p.drain(guard.get_inner_mut(), BATCH)
                    .map(|more| backlog = more)
                    .and_then(|()| p.out.flush())
            }
            () = std::future::ready(()), if backlog => {
                p.drain(ring.get_mut(), BATCH)
                    .map(|more| backlog = more)
                    .and_then(|()| p.out.flush())
            }
            _ = poll.tick() => {
                p.drain(ring.get_mut(), BATCH)
                    .map(|more| backlog = more)
                    .and_then(|()| p.out.flush())
            }
            _ = tick.tick() => {
                p.enricher.clock = WallClock::now();
                p.trim_procs();
                p.drain(ring.get_mut(), BATCH)
                    .map(|more| backlog = more)
                    .and_then(|()| p.report_losses())
                    .and_then(|()| p.out.flush())
            }
            guard = readable(&mut kernel_log) => {
                let mut guard = guard.map_err(Error::io("polling the kernel log"))?;
                guard.clear_ready();
                guard.get_inner_mut().flush();
                Ok(())
            }
            _ = flow_tick.tick(), if flowing => {
                // Drain first: a flow announced in the ring is then known before it is swept.
                p.drain(ring.get_mut(), BATCH)
                    .map(|more| backlog = more)
                    .and_then(|()| p.sweep_flows())
                    .and_then(|()| p.out.flush())
            }
            _ = sigint.recv() => break "SIGINT",
            _ = sigterm.recv() => break "SIGTERM",
        };
        if let Err(e) = step {
            return finish(e);
        }
    };

    // Detach first so nothing new arrives, then drain what the kernel already committed.
    let mut ring = ring.into_inner();
    attached.detach();
    // The programs are gone, so the ring only holds what was committed before: drain it all.
    // Calls still in flight (entered, not returned: blocked on a full socket, say) will have no
    // exit record: each is a lost event, counted under its own reason.
    // (Calls counted in a flow share the map, marked: their slot holds what they did.)
    let unfinished = in_flight
        .iter()
        .filter(|e| matches!(e, Ok((_, v)) if v.flags & flags::FLOW_CALL == 0))
        .count() as u64;
    let ended = p
        .drain(&mut ring, usize::MAX)
        .and_then(|_| {
            // Every flow still open ends here, with what its slot holds.
            let done = match &mut p.flows {
                Some((table, maps)) => table.stop(maps),
                None => Vec::new(),
            };
            p.write_flows(done)
        })
        .and_then(|()| p.report_losses())
        .and_then(|()| {
            if unfinished == 0 {
                return Ok(());
            }
            p.out.write(&EventsLost::new(
                WallClock::now_ns(),
                unfinished,
                UNFINISHED,
            ))
        })
        .and_then(|()| {
            let mut lost_by_reason: BTreeMap<&'static str, u64> = lost::NAMES
                .iter()
                .copied()
                .zip(p.lost_seen.iter().copied())
                .collect();
            lost_by_reason.insert("sink", p.out.sink_lost());
            lost_by_reason.insert(UNFINISHED, unfinished);
            lost_by_reason.insert(MALFORMED, p.malformed());
            let stop = TracerStop {
                event_name: "tracer_stop",
                timestamp: WallClock::now_ns(),
                reason,
                events: p.events,
                lost: lost_by_reason.values().sum(),
                lost_by_reason,
                incomplete: p.join.incomplete,
                flow_records: p.flows.is_some().then_some(p.flow_records),
                folded_calls: (cli.flow_mode() & sendfile_trace_common::flow::mode::RATE_LIMIT
                    != 0)
                    .then_some(p.folded_calls),
                schema_version: SCHEMA_VERSION,
            };
            p.out.write(&stop).map(|()| (stop.lost, stop.incomplete))
        })
        .and_then(|counts| p.out.flush().map(|()| counts));
    match ended {
        Ok((lost, incomplete)) => {
            log::info!(
                "stopped on {reason}: {} events, {lost} lost, {incomplete} incomplete",
                p.events
            );
            Ok(())
        }
        Err(e) => finish(e),
    }
}

/// The kernel side's log (aya-log), read when `-v` asked for it.
type KernelLog = AsyncFd<EbpfLogger<&'static dyn log::Log>>;

fn kernel_logger(ebpf: &mut aya::Ebpf, wanted: bool) -> Result<Option<KernelLog>, Error> {
    if !wanted {
        return Ok(None);
    }
    let logger = EbpfLogger::init(ebpf).map_err(LoadError::KernelLog)?;
    // SAFETY: the log ring's fd stays open and unchanged for the AsyncFd's whole life: the
    // EbpfLogger owns it and only the AsyncFd owns the EbpfLogger.
    unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
        .map(Some)
        .map_err(|e| Error::io("cannot poll the kernel log")(e.into_parts().1))
}

/// Waits until the kernel log has records; never, without one.
async fn readable(
    log: &mut Option<KernelLog>,
) -> std::io::Result<tokio::io::unix::AsyncFdReadyMutGuard<'_, EbpfLogger<&'static dyn log::Log>>> {
    match log {
        Some(l) => l.readable_mut().await,
        None => std::future::pending().await,
    }
}

/// Ends the tracer after a write error: a closed output is a clean stop.
fn finish(e: WriteError) -> Result<(), Error> {
    match e {
        WriteError::Closed => {
            log::info!("output closed by its reader: stopping");
            Ok(())
        }
        WriteError::Io(e) => Err(Error::Write(e)),
    }
}
