//! Remote write: the host gathers its collectors every `interval`, queues the series on disk as
//! remote-write 1.0 requests (snappy-compressed protobuf `WriteRequest`s) and sends them, oldest
//! first, to a receiver (Prometheus with `--web.enable-remote-write-receiver`, Mimir, Thanos
//! Receive, VictoriaMetrics, Cortex), for sites a Prometheus cannot scrape.
//!
//! Network errors, 5xx and 429 are retried with backoff, so an outage loses nothing the queue
//! can hold; other 4xx answers (out-of-order samples, bad requests, refused credentials) are
//! final: the request is dropped and counted, never retried forever.

pub mod config;
pub mod proto;
pub mod queue;
mod send;
mod series;

use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::SystemTime;

use tidegauge_core::{CancellationToken, MetricFamily, labels, lock};
use tidegauge_server::{HostMetrics, Selection, SharedEngine};

pub use config::{ConfigError, RemoteWriteConfig};
pub use queue::{Batch, Queue};
pub use series::batches;

/// Why samples were not delivered (`reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// The receiver refused them as too old or out of order (outside its out-of-order window).
    OutOfOrder,
    /// The receiver refused the request with another 4xx.
    Rejected,
    /// The queue was full: the oldest requests made room.
    QueueFull,
    /// A queued request's file could not be read.
    Corrupt,
    /// The queue could not be written (disk full, directory gone).
    WriteError,
}

impl Loss {
    const ALL: [Loss; 5] = [
        Loss::OutOfOrder,
        Loss::Rejected,
        Loss::QueueFull,
        Loss::Corrupt,
        Loss::WriteError,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::OutOfOrder => "out_of_order",
            Self::Rejected => "rejected",
            Self::QueueFull => "queue_full",
            Self::Corrupt => "corrupt",
            Self::WriteError => "write_error",
        }
    }
}

/// Counters of remote write, kept across reloads (the host holds one `Stats`), served with the
/// host's self-metrics as Prometheus's own remote-write queue serves them.
#[derive(Debug, Default)]
pub struct Stats {
    queued: AtomicU64,
    sent: AtomicU64,
    retried: AtomicU64,
    lost: [AtomicU64; 5],
    corrupt_files: AtomicU64,
    requests_failed: AtomicU64,
    highest_queued_ms: AtomicI64,
    highest_sent_ms: AtomicI64,
    last_gather_ms: AtomicI64,
    queue: Mutex<Weak<Queue>>,
    /// The receiver (redacted), when the last request was accepted (ms), and the last failure
    /// while requests are failing: for the landing page.
    receiver: Mutex<String>,
    last_accepted_ms: AtomicI64,
    failing: Mutex<Option<String>>,
}

impl Stats {
    fn lose(&self, why: Loss, samples: u64) {
        if samples > 0 {
            self.lost[Loss::ALL.iter().position(|l| *l == why).unwrap_or(0)]
                .fetch_add(samples, Ordering::Relaxed);
        }
    }

    /// Samples lost for `why` since start.
    pub fn lost(&self, why: Loss) -> u64 {
        self.lost[Loss::ALL.iter().position(|l| *l == why).unwrap_or(0)].load(Ordering::Relaxed)
    }

    /// Samples the receiver accepted since start.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl HostMetrics for Stats {
    fn status(&self) -> tidegauge_core::status::Status {
        use tidegauge_core::status::{Cell, Health, Row, Section, Status};
        let Some(queue) = lock(&self.queue).upgrade() else {
            return Status::default();
        };
        let pending = queue.pending();
        let now = now_ms();
        let ago =
            |ms: i64| (ms > 0).then(|| std::time::Duration::from_millis((now - ms).max(0) as u64));
        let lost: u64 = Loss::ALL.iter().map(|l| self.lost(*l)).sum();
        let failing = lock(&self.failing).clone();
        let health = match (&failing, lost) {
            (Some(_), _) => Health::Failing,
            (None, 0) => Health::Ok,
            (None, _) => Health::Warning,
        };
        let mut section = Section::new(
            "Remote write",
            &[
                "receiver",
                "pending samples",
                "last accepted request",
                "newest sample sent",
                "samples lost",
                "failing with",
            ],
        );
        section.rows.push(Row::new(
            health,
            vec![
                Cell::Text(lock(&self.receiver).clone()),
                Cell::Text(pending.samples.to_string()),
                Cell::Ago(ago(self.last_accepted_ms.load(Ordering::Relaxed))),
                Cell::Ago(ago(self.highest_sent_ms.load(Ordering::Relaxed))),
                Cell::Text(lost.to_string()),
                Cell::Text(failing.unwrap_or_default()),
            ],
        ));
        Status {
            sections: vec![section],
        }
    }

