//! Where events go: every record is rendered once in the chosen [`Format`] and handed to each
//! sink's bounded queue (see [`crate::output::sink`]); the ring-buffer reader never blocks on a sink.
//!
//! Stopping: before `tracer_stop` is queued, every sink gets [`STOP_GRACE`] to write what it
//! holds; a sink that cannot (a peer that does not read, a dead RELP receiver) is given up, what
//! it held is counted, reported in an `events_lost` and in `tracer_stop` itself, which every
//! other sink then receives. stdout closed by its reader stops only stdout: the other outputs go
//! on, and the tracer stops when no output is left.

pub mod metrics;
pub mod sink;

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{
    error::Error,
    event::lifecycle::EventsLost,
    format::{AsRecord, Format, Record},
    output::metrics::Metrics,
    output::sink::{Block, Chunk, Hangup, SinkOptions, SinkShared, SinkSpec, SinkStats},
};

/// How long sinks get to write what they hold when the tracer stops, before they are given up
/// (and what they hold counted as lost).
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Handed-over blocks kept for reuse.
const SPARE_BLOCKS: usize = 8;

/// How long a given-up sink's thread gets to count what it held itself.
const GIVE_UP_WAIT: Duration = Duration::from_secs(1);

/// How the output is set up (from the command line and the config file).
#[derive(Clone, Debug)]
pub struct OutputConfig {
    /// The sinks; empty means stdout.
    pub sinks: Vec<SinkSpec>,
    /// The format; `None` picks `text` when every sink is stdout and stdout is a terminal,
    /// `tracee` otherwise.
    pub format: Option<Format>,
    /// Records each sink's queue holds before it drops.
    pub queue_size: usize,
    /// File rotation and syslog settings.
    pub sink: SinkOptions,
    /// Where to serve Prometheus metrics.
    pub metrics: Option<SocketAddr>,
}

/// The sinks of a running tracer, fed through bounded queues.
pub struct Output {
    format: Format,
    sinks: Vec<SinkHandle>,
    /// The records rendered since the last hand-off to the sinks (see [`Output::hand_off`]);
    /// never shared while it fills.
    block: Arc<Block>,
    /// Records a block holds before it is handed over: [`Block::RECORDS`], or the queue size
    /// if that is smaller (a block never holds more than a queue takes).
    block_records: usize,
    /// Blocks handed over, kept to be reused once every sink is done with them.
    spare: std::collections::VecDeque<Arc<Block>>,
    stopping: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    /// The `events` counters by hook and failure, looked up once each (the label lookup
    /// allocates and hashes).
    event_counters: Vec<(
        &'static str,
        bool,
        prometheus_client::metrics::counter::Counter,
    )>,
    /// The address the metrics endpoint listens on.
    pub metrics_addr: Option<SocketAddr>,
}

struct SinkHandle {
    name: String,
    tx: Option<SyncSender<Chunk>>,
    /// Records its queue holds before it drops.
    capacity: usize,
    thread: Option<JoinHandle<()>>,
    stats: Arc<SinkStats>,
    shared: Arc<SinkShared>,
    /// Drops already reported in-band.
    reported: u64,
}

/// The format when none is given: `text` is for a person at a terminal, so only when every
/// sink is a stdout that is a terminal; a file, a syslog peer or a pipe gets `tracee` JSON
/// (one format serves all sinks, so `-o - -o FILE` on a terminal writes JSON to both).
fn default_format(specs: &[SinkSpec]) -> Format {
    if specs.iter().all(|s| *s == SinkSpec::Stdout) {
        Format::default_for_stdout()
    } else {
        Format::Tracee
    }
}

impl SinkHandle {
    /// Records this sink still has to write: queued, or held by the sink.
    fn holds(&self) -> u64 {
        self.stats.queued.get().max(0) as u64 + self.shared.pending.load(Ordering::SeqCst)
    }

    /// Whether records still go to this sink.
    fn open(&self) -> bool {
        self.tx.is_some() && !self.shared.closed.load(Ordering::SeqCst)
    }
}

