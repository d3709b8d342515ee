//! The durable store: every accepted write is committed (fsync) before it is acknowledged, and
//! concurrent writes share one commit.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

/// ICOS metrics by base name, as JSON.
const METRICS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("icos_metrics");

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened or written.
    #[error("store: {0}")]
    Db(String),
    /// A stored record does not decode.
    #[error("store: record {key:?} is unreadable: {reason}")]
    Corrupt {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The writer task is gone (shutting down).
    #[error("store: the writer has stopped")]
    Closed,
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

/// One write: a key set to bytes, or removed.
#[derive(Debug, Clone)]
pub enum Write {
    /// Set `key` to the bytes.
    Put(String, Vec<u8>),
    /// Remove `key`.
    Delete(String),
}

/// Writes, the epoch they were decided in, and where to report.
type Job = (Vec<Write>, u64, oneshot::Sender<Result<(), String>>);

/// Handle to the store's writer.
#[derive(Debug, Clone)]
pub struct Store {
    db: Arc<Database>,
    tx: mpsc::UnboundedSender<Job>,
    /// Bumped by every failed commit. A job decided in an older epoch may rest on a change that
    /// never reached the disk, so the writer refuses it; the in-memory state must be reloaded
    /// from the store (and take the new epoch) before writes are accepted again.
    epoch: Arc<std::sync::atomic::AtomicU64>,
    /// Commits made, and requests they carried (how well writes are batched).
    stats: Arc<Stats>,
}

/// Commit counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Transactions committed.
    pub commits: std::sync::atomic::AtomicU64,
    /// Requests whose writes those transactions carried.
    pub requests: std::sync::atomic::AtomicU64,
    /// Seconds spent committing, in microseconds.
    pub commit_micros: std::sync::atomic::AtomicU64,
}

impl Store {
    /// Opens (or creates) the database file and starts its writer task.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Db(format!("{}: {e}", dir.display())))?;
        }
        let db = Database::create(path)
            .map_err(|e| StoreError::Db(format!("{}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(METRICS).map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::unbounded_channel();
        let writer_db = Arc::clone(&db);
        let epoch = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let writer_epoch = Arc::clone(&epoch);
        let stats = Arc::new(Stats::default());
        let writer_stats = Arc::clone(&stats);
        std::thread::Builder::new()
            .name("icos-push-store".into())
            .spawn(move || writer(&writer_db, &writer_epoch, &writer_stats, rx))
            .map_err(db_err)?;
        Ok(Self {
            db,
            tx,
            epoch,
            stats,
        })
    }

    /// Every stored record.
    pub fn load(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(METRICS).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            out.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// The current epoch (see [`Store::submit`]).
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Queues writes decided in `epoch`, in order; the returned receiver resolves once they are
    /// on disk. Queue while holding the lock that ordered the change, await after releasing it.
    pub fn submit_in(
        &self,
        epoch: u64,
        writes: Vec<Write>,
    ) -> oneshot::Receiver<Result<(), String>> {
        let (done, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError((_, _, done))) = self.tx.send((writes, epoch, done)) {
            let _ = done.send(Err("the store's writer has stopped".into()));
        }
        rx
    }

    /// [`Store::submit_in`] the current epoch.
    pub fn submit(&self, writes: Vec<Write>) -> oneshot::Receiver<Result<(), String>> {
        self.submit_in(self.epoch(), writes)
    }

    /// Writes and waits for the commit.
    pub async fn write(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        match self.submit(writes).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Db(e)),
            Err(_) => Err(StoreError::Closed),
        }
    }
}

/// Drains every queued job into one transaction: one fsync for a burst of writes.
fn writer(
    db: &Database,
    epoch: &std::sync::atomic::AtomicU64,
    stats: &Stats,
    mut rx: mpsc::UnboundedReceiver<Job>,
) {
    use std::sync::atomic::Ordering;
    while let Some(first) = rx.blocking_recv() {
        let mut jobs = vec![first];
        while jobs.len() < 1024 {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let current = epoch.load(Ordering::SeqCst);
        let (jobs, stale): (Vec<Job>, Vec<Job>) =
            jobs.into_iter().partition(|(_, e, _)| *e == current);
        for (_, _, done) in stale {
            let _ = done.send(Err(
                "an earlier write failed; the state is being reloaded".into()
            ));
        }
        if jobs.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        let result = commit(db, &jobs).map_err(|e| e.to_string());
        stats
            .requests
            .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        stats
            .commit_micros
            .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        // Last, and before the writers hear back: a reader that sees the new count sees the
        // other counters of this commit too (the exposition is keyed by it).
        stats.commits.fetch_add(1, Ordering::Release);
        if let Err(e) = &result {
            epoch.fetch_add(1, Ordering::SeqCst);
            tracing::error!(error = %e, writes = jobs.len(), "icos-push store commit failed");
        }
        for (_, _, done) in jobs {
            let _ = done.send(result.clone());
        }
    }
}

fn commit(db: &Database, jobs: &[Job]) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(db_err)?;
    {
        let mut table = txn.open_table(METRICS).map_err(db_err)?;
        for (writes, _, _) in jobs {
            for w in writes {
                match w {
                    Write::Put(k, v) => {
                        table.insert(k.as_str(), v.as_slice()).map_err(db_err)?;
                    }
                    Write::Delete(k) => {
                        table.remove(k.as_str()).map_err(db_err)?;
                    }
                }
            }
        }
    }
    txn.commit().map_err(db_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_survive_reopening() {
        let dir = std::env::temp_dir().join(format!("tidegauge-store-{}", std::process::id()));
        let path = dir.join("t.redb");
        {
            let s = Store::open(&path).unwrap();
            s.write(vec![
                Write::Put("a".into(), b"1".to_vec()),
                Write::Put("b".into(), b"2".to_vec()),
            ])
            .await
            .unwrap();
            s.write(vec![Write::Delete("a".into())]).await.unwrap();
        }
        // The writer thread holds the database until its channel closes; give it a moment.
        let mut reopened = None;
        for _ in 0..100 {
            match Store::open(&path) {
                Ok(s) => {
                    reopened = Some(s);
                    break;
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
        let s = reopened.expect("reopen");
        assert_eq!(s.load().unwrap(), vec![("b".to_owned(), b"2".to_vec())]);
        std::fs::remove_dir_all(&dir).ok();
    }
}
