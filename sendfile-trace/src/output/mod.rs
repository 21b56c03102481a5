//! Where events go: every record is rendered once in the chosen [`Format`] into a [`Batch`] that
//! every sink's bounded queue shares (see [`crate::output::sink`]); the ring-buffer reader never
//! blocks on a sink.

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
    output::sink::{Batch, Hangup, SinkOptions, SinkSpec, SinkStats},
};

/// A batch goes to the sinks when it holds this many bytes (or at the next flush, which the
/// daemon does after every drain of the ring buffer): one allocation, one queue operation and
/// one file write per batch instead of per record.
const BATCH_BYTES: usize = 64 * 1024;

/// How the output is set up (from the command line and the config file).
#[derive(Clone, Debug)]
pub struct OutputConfig {
    /// The sinks; empty means stdout.
    pub sinks: Vec<SinkSpec>,
    /// The format; `None` picks `text` on a terminal, `tracee` otherwise.
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
    /// Records rendered since the last send.
    batch: Batch,
    /// The event counters by hook and outcome, looked up once.
    event_counters: Vec<(
        &'static str,
        bool,
        prometheus_client::metrics::counter::Counter,
    )>,
    /// Set when stdout's reader went away (EPIPE): the tracer stops.
    closed: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    /// The address the metrics endpoint listens on.
    pub metrics_addr: Option<SocketAddr>,
}