/// Result of a write: the reader went away (EPIPE) is not an error, it ends the tracer.
pub type WriteResult = Result<(), WriteError>;

/// Why a write failed.
#[derive(Debug)]
pub enum WriteError {
    /// The reader closed the pipe.
    Closed,
    /// Any other I/O error.
    Io(io::Error),
}

impl From<io::Error> for WriteError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            WriteError::Closed
        } else {
            WriteError::Io(e)
        }
    }
}

impl From<serde_json::Error> for WriteError {
    fn from(e: serde_json::Error) -> Self {
        match e.io_error_kind() {
            Some(io::ErrorKind::BrokenPipe) => WriteError::Closed,
            _ => WriteError::Io(io::Error::other(e)),
        }
    }
}

impl Output {
    /// The output the command line and config ask for.
    pub fn from_cli(cli: &crate::cli::Cli) -> Result<Output, Error> {
        Output::open(&OutputConfig {
            sinks: cli.output.clone(),
            format: cli.format,
            queue_size: cli.queue_size as usize,
            sink: SinkOptions {
                rotate_size: cli.rotate_size,
                rotate_keep: cli.rotate_keep,
                facility: cli.syslog_facility.number(),
                host_name: crate::kernel::system::host_name(),
            },
            metrics: cli.metrics,
        })
    }

    /// Opens every sink (a file that cannot be opened fails now), starts their threads and the
    /// metrics endpoint.
    pub fn open(cfg: &OutputConfig) -> Result<Output, Error> {
        if cfg.sink.rotate_keep > sink::MAX_ROTATE_KEEP {
            return Err(Error::RotateKeep {
                given: cfg.sink.rotate_keep as u64,
                max: sink::MAX_ROTATE_KEEP as u64,
            });
        }
        let metrics = Arc::new(Metrics::new());
        let stopping = Arc::new(AtomicBool::new(false));
        let specs = if cfg.sinks.is_empty() {
            vec![SinkSpec::Stdout]
        } else {
            cfg.sinks.clone()
        };
        let hangup = Hangup(Arc::new(AtomicBool::new(false)));
        // Always handled, so that a reload never kills a tracer that has no file to reopen.
        signal_hook::flag::register(libc::SIGHUP, hangup.0.clone())
            .map_err(Error::io("cannot handle SIGHUP"))?;
        let mut sinks = Vec::new();
        for spec in &specs {
            let shared = Arc::new(SinkShared::default());
            let sink = sink::open(spec, &cfg.sink, &shared).map_err(|source| match spec {
                SinkSpec::File(path) => Error::OutputOpen {
                    path: path.clone(),
                    source,
                },
                _ => Error::Io {
                    what: format!("cannot open output {spec}"),
                    source,
                },
            })?;
            let name = spec.to_string();
            let capacity = cfg.queue_size.max(1);
            let stats = metrics.sink(&name, capacity);
            let (tx, rx) = sync_channel(capacity);
            let hup = matches!(spec, SinkSpec::File(_)).then(|| hangup.clone());
            let thread = {
                let (name, stats, shared, stopping) = (
                    name.clone(),
                    stats.clone(),
                    shared.clone(),
                    stopping.clone(),
                );
                std::thread::Builder::new()
                    .name(format!("sink {name}"))
                    .spawn(move || sink::run(name, sink, rx, stats, shared, hup, stopping))
                    .map_err(Error::io("cannot start a sink thread"))?
            };
            sinks.push(SinkHandle {
                name,
                tx: Some(tx),
                thread: Some(thread),
                capacity,
                stats,
                shared,
                reported: 0,
            });
        }
        let metrics_addr = match cfg.metrics {
            Some(addr) => Some(crate::output::metrics::serve(addr, metrics.clone())?),
            None => None,
        };
        Ok(Output {
            format: cfg.format.unwrap_or_else(|| default_format(&specs)),
            sinks,
            block: Arc::new(Block::new()),
            block_records: Block::RECORDS.min(cfg.queue_size.max(1)),
            spare: Default::default(),
            stopping,
            metrics,
            event_counters: Vec::new(),
            metrics_addr,
        })
    }