    fn families(&self) -> Vec<MetricFamily> {
        let Some(queue) = lock(&self.queue).upgrade() else {
            // Remote write is not configured: no series at all.
            return Vec::new();
        };
        let pending = queue.pending();
        let secs = |ms: i64| ms as f64 / 1000.0;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let mut lost = MetricFamily::counter(
            "tidegauge_remote_write_samples_lost",
            "Samples gathered but never delivered: refused by the receiver (out_of_order, rejected), dropped from the queue (queue_full, corrupt), or never queued (write_error).",
        );
        for why in Loss::ALL {
            lost.push(labels([("reason", why.label())]), self.lost(why) as f64);
        }
        let mut highest = MetricFamily::gauge(
            "tidegauge_remote_write_highest_timestamp_seconds",
            "Timestamp of the newest sample queued for remote write.",
        );
        highest.push(
            vec![],
            secs(
                self.highest_queued_ms
                    .load(Ordering::Relaxed)
                    .max(pending.max_ts),
            ),
        );
        vec![
            MetricFamily::counter(
                "tidegauge_remote_write_samples",
                "Samples gathered and queued for remote write.",
            )
            .with(vec![], load(&self.queued)),
            MetricFamily::counter(
                "tidegauge_remote_write_samples_sent",
                "Samples the remote-write receiver accepted (a backlog left by an earlier run included).",
            )
            .with(vec![], load(&self.sent)),
            MetricFamily::counter(
                "tidegauge_remote_write_samples_retried",
                "Samples in requests retried after a network error, 5xx or 429.",
            )
            .with(vec![], load(&self.retried)),
            lost,
            MetricFamily::counter(
                "tidegauge_remote_write_requests_failed",
                "Requests to the remote-write receiver that failed (each retry counts).",
            )
            .with(vec![], load(&self.requests_failed)),
            MetricFamily::counter(
                "tidegauge_remote_write_corrupt_files",
                "Files of the queue directory that were not readable requests, removed at start-up.",
            )
            .with(vec![], load(&self.corrupt_files)),
            MetricFamily::gauge(
                "tidegauge_remote_write_samples_pending",
                "Samples in the on-disk queue, not yet accepted by the receiver.",
            )
            .with(vec![], pending.samples as f64),
            MetricFamily::gauge(
                "tidegauge_remote_write_queue_bytes",
                "Size of the on-disk remote-write queue.",
            )
            .with(vec![], pending.bytes as f64),
            highest,
            MetricFamily::gauge(
                "tidegauge_remote_write_highest_sent_timestamp_seconds",
                "Timestamp of the newest sample the receiver accepted (0 before the first since start).",
            )
            .with(vec![], secs(self.highest_sent_ms.load(Ordering::Relaxed))),
            MetricFamily::gauge(
                "tidegauge_remote_write_last_gather_timestamp_seconds",
                "When remote write last gathered the collectors.",
            )
            .with(vec![], secs(self.last_gather_ms.load(Ordering::Relaxed))),
        ]
    }
}

/// A configured remote-write destination: its queue and settings. Build one per configuration;
/// a reload builds again from the previous one, which hands over its queue.
#[derive(Debug)]
pub struct RemoteWrite {
    config: RemoteWriteConfig,
    url: reqwest::Url,
    client: reqwest::Client,
    credentials: config::Credentials,
    queue: Arc<Queue>,
    stats: Arc<Stats>,
}

