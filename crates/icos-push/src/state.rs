//! The pushed state and its store: what outlives a reload, the lock that orders writes, and
//! the resync after a failed commit.

use super::*;

/// Everything pushed: ICOS metrics and Pushgateway groups share one lock, so their writes reach
/// the store in the order they were decided.
pub(crate) struct Pushed {
    pub(crate) registry: Registry,
    pub(crate) groups: Groups,
    pub(crate) expired: u64,
    /// The store epoch this state is consistent with (see [`Store::submit_in`]).
    pub(crate) epoch: u64,
    /// Bumped by every change, so an unchanged exposition can be handed out again.
    pub(crate) generation: u64,
}

impl Pushed {
    /// Removes the groups expired at `now`, counts them and marks the state changed; returns
    /// the store deletions to queue.
    pub(crate) fn expire(&mut self, now: f64) -> Vec<Write> {
        let expired = self.groups.expire(now);
        if !expired.is_empty() {
            self.expired += expired.len() as u64;
            self.generation += 1;
        }
        expired
            .iter()
            .map(|g| {
                tracing::info!(group = ?g.key, "push group expired");
                Write::Delete(g.store_key())
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) limits: Limits,
    pub(crate) max_body: usize,
    pub(crate) max_group_series: usize,
    pub(crate) max_groups: usize,
    pub(crate) push_ttl: Option<std::time::Duration>,
    pub(crate) admin_api: bool,
}

/// What an exposition was built from: the state's generation and the store's commit count.
pub(crate) type ExpositionKey = (u64, u64);

/// What outlives a reload: the store and the state restored from it.
pub(crate) struct Durable {
    pub(crate) state: Mutex<Pushed>,
    pub(crate) store: Store,
    /// The exposition of one generation of the state and commit count.
    pub(crate) shared: Mutex<Option<(ExpositionKey, Arc<Snapshot>)>>,
    pub(crate) started: std::time::SystemTime,
    /// The data directory, canonical: a reload naming the same one keeps this store open (a
    /// database file can be opened once).
    pub(crate) dir: PathBuf,
}

pub(crate) struct Inner {
    pub(crate) durable: Arc<Durable>,
    pub(crate) settings: Settings,
    pub(crate) services: HostServices,
}

impl Durable {
    pub(crate) fn open(data_dir: &std::path::Path) -> Result<Self, ConfigError> {
        let path = data_dir.join("icos-push.redb");
        let store = Store::open(&path, records::FORMAT, &records::upgrade)
            .map_err(|e| ConfigError(format!("data_dir {}: {e}", data_dir.display())))?;
        let (metrics, groups) =
            load_state(&store).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        tracing::info!(path = %path.display(), metrics = metrics.len(), groups = groups.len(), "icos-push store opened");
        Ok(Self {
            state: Mutex::new(Pushed {
                registry: Registry::restore(metrics),
                groups: Groups::restore(groups),
                expired: 0,
                epoch: store.epoch(),
                generation: 0,
            }),
            store,
            shared: Mutex::new(None),
            started: std::time::SystemTime::now(),
            dir: std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf()),
        })
    }
}

/// Every record of the store, decoded.
pub(crate) fn load_state(store: &Store) -> Result<(Vec<Metric>, Vec<Group>), String> {
    let mut metrics = Vec::new();
    let mut groups = Vec::new();
    for (key, bytes) in store.load().map_err(|e| e.to_string())? {
        let unreadable = |e: String| format!("stored record {key:?} is unreadable: {e}");
        if records::is_group(&key) {
            groups.push(records::decode::<Group>(&bytes).map_err(unreadable)?);
        } else {
            metrics.push(records::decode::<Metric>(&bytes).map_err(unreadable)?);
        }
    }
    Ok((metrics, groups))
}

/// After a failed commit the in-memory state may hold changes that never reached the disk, and
/// later changes may rest on them: throw it away and reload what the store holds.
pub(crate) fn resync(inner: &Inner) {
    let mut state = lock(&inner.durable.state);
    let epoch = inner.durable.store.epoch();
    if state.epoch == epoch {
        return;
    }
    match load_state(&inner.durable.store) {
        Ok((metrics, groups)) => {
            state.registry = Registry::restore(metrics);
            state.groups = Groups::restore(groups);
            state.epoch = epoch;
            state.generation += 1;
            tracing::warn!("icos-push state reloaded from the store after a failed write");
        }
        Err(e) => {
            tracing::error!(error = %e, "icos-push cannot reload its store; writes are refused until a restart");
        }
    }
}
