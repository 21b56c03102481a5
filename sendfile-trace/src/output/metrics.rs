//! `--metrics ADDR`: Prometheus text exposition over HTTP (`GET /metrics`).
//!
//! Events by hook and outcome, losses by reason, ring buffer fill (read from the ring's own
//! producer and consumer positions), queue fill, drops and errors of each sink.

use std::{
    net::SocketAddr,
    os::fd::{AsRawFd, BorrowedFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{error::Error, output::sink::SinkStats};

type Labels = Vec<(&'static str, String)>;

/// Every metric the tracer exports.
pub struct Metrics {
    registry: Registry,
    events: Family<Labels, Counter>,
    lost: Family<Labels, Counter>,
    sink_errors: Family<Labels, Counter>,
    sink_dropped: Family<Labels, Counter>,
    queue_length: Family<Labels, Gauge>,
    queue_capacity: Family<Labels, Gauge>,
    queue_fill: Family<Labels, Gauge<f64, AtomicU64>>,
    flows_open: Gauge,
    flow_records: Family<Labels, Counter>,
    folded_calls: Counter,
    ring_size: Gauge,
    ring_used: Gauge,
    ring_fill: Gauge<f64, AtomicU64>,
    ring: Mutex<Option<RingView>>,
    sinks: Mutex<Vec<(String, Arc<SinkStats>, usize)>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every family declared.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sendfile_trace");
        let m = Metrics {
            events: Family::default(),
            lost: Family::default(),
            sink_errors: Family::default(),
            sink_dropped: Family::default(),
            queue_length: Family::default(),
            queue_capacity: Family::default(),
            queue_fill: Family::default(),
            flows_open: Gauge::default(),
            flow_records: Family::default(),
            folded_calls: Counter::default(),
            ring_size: Gauge::default(),
            ring_used: Gauge::default(),
            ring_fill: Gauge::default(),
            ring: Mutex::new(None),
            sinks: Mutex::new(Vec::new()),
            registry: Registry::default(),
        };
        registry.register(
            "events",
            "sendfile events written, by hook and outcome",
            m.events.clone(),
        );
        registry.register(
            "events_lost",
            "events lost, by reason (ring_buffer_full, in_flight_full, missed_exit, sink, malformed, \
             unfinished)",
            m.lost.clone(),
        );
        registry.register(
            "sink_errors",
            "write or connection errors, by sink",
            m.sink_errors.clone(),
        );
        registry.register(
            "sink_dropped",
            "records dropped by a sink (queue full or failed write), by sink",
            m.sink_dropped.clone(),
        );
        registry.register(
            "queue_length",
            "records waiting in a sink's queue",
            m.queue_length.clone(),
        );
        registry.register(
            "queue_capacity",
            "capacity of a sink's queue, records",
            m.queue_capacity.clone(),
        );
        registry.register(
            "queue_fill_ratio",
            "queue length / capacity, by sink",
            m.queue_fill.clone(),
        );
        registry.register(
            "flows_open",
            "flows counted in the kernel and not yet finished",
            m.flows_open.clone(),
        );
        registry.register(
            "flow_records",
            "sendfile_flow records written, by reason (idle, interval, stop, evicted)",
            m.flow_records.clone(),
        );
        registry.register(
            "folded_calls",
            "calls counted in flow records instead of events by --max-events-per-process",
            m.folded_calls.clone(),
        );
        registry.register(
            "ring_buffer_size_bytes",
            "size of the kernel ring buffer",
            m.ring_size.clone(),
        );
        registry.register(
            "ring_buffer_used_bytes",
            "bytes committed to the ring buffer and not read yet",
            m.ring_used.clone(),
        );
        registry.register(
            "ring_buffer_fill_ratio",
            "ring buffer used / size",
            m.ring_fill.clone(),
        );
        // Every reason shows from the start, at 0, so that dashboards and alerts see the series.
        for reason in sendfile_trace_common::lost::NAMES.iter().chain(&[
            "sink",
            crate::daemon::UNFINISHED,
            crate::daemon::MALFORMED,
        ]) {
            let _ = m
                .lost
                .get_or_create(&vec![("reason", (*reason).to_owned())]);
        }
        Metrics { registry, ..m }
    }

    /// Counts one sendfile event.
    pub fn event(&self, hook: &str, failed: bool) {
        self.event_counter(hook, failed).inc();
    }

    /// The counter [`Metrics::event`] increments, for a caller that keeps it (the label lookup
    /// allocates and hashes: too much to do per event).
    pub fn event_counter(&self, hook: &str, failed: bool) -> Counter {
        let outcome = if failed { "failure" } else { "success" };
        self.events
            .get_or_create(&vec![
                ("hook", hook.to_owned()),
                ("outcome", outcome.into()),
            ])
            .clone()
    }

    /// Counts one flow record written, and the folded calls it holds.
    pub fn flow_record(&self, reason: &str, folded: u64) {
        self.flow_records
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc();
        self.folded_calls.inc_by(folded);
    }

    /// Sets the number of open flows.
    pub fn flows_open(&self, n: usize) {
        self.flows_open.set(n as i64);
    }

    /// Counts lost events.
    pub fn lost(&self, reason: &str, n: u64) {
        self.lost
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc_by(n);
    }

    /// The counters of a new sink (shared with its thread).
    pub fn sink(&self, name: &str, capacity: usize) -> Arc<SinkStats> {
        let l = vec![("sink", name.to_owned())];
        let stats = Arc::new(SinkStats {
            dropped: self.sink_dropped.get_or_create(&l).clone(),
            errors: self.sink_errors.get_or_create(&l).clone(),
            queued: self.queue_length.get_or_create(&l).clone(),
        });
        self.queue_capacity.get_or_create(&l).set(capacity as i64);
        self.sinks.lock().unwrap_or_else(|p| p.into_inner()).push((
            name.to_owned(),
            stats.clone(),
            capacity,
        ));
        stats
    }

    /// Watches the ring buffer's fill from now on (maps its position pages read-only).
    pub fn watch_ring(&self, fd: BorrowedFd<'_>, size: u32) {
        self.ring_size.set(i64::from(size));
        match RingView::map(fd, size) {
            Ok(v) => *self.ring.lock().unwrap_or_else(|p| p.into_inner()) = Some(v),
            Err(e) => log::warn!("metrics: cannot map the ring buffer positions: {e}"),
        }
    }

    /// The exposition text, gauges sampled now.
    pub fn render(&self) -> String {
        if let Some(r) = &*self.ring.lock().unwrap_or_else(|p| p.into_inner()) {
            let used = r.used();
            self.ring_used.set(used as i64);
            self.ring_fill.set(used as f64 / f64::from(r.size));
        }
        for (name, stats, cap) in &*self.sinks.lock().unwrap_or_else(|p| p.into_inner()) {
            let len = stats.queued.get().max(0);
            self.queue_fill
                .get_or_create(&vec![("sink", name.clone())])
                .set(len as f64 / (*cap).max(1) as f64);
        }
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            log::warn!("metrics: cannot encode: {e}");
        }
        out
    }
}

/// The ring buffer's consumer and producer positions, mapped read-only.
struct RingView {
    consumer: *const AtomicU64,
    producer: *const AtomicU64,
    size: u32,
}

// SAFETY: the pointers are to shared kernel pages mapped for the life of the process and only
// read through atomics.
unsafe impl Send for RingView {}
// SAFETY: as above.
unsafe impl Sync for RingView {}

impl RingView {
    fn map(fd: BorrowedFd<'_>, size: u32) -> std::io::Result<RingView> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let map = |offset: usize| {
            // SAFETY: a fresh shared read-only mapping of one page of the ring buffer map, whose
            // layout the kernel defines: the consumer position page at 0, the producer's next.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    page,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    fd.as_raw_fd(),
                    offset as libc::off_t,
                )
            };
            if p == libc::MAP_FAILED {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(p as *const AtomicU64)
            }
        };
        Ok(RingView {
            consumer: map(0)?,
            producer: map(page)?,
            size,
        })
    }

    fn used(&self) -> u64 {
        // SAFETY: both pages stay mapped (never unmapped); the first word of each is the
        // position the kernel and the reader update atomically.
        let (c, p) = unsafe {
            (
                (*self.consumer).load(Ordering::Acquire),
                (*self.producer).load(Ordering::Acquire),
            )
        };
        p.saturating_sub(c).min(u64::from(self.size))
    }
}

