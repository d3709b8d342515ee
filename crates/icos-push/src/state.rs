//! The pushed state and its store: what outlives a reload, the lock that orders writes, and
//! the resync after a failed commit.

use super::*;
use std::collections::{HashMap, VecDeque};

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
    /// Records changed in memory whose commit has not been confirmed, by store key: each
    /// pending change's sequence number with the record's value before it, oldest first. The
    /// front is the last committed value, which the exposition shows; as commits are confirmed
    /// (in order), the value before the oldest unconfirmed change takes its place.
    pub(crate) pending: HashMap<String, VecDeque<(u64, Before)>>,
    /// Last sequence number handed out by [`Pushed::begin`].
    pub(crate) seq: u64,
}

/// A record's committed value, kept while a change to it is not committed yet.
#[derive(Debug, Clone)]
pub(crate) enum Before {
    Group(tidegauge_core::Labels, Option<Group>),
    Metric(String, Option<Metric>),
}

impl Pushed {
    /// The state restored from the store, all of it committed.
    pub(crate) fn restored(metrics: Vec<Metric>, groups: Vec<Group>, epoch: u64) -> Self {
        Self {
            registry: Registry::restore(metrics),
            groups: Groups::restore(groups),
            expired: 0,
            epoch,
            generation: 0,
            pending: HashMap::new(),
            seq: 0,
        }
    }