impl RemoteWrite {
    /// Checks the configuration without side effects (`--check-config`).
    pub fn check(config: &RemoteWriteConfig) -> Result<(), ConfigError> {
        config.validate()?;
        config.credentials()?;
        config.client()?;
        Ok(())
    }

    /// Builds the destination; opens (and locks) its queue unless `previous` holds the same
    /// directory, whose queue it takes over.
    pub fn build(
        config: &RemoteWriteConfig,
        data_dir: &Path,
        stats: Arc<Stats>,
        previous: Option<&RemoteWrite>,
    ) -> Result<Self, ConfigError> {
        let url = config.validate()?;
        let credentials = config.credentials()?;
        let client = config.client()?;
        let dir = config.queue_dir(data_dir);
        // The same directory however it is spelled (`a/../a`, a symlink): it is locked once.
        let same = |p: &RemoteWrite| {
            p.queue.dir() == dir
                || matches!(
                    (std::fs::canonicalize(p.queue.dir()), std::fs::canonicalize(&dir)),
                    (Ok(a), Ok(b)) if a == b
                )
        };
        if let Some(p) = previous.filter(|p| !same(p)) {
            let left = p.queue.pending();
            if left.requests > 0 {
                tracing::warn!(
                    old = %p.queue.dir().display(),
                    new = %dir.display(),
                    samples = left.samples,
                    "remote write: queue_dir changed; the old directory's requests stay there unsent (set queue_dir back to send them)"
                );
            }
        }
        let queue = match previous.filter(|p| same(p)) {
            Some(p) => {
                p.queue.set_max_bytes(config.queue_max_bytes);
                Arc::clone(&p.queue)
            }
            None => {
                let (queue, opened) =
                    Queue::open(&dir, config.queue_max_bytes).map_err(|e| ConfigError {
                        key: "queue_dir",
                        why: format!("{}: {e}", dir.display()),
                    })?;
                stats
                    .corrupt_files
                    .fetch_add(opened.corrupt, Ordering::Relaxed);
                let p = queue.pending();
                if p.requests > 0 {
                    tracing::info!(requests = p.requests, samples = p.samples, dir = %dir.display(), "remote write: resuming the queue left by the last run");
                }
                Arc::new(queue)
            }
        };
        *lock(&stats.queue) = Arc::downgrade(&queue);
        *lock(&stats.receiver) = redacted(&url);
        Ok(Self {
            config: config.clone(),
            url,
            client,
            credentials,
            queue,
            stats,
        })
    }

    /// Starts gathering from the engine serving now and sending, until `token` is cancelled.
    pub fn start(self: &Arc<Self>, engine: SharedEngine, token: CancellationToken) {
        let notify = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(Arc::clone(self).gather_loop(engine, Arc::clone(&notify), token.clone()));
        tokio::spawn(Arc::clone(self).send_loop(notify, token));
        tracing::info!(url = %redacted(&self.url), interval = ?self.config.interval, queue = %self.queue.dir().display(), "remote write started");
    }