/// Limits of the metrics endpoint. Its clients are untrusted (anything that can reach the
/// port), the daemon runs as root, and a scrape is one small GET, so each connection gets one
/// request with a bounded head, a bounded time, and a bounded share of the daemon.
pub mod limits {
    use std::time::Duration;

    /// Connections served at once; a new one past this closes the oldest, so that idle or slow
    /// clients cannot keep a scrape out.
    pub const CONNECTIONS: usize = 16;
    /// Bytes of request head (request line and headers) read from a connection: a larger one
    /// gets `431`, and hyper never buffers more (8 KiB is hyper's smallest buffer).
    pub const HEAD_BYTES: usize = 8192;
    /// Header lines accepted in a request.
    pub const HEADERS: usize = 32;
    /// Time a client has to send its request head.
    pub const HEAD_TIME: Duration = Duration::from_secs(5);
    /// Time a connection may last in all, response included.
    pub const CONNECTION_TIME: Duration = Duration::from_secs(10);
}

/// Serves `GET /metrics` (and `HEAD`) on `addr` from a thread of its own, running a
/// single-threaded tokio runtime: one thread whatever the number of clients, each connection a
/// task within the [`limits`].
///
/// hyper parses the requests: it caps the head it buffers and the time it waits for it, which
/// tiny_http (used before) did not (a client sending endless headers grew the daemon by hundreds
/// of megabytes, and each connection held a thread).
pub fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<SocketAddr, Error> {
    let listen = format!("cannot listen on {addr} for --metrics");
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(Error::io(listen.clone()))?;
    let bound = listener.local_addr().map_err(Error::io(listen))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(Error::io("cannot start the metrics runtime"))?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || runtime.block_on(accept_loop(listener, metrics)))
        .map_err(Error::io("cannot start the metrics thread"))?;
    Ok(bound)
}