    /// A sequence number for the changes about to be submitted together.
    pub(crate) fn begin(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Notes, before it changes under `seq`, the group of `key` as it is now.
    pub(crate) fn note_group(&mut self, key: &tidegauge_core::Labels, seq: u64) {
        let before = Before::Group(key.clone(), self.groups.get(key).cloned());
        self.note(pushgateway::store_key(key), before, seq);
    }

    /// Notes the value of a record about to change under `seq` (the first note of a `seq`
    /// holds the value before all of its changes).
    pub(crate) fn note(&mut self, store_key: String, before: Before, seq: u64) {
        let changes = self.pending.entry(store_key).or_default();
        if changes.back().is_none_or(|(s, _)| *s != seq) {
            changes.push_back((seq, before));
        }
    }

    /// The changes up to `seq` are on disk (the writer commits in order).
    pub(crate) fn settle(&mut self, seq: u64) {
        self.pending.retain(|_, changes| {
            while changes.front().is_some_and(|(s, _)| *s <= seq) {
                changes.pop_front();
            }
            !changes.is_empty()
        });
    }

    /// The committed state: the state itself when nothing is pending, else a copy with the
    /// pending records at their committed values.
    pub(crate) fn committed(
        &self,
    ) -> (std::borrow::Cow<'_, Registry>, std::borrow::Cow<'_, Groups>) {
        use std::borrow::Cow;
        if self.pending.is_empty() {
            return (Cow::Borrowed(&self.registry), Cow::Borrowed(&self.groups));
        }
        let mut registry = self.registry.clone();
        let mut groups = self.groups.clone();
        for (_, before) in self.pending.values().filter_map(VecDeque::front) {
            match before {
                Before::Metric(name, m) => registry.revert(name, m.clone()),
                Before::Group(_, Some(g)) => groups.put(g.clone()),
                Before::Group(key, None) => {
                    groups.remove(key);
                }
            }
        }
        (Cow::Owned(registry), Cow::Owned(groups))
    }

    /// Removes the groups expired at `now`, counts them and marks the state changed; returns
    /// the store deletions to queue under `seq`.
    pub(crate) fn expire(&mut self, now: f64, seq: u64) -> Vec<Write> {
        let expired = self.groups.expire(now);
        if !expired.is_empty() {
            self.expired += expired.len() as u64;
            self.generation += 1;
        }
        expired
            .into_iter()
            .map(|g| {
                tracing::info!(group = ?g.key, "push group expired");
                let key = g.store_key();
                self.note(key.clone(), Before::Group(g.key.clone(), Some(g)), seq);
                Write::Delete(key)
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
    /// Model metrics: definitions, trained models, their tasks.
    pub(crate) models: ModelState,
}

pub(crate) struct Inner {
    pub(crate) durable: Arc<Durable>,
    pub(crate) settings: Settings,
    pub(crate) models: Arc<ModelSettings>,
    pub(crate) services: HostServices,
}

impl Durable {
    /// Waits for the commit carrying change `seq` and settles it. The wait is a task of its
    /// own, so a change whose request is dropped while it waits (a client that hangs up, a
    /// model task stopped mid-cycle) is settled all the same: a committed change never stays
    /// hidden behind the value before it.
    pub(crate) async fn settled(
        self: &Arc<Self>,
        seq: u64,
        pending: tokio::sync::oneshot::Receiver<Result<(), String>>,
    ) -> Result<(), String> {
        let durable = Arc::clone(self);
        tokio::spawn(async move {
            let result = pending
                .await
                .unwrap_or_else(|_| Err("the store's writer has stopped".to_owned()));
            if result.is_ok() {
                lock(&durable.state).settle(seq);
            }
            result
        })
        .await
        .unwrap_or_else(|e| Err(format!("waiting for the commit failed: {e}")))
    }

    pub(crate) fn open(data_dir: &std::path::Path) -> Result<Self, ConfigError> {
        // The database library panics on some damaged files: a damaged store is an error naming
        // the file (exit 2 at start-up, a refused reload later), never a crash.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Self::open_unguarded(data_dir)))
            .unwrap_or_else(|_| {
                Err(ConfigError(format!(
                    "{}: the store file is damaged (the database library failed reading it); restore it from a backup or move it away",
                    data_dir.join("icos-push.redb").display()
                )))
            })
    }

    fn open_unguarded(data_dir: &std::path::Path) -> Result<Self, ConfigError> {
        let path = data_dir.join("icos-push.redb");
        let store = Store::open(&path, records::FORMAT, &records::upgrade)
            .map_err(|e| ConfigError(format!("data_dir {}: {e}", data_dir.display())))?;
        let (metrics, groups) =
            load_state(&store).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        let (defs, trained) =
            load_models(&store).map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        tracing::info!(path = %path.display(), metrics = metrics.len(), groups = groups.len(), model_metrics = defs.len(), trained_models = trained.len(), "icos-push store opened");
        Ok(Self {
            state: Mutex::new(Pushed::restored(metrics, groups, store.epoch())),
            store,
            shared: Mutex::new(None),
            started: std::time::SystemTime::now(),
            dir: std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf()),
            models: ModelState::restored(defs, trained),
        })
    }
}

/// The pushed records of the store (metrics and groups), decoded.
pub(crate) fn load_state(store: &Store) -> Result<(Vec<Metric>, Vec<Group>), String> {
    let mut metrics = Vec::new();
    let mut groups = Vec::new();
    for (key, bytes) in store.load().map_err(|e| e.to_string())? {
        let unreadable = |e: String| format!("stored record {key:?} is unreadable: {e}");
        match records::kind(&key) {
            records::Kind::Group => {
                groups.push(records::decode::<Group>(&bytes).map_err(unreadable)?)
            }
            records::Kind::Metric => {
                metrics.push(records::decode::<Metric>(&bytes).map_err(unreadable)?)
            }
            records::Kind::Definition | records::Kind::Trained => {}
        }
    }
    Ok((metrics, groups))
}

/// The model records of the store: definitions and trained models.
pub(crate) fn load_models(
    store: &Store,
) -> Result<(Vec<models::Definition>, Vec<models::TrainedModel>), String> {
    let mut defs = Vec::new();
    let mut trained = Vec::new();
    for (key, bytes) in store.load().map_err(|e| e.to_string())? {
        let unreadable = |e: String| format!("stored record {key:?} is unreadable: {e}");
        match records::kind(&key) {
            records::Kind::Definition => defs.push(records::decode(&bytes).map_err(unreadable)?),
            records::Kind::Trained => trained.push(records::decode(&bytes).map_err(unreadable)?),
            records::Kind::Group | records::Kind::Metric => {}
        }
    }
    Ok((defs, trained))
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
            state.pending.clear();
            state.epoch = epoch;
            state.generation += 1;
            tracing::warn!("icos-push state reloaded from the store after a failed write");
        }
        Err(e) => {
            tracing::error!(error = %e, "icos-push cannot reload its store; writes are refused until a restart");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(job: &str, value: f64) -> Group {
        let key = vec![("job".to_owned(), job.to_owned())];
        let mut f = tidegauge_core::MetricFamily::gauge("g", "");
        f.push(key.clone(), value);
        Group {
            key,
            families: vec![f],
            push_time: 1.0,
            failure_time: 0.0,
            expires: None,
        }
    }

    fn served(state: &Pushed) -> Vec<String> {
        let (_, groups) = state.committed();
        let snap = groups.snapshot();
        let text = tidegauge_core::encode::encode_text(&[Arc::new(snap)]);
        text.lines()
            .filter(|l| l.starts_with("g{"))
            .map(str::to_owned)
            .collect()
    }

    /// What a scrape sees is what is on disk: a change shows once its commit is confirmed, and
    /// while a later change to the same group is pending, the group is served as the last
    /// confirmed commit left it (never older: scrapes then mix states that never coexisted).
    #[test]
    fn only_committed_changes_are_exposed() {
        let mut state = Pushed::restored(Vec::new(), vec![group("a", 1.0)], 0);
        assert_eq!(served(&state), ["g{job=\"a\"} 1"]);
        let first = state.begin();
        state.note_group(&group("a", 0.0).key, first);
        state.groups.put(group("a", 2.0));
        state.note_group(&group("b", 0.0).key, first);
        state.groups.put(group("b", 5.0));
        assert_eq!(served(&state), ["g{job=\"a\"} 1"], "nothing committed yet");
        let second = state.begin();
        state.note_group(&group("a", 0.0).key, second);
        state.groups.put(group("a", 3.0));
        state.settle(first);
        assert_eq!(
            served(&state),
            ["g{job=\"a\"} 2", "g{job=\"b\"} 5"],
            "a's first change is committed, its second still pending: a is served at 2"
        );
        state.settle(second);
        assert_eq!(served(&state), ["g{job=\"a\"} 3", "g{job=\"b\"} 5"]);
        // A pending removal keeps the group until it is committed.
        let third = state.begin();
        state.note_group(&group("b", 0.0).key, third);
        state.groups.remove(&group("b", 0.0).key);
        assert_eq!(served(&state).len(), 2);
        state.settle(third);
        assert_eq!(served(&state), ["g{job=\"a\"} 3"]);
    }
}