    async fn gather_loop(
        self: Arc<Self>,
        engine: SharedEngine,
        notify: Arc<tokio::sync::Notify>,
        token: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(self.config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let external: Vec<(String, String)> = self
            .config
            .external_labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        loop {
            tokio::select! {
                () = token.cancelled() => return,
                _ = tick.tick() => {}
            }
            let engine = engine.current();
            let selection = match &self.config.collectors {
                None => Selection::All,
                Some(names) => match engine.select(names.clone(), Vec::new()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "remote write: remote_write.collectors; sending the host's own series only");
                        Selection::Only(Vec::new())
                    }
                },
            };
            let gathered = match engine.scrape(&selection, None).await {
                Ok(g) => g,
                Err(e) => {
                    tracing::warn!(error = %e, "remote write: gathering failed");
                    continue;
                }
            };
            let now = now_ms();
            let max = self.config.max_samples_per_send;
            let batches = batches(&gathered.parts, now, &external, max);
            let (queue, stats) = (Arc::clone(&self.queue), Arc::clone(&self.stats));
            let written = tokio::task::spawn_blocking(move || {
                let mut failed: Option<(std::io::Error, u64)> = None;
                for b in &batches {
                    if let Some((_, lost)) = failed.as_mut() {
                        *lost = lost.saturating_add(b.samples);
                        continue;
                    }
                    match queue.push(b) {
                        Ok(dropped) => {
                            stats.lose(Loss::QueueFull, dropped.samples);
                            if dropped.requests > 0 {
                                tracing::warn!(requests = dropped.requests, samples = dropped.samples, "remote write: queue full, oldest requests dropped");
                            }
                            stats.queued.fetch_add(b.samples, Ordering::Relaxed);
                        }
                        Err(e) => failed = Some((e, b.samples)),
                    }
                }
                if let Some((e, lost)) = failed {
                    stats.lose(Loss::WriteError, lost);
                    tracing::error!(error = %e, dir = %queue.dir().display(), samples = lost, "remote write: cannot write to the queue; these samples are lost");
                }
            })
            .await;
            match written {
                Ok(()) => {
                    self.stats
                        .highest_queued_ms
                        .fetch_max(now, Ordering::Relaxed);
                    self.stats.last_gather_ms.store(now, Ordering::Relaxed);
                }
                Err(e) => tracing::error!(error = %e, "remote write: queue task failed"),
            }
            notify.notify_one();
        }
    }

    async fn send_loop(
        self: Arc<Self>,
        notify: Arc<tokio::sync::Notify>,
        token: CancellationToken,
    ) {
        let mut backoff = send::MIN_BACKOFF;
        let mut failing = false;
        loop {
            let queue = Arc::clone(&self.queue);
            let front = tokio::task::spawn_blocking(move || queue.front())
                .await
                .ok()
                .flatten();
            let (entry, body) = match front {
                None => {
                    tokio::select! {
                        () = token.cancelled() => return,
                        () = notify.notified() => continue,
                    }
                }
                Some(Err((entry, e))) => {
                    tracing::error!(error = %e, samples = entry.samples, "remote write: a queued request cannot be read; dropped");
                    self.stats.lose(Loss::Corrupt, entry.samples);
                    continue;
                }
                Some(Ok(front)) => front,
            };
            let outcome = tokio::select! {
                () = token.cancelled() => return,
                o = send::send(&self.client, &self.url, &self.credentials, body) => o,
            };
            match outcome {
                send::Outcome::Sent => {
                    self.queue.remove(entry.seq);
                    self.stats
                        .last_accepted_ms
                        .store(now_ms(), Ordering::Relaxed);
                    *lock(&self.stats.failing) = None;
                    self.stats.sent.fetch_add(entry.samples, Ordering::Relaxed);
                    self.stats
                        .highest_sent_ms
                        .fetch_max(entry.max_ts, Ordering::Relaxed);
                    if failing {
                        tracing::info!("remote write: the receiver accepts requests again");
                        failing = false;
                    }
                    backoff = send::MIN_BACKOFF;
                }
                send::Outcome::Refused { out_of_order, why } => {
                    self.queue.remove(entry.seq);
                    self.stats.requests_failed.fetch_add(1, Ordering::Relaxed);
                    let loss = if out_of_order {
                        Loss::OutOfOrder
                    } else {
                        Loss::Rejected
                    };
                    self.stats.lose(loss, entry.samples);
                    tracing::warn!(samples = entry.samples, reason = loss.label(), error = %why, "remote write: the receiver refused a request; not retried");
                }
                send::Outcome::Retry { after, why } => {
                    *lock(&self.stats.failing) = Some(why.clone());
                    self.stats.requests_failed.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .retried
                        .fetch_add(entry.samples, Ordering::Relaxed);
                    if failing {
                        tracing::debug!(error = %why, "remote write: retrying");
                    } else {
                        tracing::warn!(error = %why, "remote write: sending failed; retrying with backoff, the queue keeps what is gathered meanwhile");
                        failing = true;
                    }
                    let wait = send::next_wait(after, backoff);
                    backoff = (backoff * 2).min(send::MAX_BACKOFF);
                    tokio::select! {
                        () = token.cancelled() => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The URL without credentials, query or fragment, for logs and the landing page.
fn redacted(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.to_string()
}