/// Accepts connections for ever, at most [`limits::CONNECTIONS`] alive (the oldest goes first).
async fn accept_loop(listener: std::net::TcpListener, metrics: Arc<Metrics>) {
    use std::collections::BTreeMap;

    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log::error!("metrics: cannot poll the listening socket: {e}");
            return;
        }
    };
    // Live connections by age: their tasks remove themselves when done.
    let live: Arc<Mutex<BTreeMap<u64, tokio::task::AbortHandle>>> = Arc::default();
    let mut next_id = 0u64;
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of descriptors and the like: wait instead of spinning.
                log::debug!("metrics: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let id = next_id;
        next_id += 1;
        {
            let mut l = live.lock().unwrap_or_else(|p| p.into_inner());
            while l.len() >= limits::CONNECTIONS {
                if let Some((_, oldest)) = l.pop_first() {
                    oldest.abort();
                }
            }
        }
        let (metrics, done) = (metrics.clone(), live.clone());
        let task = tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let resp = respond(&req, &metrics);
                async move { Ok::<_, std::convert::Infallible>(resp) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits::HEAD_TIME)
                .max_buf_size(limits::HEAD_BYTES)
                .max_headers(limits::HEADERS)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            match tokio::time::timeout(limits::CONNECTION_TIME, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => log::debug!("metrics: {e}"),
                Err(_) => log::debug!(
                    "metrics: connection closed after {:?}",
                    limits::CONNECTION_TIME
                ),
            }
            done.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        });
        live.lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, task.abort_handle());
    }
}

/// The response to one request: the exposition for `GET`/`HEAD /metrics`, 405 for other
/// methods, 404 elsewhere. A request body is never read.
fn respond<B>(
    req: &hyper::Request<B>,
    metrics: &Metrics,
) -> hyper::Response<http_body_util::Full<hyper::body::Bytes>> {
    use hyper::{Method, StatusCode, header};
    let text = |status: StatusCode, body: String| {
        let mut r = hyper::Response::new(http_body_util::Full::new(body.into()));
        *r.status_mut() = status;
        r
    };
    if req.uri().path() != "/metrics" {
        return text(StatusCode::NOT_FOUND, "see /metrics\n".into());
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET and HEAD are served\n".into(),
        );
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let mut r = text(StatusCode::OK, metrics.render());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_every_family() {
        let m = Metrics::new();
        m.event("tracepoint", false);
        m.event("tracepoint", true);
        m.lost("ring_buffer_full", 3);
        let s = m.sink("syslog+tcp://127.0.0.1:1", 10);
        s.errors.inc();
        s.queued.inc();
        let text = m.render();
        for needle in [
            "sendfile_trace_events_total{hook=\"tracepoint\",outcome=\"success\"} 1",
            "sendfile_trace_events_total{hook=\"tracepoint\",outcome=\"failure\"} 1",
            "sendfile_trace_events_lost_total{reason=\"ring_buffer_full\"} 3",
            "sendfile_trace_events_lost_total{reason=\"sink\"} 0",
            "sendfile_trace_events_lost_total{reason=\"missed_exit\"} 0",
            "sendfile_trace_sink_errors_total{sink=\"syslog+tcp://127.0.0.1:1\"} 1",
            "sendfile_trace_queue_fill_ratio{sink=\"syslog+tcp://127.0.0.1:1\"} 0.1",
            "sendfile_trace_ring_buffer_fill_ratio",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }
}
