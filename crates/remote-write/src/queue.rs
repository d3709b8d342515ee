//! The durable queue: one file per request, written before it counts as queued and removed only
//! once the receiver has answered for it, sent oldest first.
//!
//! A request is written to `<seq>.tmp`, synced, renamed to `<seq>.req` and the directory synced,
//! so a crash leaves either the whole request or nothing (a stray `.tmp` is removed at open).
//! The directory is locked, so two processes never share a queue.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tidegauge_core::lock;

const MAGIC: &[u8; 5] = b"TGRW\x01";
const HEADER: usize = MAGIC.len() + 8 + 8;

/// One request ready to send: the snappy-compressed `WriteRequest`, its sample count and its
/// newest timestamp.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The request body.
    pub body: Vec<u8>,
    /// Samples it carries.
    pub samples: u64,
    /// Newest sample timestamp in it, milliseconds since the epoch.
    pub max_ts: i64,
}

/// The oldest request with its body, or the entry whose file could not be read (removed).
pub type Front = Result<(Entry, Vec<u8>), (Entry, io::Error)>;

/// A queued request, by its sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Sequence number: the order requests are sent in.
    pub seq: u64,
    /// Size on disk.
    pub bytes: u64,
    /// Samples it carries.
    pub samples: u64,
    /// Newest sample timestamp in it, milliseconds since the epoch.
    pub max_ts: i64,
}

/// What making room cost: the oldest requests dropped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// Requests dropped.
    pub requests: u64,
    /// Samples they carried.
    pub samples: u64,
}

/// What the queue holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Requests.
    pub requests: u64,
    /// Samples.
    pub samples: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// Newest sample timestamp queued, milliseconds since the epoch (0 when empty).
    pub max_ts: i64,
}

#[derive(Debug)]
struct Inner {
    entries: VecDeque<Entry>,
    bytes: u64,
    samples: u64,
    next: u64,
    max_bytes: u64,
    /// The request being sent: making room never drops it.
    in_flight: Option<u64>,
}

/// The on-disk queue of one remote-write destination.
#[derive(Debug)]
pub struct Queue {
    dir: PathBuf,
    inner: Mutex<Inner>,
    _lock: File,
}

/// What opening found besides the queued requests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// Requests whose files were unreadable or not ours, removed.
    pub corrupt: u64,
}

fn path(dir: &Path, seq: u64, ext: &str) -> PathBuf {
    dir.join(format!("{seq:020}.{ext}"))
}

/// Removes a file the queue does not keep; false (logged) when that fails (a directory of that
/// name, say), so the entry is skipped rather than stopping the queue from opening.
fn remove_or_warn(p: &Path) -> bool {
    match fs::remove_file(p) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(file = %p.display(), error = %e, "remote write: cannot remove an entry of the queue directory; skipped");
            false
        }
    }
}

fn read_header(p: &Path) -> io::Result<(u64, i64, u64)> {
    let mut f = File::open(p)?;
    let len = f.metadata()?.len();
    let mut h = [0u8; HEADER];
    f.read_exact(&mut h)?;
    if &h[..MAGIC.len()] != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a queued request",
        ));
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&h[5..13]);
    let samples = u64::from_le_bytes(n);
    n.copy_from_slice(&h[13..21]);
    Ok((samples, i64::from_le_bytes(n), len))
}