struct SinkHandle {
    name: String,
    tx: Option<SyncSender<Arc<Batch>>>,
    /// Records the queue may hold.
    capacity: usize,
    thread: Option<JoinHandle<()>>,
    stats: Arc<SinkStats>,
    /// Drops already reported in-band.
    reported: u64,
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
        let metrics = Arc::new(Metrics::new());
        let closed = Arc::new(AtomicBool::new(false));
        let stopping = Arc::new(AtomicBool::new(false));
        let specs = if cfg.sinks.is_empty() {
            vec![SinkSpec::Stdout]
        } else {
            cfg.sinks.clone()
        };
        let hangup = Hangup(Arc::new(AtomicBool::new(false)));
        // Always handled, so that a reload never kills a tracer that has no file to reopen.
        signal_hook::flag::register(libc::SIGHUP, hangup.0.clone())
            .map_err(|e| Error::Runtime(format!("cannot handle SIGHUP: {e}")))?;
        let mut sinks = Vec::new();
        for spec in &specs {
            let sink = sink::open(spec, &cfg.sink).map_err(|source| match spec {
                SinkSpec::File(path) => Error::OutputOpen {
                    path: path.clone(),
                    source,
                },
                _ => Error::Runtime(format!("cannot open output {spec}: {source}")),
            })?;
            let name = spec.to_string();
            let capacity = cfg.queue_size.max(1);
            let stats = metrics.sink(&name, capacity);
            let (tx, rx) = sync_channel(capacity);
            let hup = matches!(spec, SinkSpec::File(_)).then(|| hangup.clone());
            let thread = {
                let (name, stats, closed, stopping) = (
                    name.clone(),
                    stats.clone(),
                    closed.clone(),
                    stopping.clone(),
                );
                std::thread::Builder::new()
                    .name(format!("sink {name}"))
                    .spawn(move || sink::run(name, sink, rx, stats, hup, closed, stopping))
                    .map_err(|e| Error::Runtime(format!("cannot start a sink thread: {e}")))?
            };
            sinks.push(SinkHandle {
                name,
                tx: Some(tx),
                capacity,
                thread: Some(thread),
                stats,
                reported: 0,
            });
        }
        let metrics_addr = match cfg.metrics {
            Some(addr) => {
                Some(crate::output::metrics::serve(addr, metrics.clone()).map_err(Error::Runtime)?)
            }
            None => None,
        };
        Ok(Output {
            format: cfg.format.unwrap_or_else(Format::default_for_stdout),
            sinks,
            batch: Batch::with_capacity(4096),
            event_counters: Vec::new(),
            closed,
            stopping,
            metrics,
            metrics_addr,
        })
    }

    /// The metrics this output feeds (the daemon adds the ring buffer's fill).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Renders one record into the current batch; a full batch goes to the sinks.
    pub fn write<T: AsRecord + ?Sized>(&mut self, record: &T) -> WriteResult {
        if self.closed.load(Ordering::Relaxed) {
            return Err(WriteError::Closed);
        }
        let rec = record.as_record();
        match rec {
            Record::Sendfile(e) => self.count_event(e.hook, e.errno.is_some()),
            Record::Lost(l) => self.metrics.lost(l.reason, l.lost),
            _ => {}
        }
        let format = self.format;
        self.batch
            .push(rec.name(), rec.severity(), rec.timestamp(), |out| {
                format.render(rec, out)
            })?;
        if self.batch.byte_len() >= BATCH_BYTES {
            self.send();
        }
        Ok(())
    }

    /// Counts one event in the metrics.
    fn count_event(&mut self, hook: &'static str, failed: bool) {
        let known = self
            .event_counters
            .iter()
            .find(|(h, f, _)| *h == hook && *f == failed);
        match known {
            Some((_, _, c)) => {
                c.inc();
            }
            None => {
                let c = self.metrics.event_counter(hook, failed);
                c.inc();
                self.event_counters.push((hook, failed, c));
            }
        }
    }

    /// Hands the current batch to every sink's queue; a queue without room for all its records
    /// drops the batch there and counts each record.
    fn send(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        // Sized from the batch just sent: a trickle's batches stay small in the queue (which
        // is bounded in records, not bytes), a flood's are allocated once at full size.
        let used = self.batch.byte_len();
        let next = Batch::with_capacity((used + used / 4 + 1024).min(BATCH_BYTES + 4096));
        let batch = Arc::new(std::mem::replace(&mut self.batch, next));
        let n = batch.len();
        for s in &self.sinks {
            let Some(tx) = &s.tx else { continue };
            // The bound is in records: a full queue must not take a batch past it.
            if s.stats.queued.get().max(0) as usize + n > s.capacity {
                s.stats.dropped.inc_by(n as u64);
                continue;
            }
            s.stats.queued.inc_by(n as i64);
            match tx.try_send(batch.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    s.stats.queued.dec_by(n as i64);
                    s.stats.dropped.inc_by(n as u64);
                }
            }
        }
    }

    /// Sends what is batched to the sinks (each writes and flushes when its queue runs dry);
    /// reports a closed stdout.
    pub fn flush(&mut self) -> WriteResult {
        self.send();
        if self.closed.load(Ordering::Relaxed) {
            return Err(WriteError::Closed);
        }
        Ok(())
    }

    /// Records dropped by sinks so far, all sinks together.
    pub fn sink_lost(&self) -> u64 {
        self.sinks.iter().map(|s| s.stats.dropped.get()).sum()
    }

    /// Writes one `events_lost` record with reason `sink` per output that dropped records since
    /// the last report.
    pub fn report_sink_losses(&mut self, now_ns: u64) -> WriteResult {
        // A batch still held here may yet be dropped: hand it over first so it is counted.
        self.send();
        for i in 0..self.sinks.len() {
            let s = &mut self.sinks[i];
            let total = s.stats.dropped.get();
            if total > s.reported {
                let mut lost = EventsLost::new(now_ns, total - s.reported, "sink");
                lost.sink = Some(s.name.clone());
                s.reported = total;
                // Counted in the metrics as it passes through `write`.
                self.write(&lost)?;
            }
        }
        Ok(())
    }

    /// Closes the queues and waits (at most `timeout`) for every sink to write what it holds.
    pub fn close(&mut self, timeout: Duration) {
        self.send();
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
            if t.is_finished() {
                let _ = t.join();
            } else {
                log::warn!(
                    "output {}: {} records not written within {timeout:?} of stopping",
                    s.name,
                    s.stats.queued.get()
                );
            }
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        self.close(Duration::from_secs(5));
    }
}