    /// The metrics this output feeds (the daemon adds the ring buffer's fill).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Queues one record for every sink; a full queue drops it there and counts the drop.
    ///
    /// `tracer_stop` is special: the sinks first get [`STOP_GRACE`] to write what they hold,
    /// those that cannot are given up, and the record's `sink` losses are brought up to date.
    pub fn write<T: AsRecord + ?Sized>(&mut self, record: &T) -> WriteResult {
        self.check_closed()?;
        if let Record::Stop(stop) = record.as_record() {
            let mut stop = stop.clone();
            self.settle(STOP_GRACE);
            let now = crate::kernel::system::WallClock::now_ns();
            self.report_sink_losses(now)?;
            // After the wait, and after the loss report it may have caused.
            stop.timestamp = now;
            // The losses just reported: what the sinks lose from now on (this report itself,
            // the stop) is after the count.
            stop.lost_by_reason
                .insert("sink", self.sinks.iter().map(|s| s.reported).sum());
            stop.lost = stop.lost_by_reason.values().sum();
            return self.queue(Record::Stop(&stop));
        }
        self.queue(record.as_record())
    }

    fn queue(&mut self, rec: Record<'_>) -> WriteResult {
        match rec {
            Record::Sendfile(e) => self.count_event(e.hook, e.errno.is_some()),
            Record::Lost(l) => self.metrics.lost(l.reason, l.lost),
            _ => {}
        }
        let block = Arc::get_mut(&mut self.block).expect("the filling block is not shared");
        if let Err(e) = self.format.render(rec, block.buf()) {
            block.rollback();
            return Err(e.into());
        }
        block.commit(
            rec.name(),
            rec.severity(),
            rec.timestamp(),
            match rec {
                Record::Sendfile(e) => Some((e.host_process_id, e.host_thread_id)),
                _ => None,
            },
        );
        if block.len() >= self.block_records || block.bytes() >= Block::BYTES {
            self.hand_off();
        }
        Ok(())
    }

    /// Counts one call written, through the kept counter of its hook and outcome.
    fn count_event(&mut self, hook: &'static str, failed: bool) {
        let at = match self
            .event_counters
            .iter()
            .position(|(h, f, _)| *f == failed && *h == hook)
        {
            Some(at) => at,
            None => {
                let c = self.metrics.event_counter(hook, failed);
                self.event_counters.push((hook, failed, c));
                self.event_counters.len() - 1
            }
        };
        self.event_counters[at].2.inc();
    }

    /// Hands the records rendered so far to every open sink's queue, one message per sink; what
    /// a full queue cannot take is dropped there and counted.
    fn hand_off(&mut self) {
        if self.block.is_empty() {
            return;
        }
        // The next block: one the sinks are done with, or a new one.
        let next = match self.spare.front_mut().and_then(Arc::get_mut) {
            Some(b) => {
                b.clear();
                self.spare.pop_front().expect("front")
            }
            None => Arc::new(Block::new()),
        };
        let block = std::mem::replace(&mut self.block, next);
        let n = block.len();
        for s in &self.sinks {
            if !s.open() {
                continue;
            }
            let Some(tx) = &s.tx else { continue };
            let room = s
                .capacity
                .saturating_sub(s.stats.queued.get().max(0) as usize);
            let take = n.min(room);
            if take > 0 {
                s.stats.queued.inc_by(take as i64);
                let chunk = Chunk {
                    block: block.clone(),
                    next: 0,
                    end: take,
                };
                if let Err(TrySendError::Full(c) | TrySendError::Disconnected(c)) =
                    tx.try_send(chunk)
                {
                    s.stats.queued.dec_by(c.left() as i64);
                    s.stats.dropped.inc_by(c.left());
                }
            }
            s.stats.dropped.inc_by((n - take) as u64);
        }
        self.spare.push_back(block);
        if self.spare.len() > SPARE_BLOCKS {
            self.spare.pop_front();
        }
    }

