//! The durable store: every accepted write is committed (fsync) before it is acknowledged, and
//! concurrent writes share one commit.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::{mpsc, oneshot};

/// Records by key (ICOS metrics by base name, Pushgateway groups by grouping key).
const METRICS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("icos_metrics");

/// The store's format version, under [`FORMAT_KEY`]; absent in stores of release 0.1.0.
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const FORMAT_KEY: &str = "format";

/// Upgrades one record from the format given to the next: `(from, key, bytes)`.
pub type Upgrade<'a> = &'a dyn Fn(u64, &str, &[u8]) -> Result<Vec<u8>, String>;

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

/// Handle to the store's writer. The last handle dropped stops the writer after the writes
/// queued so far and waits for it, so the file is closed when the drop returns.
#[derive(Debug, Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    db: Arc<Database>,
    tx: Option<mpsc::UnboundedSender<Job>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Bumped by every failed commit. A job decided in an older epoch may rest on a change that
    /// never reached the disk, so the writer refuses it; the in-memory state must be reloaded
    /// from the store (and take the new epoch) before writes are accepted again.
    epoch: Arc<std::sync::atomic::AtomicU64>,
    /// Commits made, and requests they carried (how well writes are batched).
    stats: Arc<Stats>,
    /// Commits still to fail on purpose (see [`Store::fail_commits`]).
    faults: Arc<std::sync::atomic::AtomicU32>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Closing the channel ends the writer once it has committed what was queued.
        self.tx.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
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
    /// Opens (or creates) the database file in format `format`, upgrading the records of an
    /// older format one version at a time with `upgrade` (in one transaction: a store is
    /// upgraded whole or not at all), and starts its writer. A store of a newer format is an
    /// error.
    pub fn open(path: &Path, format: u64, upgrade: Upgrade<'_>) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Db(format!("{}: {e}", dir.display())))?;
        }
        if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
            tracing::warn!(path = %path.display(), "the store file is empty (truncated?); starting with an empty store");
        }
        let repaired = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&repaired);
        // Every record is also held in memory (the state): the file is read whole only at
        // start-up, so a small page cache (redb's default is 1 GiB) is all a commit needs.
        let db = Database::builder()
            .set_cache_size(64 << 10)
            .set_repair_callback(move |_| flag.store(true, std::sync::atomic::Ordering::Relaxed))
            .create(path)
            .map_err(|e| StoreError::Db(format!("{}: {e}", path.display())))?;
        if repaired.load(std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(
                path = %path.display(),
                "the store was not closed cleanly (a crash, a kill or damage) and was repaired: acknowledged writes survive a crash, but a damaged file can be rolled back to an earlier commit"
            );
        }
        let txn = db.begin_write().map_err(db_err)?;
        {
            let mut records = txn.open_table(METRICS).map_err(db_err)?;
            let mut meta = txn.open_table(META).map_err(db_err)?;
            let stored = meta.get(FORMAT_KEY).map_err(db_err)?.map(|v| v.value());
            let mut version = match stored {
                Some(v) => v,
                None if records.is_empty().map_err(db_err)? => format,
                None => 0,
            };
            if version > format {
                return Err(StoreError::Db(format!(
                    "{}: written by a newer release (store format {version}; this release reads up to {format})",
                    path.display()
                )));
            }
            let from = version;
            while version < format {
                let mut upgraded = Vec::new();
                for entry in records.iter().map_err(db_err)? {
                    let (k, v) = entry.map_err(db_err)?;
                    let key = k.value().to_owned();
                    let bytes = upgrade(version, &key, v.value()).map_err(|reason| {
                        StoreError::Corrupt {
                            key: key.clone(),
                            reason: format!("cannot upgrade from format {version}: {reason}"),
                        }
                    })?;
                    upgraded.push((key, bytes));
                }
                for (k, v) in &upgraded {
                    records.insert(k.as_str(), v.as_slice()).map_err(db_err)?;
                }
                version += 1;
            }
            if stored != Some(format) {
                meta.insert(FORMAT_KEY, format).map_err(db_err)?;
            }
            if from < format {
                tracing::info!(path = %path.display(), from, to = format, "store upgraded");
            }
        }
        txn.commit().map_err(db_err)?;
        let db = Arc::new(db);
        let (tx, rx) = mpsc::unbounded_channel();
        let writer_db = Arc::clone(&db);
        let epoch = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let writer_epoch = Arc::clone(&epoch);
        let stats = Arc::new(Stats::default());
        let writer_stats = Arc::clone(&stats);
        let faults = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let writer_faults = Arc::clone(&faults);
        let writer = std::thread::Builder::new()
            .name("icos-push-store".into())
            .spawn(move || writer(&writer_db, &writer_epoch, &writer_stats, &writer_faults, rx))
            .map_err(db_err)?;
        Ok(Self {
            shared: Arc::new(Shared {
                db,
                tx: Some(tx),
                writer: Some(writer),
                epoch,
                stats,
                faults,
            }),
        })
    }

    /// Every stored record.
    pub fn load(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let txn = self.shared.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(METRICS).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            out.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Makes the next `n` commits fail as a full disk or a failed fsync would, for tests of
    /// what the service does then.
    pub fn fail_commits(&self, n: u32) {
        self.shared
            .faults
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// The current epoch (see [`Store::submit`]).
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.shared.epoch.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Queues writes decided in `epoch`, in order; the returned receiver resolves once they are
    /// on disk. Queue while holding the lock that ordered the change, await after releasing it.
    pub fn submit_in(
        &self,
        epoch: u64,
        writes: Vec<Write>,
    ) -> oneshot::Receiver<Result<(), String>> {
        let (done, rx) = oneshot::channel();
        let sent = match &self.shared.tx {
            Some(tx) => tx.send((writes, epoch, done)).map_err(|e| e.0.2),
            None => Err(done),
        };
        if let Err(done) = sent {
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
    faults: &std::sync::atomic::AtomicU32,
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
        let injected = faults
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let result = if injected {
            Err("injected failure: no space left on device".to_owned())
        } else {
            commit(db, &jobs).map_err(|e| e.to_string())
        };
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
        let upgrade: Upgrade<'_> = &|_, _, b| Ok(b.to_vec());
        {
            let s = Store::open(&path, 1, upgrade).unwrap();
            s.write(vec![
                Write::Put("a".into(), b"1".to_vec()),
                Write::Put("b".into(), b"2".to_vec()),
            ])
            .await
            .unwrap();
            s.write(vec![Write::Delete("a".into())]).await.unwrap();
        }
        // Dropping the last handle joined the writer: the file opens again at once.
        let s = Store::open(&path, 1, upgrade).unwrap();
        assert_eq!(s.load().unwrap(), vec![("b".to_owned(), b"2".to_vec())]);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// A store without a format (as release 0.1.0 wrote them) holding one record.
    fn v0_store(path: &Path) {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(METRICS)
            .unwrap()
            .insert("k", b"v".as_slice())
            .unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn formats_upgrade_in_order_and_newer_ones_are_refused() {
        let dir = std::env::temp_dir().join(format!("tidegauge-store-fmt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.redb");
        v0_store(&path);
        let steps = std::sync::Mutex::new(Vec::new());
        let upgrade = |from: u64, key: &str, bytes: &[u8]| {
            steps.lock().unwrap().push((from, key.to_owned()));
            let mut b = bytes.to_vec();
            b.push(b'+');
            Ok(b)
        };
        drop(Store::open(&path, 2, &upgrade).unwrap());
        assert_eq!(
            *steps.lock().unwrap(),
            [(0, "k".to_owned()), (1, "k".to_owned())]
        );
        let s = Store::open(&path, 2, &upgrade).unwrap();
        assert_eq!(s.load().unwrap(), vec![("k".to_owned(), b"v++".to_vec())]);
        assert_eq!(
            steps.lock().unwrap().len(),
            2,
            "an upgraded store is not upgraded again"
        );
        drop(s);
        let e = Store::open(&path, 1, &upgrade).unwrap_err().to_string();
        assert!(e.contains("newer release"), "{e}");
        // A failing upgrade leaves the store as it was.
        let fresh = dir.join("f.redb");
        v0_store(&fresh);
        let failing = |_: u64, _: &str, _: &[u8]| Err("broken".to_owned());
        let e = Store::open(&fresh, 1, &failing).unwrap_err().to_string();
        assert!(e.contains("\"k\"") && e.contains("broken"), "{e}");
        let s = Store::open(&fresh, 1, &|_, _, b| Ok(b.to_vec())).unwrap();
        assert_eq!(s.load().unwrap(), vec![("k".to_owned(), b"v".to_vec())]);
        std::fs::remove_dir_all(&dir).ok();
    }
}