impl Queue {
    /// Opens (creating it if needed) and locks the queue in `dir`.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<(Self, Opened)> {
        fs::create_dir_all(dir)?;
        let lock_file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?;
        lock_file.try_lock().map_err(|_| {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{} is in use by another process", dir.display()),
            )
        })?;
        let mut opened = Opened::default();
        let mut found = Vec::new();
        let mut next = 0u64;
        for e in fs::read_dir(dir)? {
            let p = e?.path();
            let (Some(stem), Some(ext)) = (
                p.file_stem().and_then(|s| s.to_str()),
                p.extension().and_then(|s| s.to_str()),
            ) else {
                continue;
            };
            // Only names this queue writes: 20 digits. `5.req` and `+5.req` would parse as the
            // same number as `00000000000000000005.req`.
            if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(seq) = stem.parse::<u64>() else {
                continue;
            };
            // New requests are numbered past every name present, kept or not.
            next = next.max(seq.saturating_add(1));
            let header = match ext {
                // A request whose write did not finish was never queued.
                "tmp" => {
                    remove_or_warn(&p);
                    continue;
                }
                "req" if seq < u64::MAX => read_header(&p),
                "req" => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "sequence number out of range",
                )),
                _ => continue,
            };
            match header {
                Ok((samples, max_ts, bytes)) => found.push(Entry {
                    seq,
                    bytes,
                    samples,
                    max_ts,
                }),
                Err(e) => {
                    tracing::warn!(file = %p.display(), error = %e, "remote write: removing an unreadable queued request");
                    if remove_or_warn(&p) {
                        opened.corrupt += 1;
                    }
                }
            }
        }
        found.sort_by_key(|e| e.seq);
        let inner = Inner {
            bytes: found.iter().fold(0, |n, e| n.saturating_add(e.bytes)),
            samples: found.iter().fold(0, |n, e| n.saturating_add(e.samples)),
            next,
            entries: found.into(),
            max_bytes,
            in_flight: None,
        };
        Ok((
            Self {
                dir: dir.to_owned(),
                inner: Mutex::new(inner),
                _lock: lock_file,
            },
            opened,
        ))
    }

    /// The queue's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sets the size limit (a reload may change it); applies at the next push.
    pub fn set_max_bytes(&self, max: u64) {
        lock(&self.inner).max_bytes = max;
    }

    /// Writes `batch` durably and queues it, dropping the oldest requests (never the one being
    /// sent) while the queue would exceed its limit. A batch larger than the limit on its own is
    /// dropped itself.
    pub fn push(&self, batch: &Batch) -> io::Result<Dropped> {
        let size = (HEADER + batch.body.len()) as u64;
        let mut dropped = Dropped::default();
        let seq = {
            let mut q = lock(&self.inner);
            if size > q.max_bytes {
                return Ok(Dropped {
                    requests: 1,
                    samples: batch.samples,
                });
            }
            while q.bytes.saturating_add(size) > q.max_bytes {
                let victim = q.entries.iter().position(|e| Some(e.seq) != q.in_flight);
                let Some(i) = victim else { break };
                let Some(e) = q.entries.remove(i) else { break };
                q.bytes = q.bytes.saturating_sub(e.bytes);
                q.samples = q.samples.saturating_sub(e.samples);
                dropped.requests += 1;
                dropped.samples = dropped.samples.saturating_add(e.samples);
                if let Err(err) = fs::remove_file(path(&self.dir, e.seq, "req")) {
                    tracing::warn!(error = %err, "remote write: cannot remove a dropped request");
                }
            }
            let seq = q.next;
            q.next = q.next.saturating_add(1);
            seq
        };
        let tmp = path(&self.dir, seq, "tmp");
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            let mut header = Vec::with_capacity(HEADER);
            header.extend_from_slice(MAGIC);
            header.extend_from_slice(&batch.samples.to_le_bytes());
            header.extend_from_slice(&batch.max_ts.to_le_bytes());
            f.write_all(&header)?;
            f.write_all(&batch.body)?;
            f.sync_all()?;
            fs::rename(&tmp, path(&self.dir, seq, "req"))?;
            File::open(&self.dir)?.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let mut q = lock(&self.inner);
        // Sequence numbers are taken in order but files may land out of it; keep the deque
        // sorted so the oldest is always sent first.
        let at = q.entries.partition_point(|e| e.seq < seq);
        q.entries.insert(
            at,
            Entry {
                seq,
                bytes: size,
                samples: batch.samples,
                max_ts: batch.max_ts,
            },
        );
        q.bytes = q.bytes.saturating_add(size);
        q.samples = q.samples.saturating_add(batch.samples);
        Ok(dropped)
    }

    /// The oldest request and its body, marked as being sent. A request whose file cannot be
    /// read is removed and returned as `Err` with its entry, so it is counted.
    pub fn front(&self) -> Option<Front> {
        let (entry, max) = {
            let mut q = lock(&self.inner);
            let e = *q.entries.front()?;
            q.in_flight = Some(e.seq);
            (e, q.max_bytes)
        };
        let read = || -> io::Result<Vec<u8>> {
            // No request this queue wrote is larger than its limit; a file that is (put there
            // by hand) is not read into memory.
            if entry.bytes > max {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "larger than queue_max_bytes",
                ));
            }
            let mut f = File::open(path(&self.dir, entry.seq, "req"))?;
            let mut buf = Vec::with_capacity(entry.bytes.min(1 << 20) as usize);
            f.read_to_end(&mut buf)?;
            if buf.len() < HEADER || &buf[..MAGIC.len()] != MAGIC {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "not a queued request",
                ));
            }
            Ok(buf.split_off(HEADER))
        };
        Some(match read() {
            Ok(body) => Ok((entry, body)),
            Err(e) => {
                self.remove(entry.seq);
                Err((entry, e))
            }
        })
    }

    /// Removes a request the receiver has answered for (or that was dropped); false when it
    /// was no longer queued.
    pub fn remove(&self, seq: u64) -> bool {
        let mut q = lock(&self.inner);
        if q.in_flight == Some(seq) {
            q.in_flight = None;
        }
        let Some(i) = q.entries.iter().position(|e| e.seq == seq) else {
            return false;
        };
        if let Some(e) = q.entries.remove(i) {
            q.bytes = q.bytes.saturating_sub(e.bytes);
            q.samples = q.samples.saturating_sub(e.samples);
        }
        drop(q);
        if let Err(e) = fs::remove_file(path(&self.dir, seq, "req"))
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(error = %e, "remote write: cannot remove a sent request");
        }
        true
    }

    /// What the queue holds now.
    pub fn pending(&self) -> Pending {
        let q = lock(&self.inner);
        Pending {
            requests: q.entries.len() as u64,
            samples: q.samples,
            bytes: q.bytes,
            max_ts: q.entries.iter().map(|e| e.max_ts).max().unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn batch(n: u8, samples: u64) -> Batch {
        Batch {
            body: vec![n; 1000],
            samples,
            max_ts: i64::from(n),
        }
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tg-rwq-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn survives_reopening_in_order() {
        let d = dir("reopen");
        {
            let (q, _) = Queue::open(&d, 1 << 20).unwrap();
            for n in 1..=3 {
                q.push(&batch(n, 10)).unwrap();
            }
            let Some(Ok((e, body))) = q.front() else {
                panic!()
            };
            assert_eq!((e.max_ts, body[0]), (1, 1));
            assert!(q.remove(e.seq));
        }
        // A write cut short by a crash.
        fs::write(d.join("00000000000000000009.tmp"), b"TGRW").unwrap();
        let (q, opened) = Queue::open(&d, 1 << 20).unwrap();
        assert_eq!(opened.corrupt, 0);
        assert!(!d.join("00000000000000000009.tmp").exists());
        let p = q.pending();
        assert_eq!((p.requests, p.samples, p.max_ts), (2, 20, 3));
        let Some(Ok((e, body))) = q.front() else {
            panic!()
        };
        assert_eq!(body, vec![2; 1000]);
        q.remove(e.seq);
        q.push(&batch(4, 1)).unwrap();
        let order: Vec<u8> = std::iter::from_fn(|| {
            let (e, b) = q.front()?.ok()?;
            q.remove(e.seq);
            Some(b[0])
        })
        .collect();
        assert_eq!(order, [3, 4]);
    }

    #[test]
    fn a_second_process_is_refused() {
        let d = dir("lock");
        let (_q, _) = Queue::open(&d, 1 << 20).unwrap();
        let e = Queue::open(&d, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("in use"), "{e}");
    }

    #[test]
    fn full_queue_drops_the_oldest_but_not_the_one_in_flight() {
        let d = dir("full");
        let (q, _) = Queue::open(&d, 3 * (HEADER as u64 + 1000)).unwrap();
        for n in 1..=3 {
            assert_eq!(q.push(&batch(n, 5)).unwrap(), Dropped::default());
        }
        let Some(Ok((sending, _))) = q.front() else {
            panic!()
        };
        let dropped = q.push(&batch(4, 5)).unwrap();
        assert_eq!(
            dropped,
            Dropped {
                requests: 1,
                samples: 5
            }
        );
        assert!(q.remove(sending.seq));
        let rest: Vec<u8> = std::iter::from_fn(|| {
            let (e, b) = q.front()?.ok()?;
            q.remove(e.seq);
            Some(b[0])
        })
        .collect();
        assert_eq!(rest, [3, 4]);
        // Larger than the whole queue: dropped itself.
        let huge = Batch {
            body: vec![0; 4000],
            samples: 7,
            max_ts: 9,
        };
        assert_eq!(
            q.push(&huge).unwrap(),
            Dropped {
                requests: 1,
                samples: 7
            }
        );
        assert_eq!(q.pending().requests, 0);
    }

    #[test]
    fn names_it_did_not_write_are_left_alone_and_odd_entries_do_not_stop_it() {
        let d = dir("names");
        fs::create_dir_all(&d).unwrap();
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&(1u64 << 63).to_le_bytes());
        header.extend_from_slice(&5i64.to_le_bytes());
        for name in [
            "5.req",
            "+5.req",
            "00000000000000000005.req",
            "00000000000000000006.req",
        ] {
            fs::write(d.join(name), &header).unwrap();
        }
        fs::write(d.join("18446744073709551615.req"), &header).unwrap();
        fs::create_dir_all(d.join("00000000000000000007.req")).unwrap();
        let (q, opened) = Queue::open(&d, 1 << 20).unwrap();
        // The out-of-range sequence number is removed; the directory is skipped.
        assert_eq!(opened.corrupt, 1);
        assert!(d.join("5.req").exists() && d.join("+5.req").exists());
        let p = q.pending();
        assert_eq!((p.requests, p.samples), (2, u64::MAX));
        // Claimed sizes beyond the limit are never read into memory.
        let big = d.join("00000000000000000005.req");
        fs::File::options()
            .write(true)
            .open(&big)
            .unwrap()
            .set_len(1 << 40)
            .unwrap();
        drop(q);
        let (q, _) = Queue::open(&d, 1 << 20).unwrap();
        let Some(Err((e, _))) = q.front() else {
            panic!()
        };
        assert_eq!(e.seq, 5);
        q.push(&batch(1, 1)).unwrap();
    }

    #[test]
    fn unreadable_files_are_removed_and_counted() {
        let d = dir("corrupt");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("00000000000000000001.req"), b"garbage").unwrap();
        let (q, opened) = Queue::open(&d, 1 << 20).unwrap();
        assert_eq!(opened.corrupt, 1);
        assert_eq!(q.pending().requests, 0);
    }
}
