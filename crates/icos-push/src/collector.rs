//! The `Collector` implementation: the exposition of the pushed state.

use super::*;
use std::time::Duration;

/// Push groups the landing page lists at most.
const STATUS_GROUPS: usize = 100;

#[async_trait]
impl Collector for IcosPush {
    fn name(&self) -> &str {
        NAME
    }

    /// Push groups (worst first, at most [`STATUS_GROUPS`] of them) with their last push and
    /// expiry, and the model metrics with their last cycle.
    fn status(&self) -> tidegauge_core::status::Status {
        use tidegauge_core::status::{Cell, Health, Row, Section, Status};
        let now = unix_seconds(self.inner.services.clock.now());
        let since =
            |t: f64| (t > 0.0).then(|| Duration::try_from_secs_f64(now - t).unwrap_or_default());
        let mut groups = Section::new(
            "Push groups",
            &[
                "group",
                "series",
                "last push",
                "last refused push",
                "expires",
            ],
        );
        let total = {
            // The state as it is, pending changes included: a page view must not copy the
            // groups (`committed` would, while a commit is in flight) nor build a row for each
            // of thousands of them under the lock that pushes take.
            let state = lock(&self.inner.durable.state);
            let refused = |g: &&crate::pushgateway::Group| g.failure_time > g.push_time;
            let all = &state.groups;
            let shown = all
                .all()
                .filter(refused)
                .chain(all.all().filter(|g| !refused(g)))
                .take(STATUS_GROUPS);
            for g in shown {
                // Quoted and escaped as Prometheus writes labels: a value cannot pass for
                // another label, and control characters show.
                let key: Vec<String> = g.key.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                groups.rows.push(Row::new(
                    if refused(&g) {
                        Health::Warning
                    } else {
                        Health::Ok
                    },
                    vec![
                        Cell::Text(key.join(", ")),
                        Cell::Text(
                            g.families
                                .iter()
                                .map(|f| f.series_count())
                                .sum::<usize>()
                                .to_string(),
                        ),
                        Cell::Ago(since(g.push_time)),
                        Cell::Ago(since(g.failure_time)),
                        match g.expires {
                            Some(e) => Cell::In(Some(
                                Duration::try_from_secs_f64(e - now).unwrap_or_default(),
                            )),
                            None => Cell::Text("never".into()),
                        },
                    ],
                ));
            }
            all.len()
        };
        if total > STATUS_GROUPS {
            groups.rows.push(Row::new(
                Health::Ok,
                vec![Cell::Text(format!(
                    "and {} more (see /api/v1/metrics)",
                    total - STATUS_GROUPS
                ))],
            ));
        }
        let mut sections = vec![groups];
        let models = &self.inner.durable.models;
        if !lock(&models.definitions).is_empty() {
            sections.push(models.status(now, self.inner.models.interval));
        }
        Status { sections }
    }

    /// The same `Arc` while nothing changed: the host then reuses its checks and encoding.
    async fn collect(&self, ctx: &ScrapeContext) -> Result<Arc<Snapshot>, CollectError> {
        let now = unix_seconds(ctx.now());
        let expiry = {
            let mut state = lock(&self.inner.durable.state);
            let seq = state.begin();
            let deletes = state.expire(now, seq);
            (!deletes.is_empty()).then(|| {
                (
                    seq,
                    self.inner.durable.store.submit_in(state.epoch, deletes),
                )
            })
        };
        if let Some((seq, p)) = expiry
            && self.inner.durable.settled(seq, p).await.is_err()
        {
            tracing::warn!(
                "expired push groups could not be removed from the store; the state is reloaded and they expire again"
            );
            resync(&self.inner);
        }
        let stats = self.inner.durable.store.stats();
        let load =
            |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed) as f64;
        let state = lock(&self.inner.durable.state);
        // A change bumps the generation before its commit ends, so the commit count is part of
        // the key: the commit counters are current at every scrape.
        let key = (
            state.generation,
            stats.commits.load(std::sync::atomic::Ordering::Acquire),
        );
        let mut shared = lock(&self.inner.durable.shared);
        // Only committed state is exposed: nothing a scrape sees can vanish after a crash.
        let settled = state.pending.is_empty();
        if settled
            && let Some((at, snap)) = shared.as_ref()
            && *at == key
        {
            return Ok(Arc::clone(snap));
        }
        let (registry, groups) = state.committed();
        let mut snap = registry.snapshot();
        snap.families.extend(groups.snapshot().families);
        for f in &mut snap.families {
            // Pushed by clients: where another source owns a name, the host joins the series
            // to its family or drops them.
            f.guest = true;
        }
        snap.push(
            tidegauge_core::MetricFamily::counter(
                "tidegauge_icos_push_expired_groups",
                "Pushgateway groups removed because their time-to-live passed.",
            )
            .with(vec![], state.expired as f64),
        );
        snap.push(
            tidegauge_core::MetricFamily::counter(
                "tidegauge_icos_push_store_commits",
                "Store transactions committed (each one fsync); concurrent writes share one.",
            )
            .with(vec![], load(&stats.commits)),
        );
        snap.push(
            tidegauge_core::MetricFamily::counter(
                "tidegauge_icos_push_store_committed_requests",
                "Write requests carried by those transactions.",
            )
            .with(vec![], load(&stats.requests)),
        );
        snap.push(
            tidegauge_core::MetricFamily::counter(
                "tidegauge_icos_push_store_commit_seconds",
                "Time spent committing.",
            )
            .with(vec![], load(&stats.commit_micros) / 1e6),
        );
        for f in self.inner.durable.models.families() {
            snap.push(f);
        }
        snap.settle_exact();
        let snap = Arc::new(snap);
        if settled {
            *shared = Some((key, Arc::clone(&snap)));
        }
        Ok(snap)
    }

    fn routes(&self) -> Routes {
        IcosPush::routes(self)
    }

    /// Resumes the model metrics restored from the store; their tasks outlive a reload.
    async fn run(&self, shutdown: tidegauge_core::CancellationToken) {
        resume(&self.inner);
        shutdown.cancelled().await;
    }
}