    /// `Closed` once no output is left (stdout, the only one, closed by its reader).
    fn check_closed(&self) -> WriteResult {
        if self.sinks.iter().any(SinkHandle::open) {
            Ok(())
        } else {
            Err(WriteError::Closed)
        }
    }

    /// Hands what is rendered to the sinks (each writes it out when its queue runs dry);
    /// reports a closed output.
    pub fn flush(&mut self) -> WriteResult {
        self.hand_off();
        self.check_closed()
    }

    /// Waits (at most `grace`) until every sink has written what it holds; gives up the sinks
    /// that have not, counting what they held, and queues nothing more to them.
    fn settle(&mut self, grace: Duration) {
        self.hand_off();
        let deadline = Instant::now() + grace;
        while self.sinks.iter().any(|s| s.open() && s.holds() > 0) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        for s in &mut self.sinks {
            if !s.open() || s.holds() == 0 {
                continue;
            }
            s.shared.abandon.store(true, Ordering::SeqCst);
            // Unblocks a write to a peer that does not read.
            s.shared.interrupt();
            s.tx = None;
            let wait = Instant::now() + GIVE_UP_WAIT;
            while s.thread.as_ref().is_some_and(|t| !t.is_finished()) && Instant::now() < wait {
                std::thread::sleep(Duration::from_millis(10));
            }
            // A thread stuck in a write that cannot be interrupted (a hung file system): count
            // for it; a thread that returned has counted what it held itself.
            if !s.shared.remainder_counted.swap(true, Ordering::SeqCst) {
                s.stats.dropped.inc_by(s.holds());
            }
            log::warn!(
                "output {}: could not write what it held within {grace:?} of stopping: given up, \
                 {} records lost in all (counted in tracer_stop)",
                s.name,
                s.stats.dropped.get()
            );
        }
    }

    /// Records dropped by sinks so far, all sinks together.
    pub fn sink_lost(&self) -> u64 {
        self.sinks.iter().map(|s| s.stats.dropped.get()).sum()
    }

    /// Writes one `events_lost` record with reason `sink` per output that dropped records since
    /// the last report.
    pub fn report_sink_losses(&mut self, now_ns: u64) -> WriteResult {
        for i in 0..self.sinks.len() {
            let s = &mut self.sinks[i];
            let total = s.stats.dropped.get();
            if total > s.reported {
                let mut lost = EventsLost::new(now_ns, total - s.reported, "sink");
                lost.sink = Some(s.name.clone());
                lost.records =
                    std::mem::take(&mut *s.shared.unfit.lock().unwrap_or_else(|p| p.into_inner()));
                s.reported = total;
                // Counted in the metrics as it passes through `queue`.
                self.queue(Record::Lost(&lost))?;
            }
        }
        Ok(())
    }

    /// Closes the queues and waits (at most `timeout`) for every sink to write what it holds
    /// (after `tracer_stop`, only that record and the last loss report); a sink still busy then
    /// is given up, and what it held is counted in the metrics and said on stderr.
    pub fn close(&mut self, timeout: Duration) {
        self.hand_off();
        for s in &mut self.sinks {
            s.tx = None;
        }
        // A sink that cannot write now (TCP backing off) gives up what it holds, counted.
        self.stopping.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + timeout;
        for s in &mut self.sinks {
            let Some(t) = s.thread.take() else { continue };
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if !t.is_finished() {
                s.shared.abandon.store(true, Ordering::SeqCst);
                s.shared.interrupt();
                let wait = Instant::now() + GIVE_UP_WAIT;
                while !t.is_finished() && Instant::now() < wait {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let held = s.holds();
                if !s.shared.remainder_counted.swap(true, Ordering::SeqCst) {
                    s.stats.dropped.inc_by(held);
                }
                log::warn!(
                    "output {}: the last records (after tracer_stop) not written within \
                     {timeout:?} of stopping: given up, {held} records lost",
                    s.name,
                );
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        self.close(Duration::from_secs(5));
    }
}
