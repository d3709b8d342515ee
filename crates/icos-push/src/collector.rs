//! The `Collector` implementation: the exposition of the pushed state.

use super::*;

#[async_trait]
impl Collector for IcosPush {
    fn name(&self) -> &str {
        NAME
    }

    /// The same `Arc` while nothing changed: the host then reuses its checks and encoding.
    async fn collect(&self, ctx: &ScrapeContext) -> Result<Arc<Snapshot>, CollectError> {
        let now = unix_seconds(ctx.now());
        let pending = {
            let mut state = lock(&self.inner.durable.state);
            let deletes = state.expire(now);
            (!deletes.is_empty()).then(|| self.inner.durable.store.submit_in(state.epoch, deletes))
        };
        if let Some(p) = pending
            && !matches!(p.await, Ok(Ok(())))
        {
            tracing::warn!(
                "expired push groups could not be removed from the store; they will be removed again after a restart"
            );
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
        if let Some((at, snap)) = shared.as_ref()
            && *at == key
        {
            return Ok(Arc::clone(snap));
        }
        let mut snap = state.registry.snapshot();
        snap.families.extend(state.groups.snapshot().families);
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
        let snap = Arc::new(snap);
        *shared = Some((key, Arc::clone(&snap)));
        Ok(snap)
    }

    fn routes(&self) -> Routes {
        IcosPush::routes(self)
    }
}
