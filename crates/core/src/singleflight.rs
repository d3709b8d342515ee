//! Sharing one in-flight computation among concurrent callers.

use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

type Flight<T> = Shared<BoxFuture<'static, Option<T>>>;
type Slot<T> = Arc<Mutex<Option<(u64, Flight<T>)>>>;

/// At most one computation in flight at a time; concurrent callers await the same result.
///
/// The computation runs as a spawned task, so it completes (and its result can be remembered)
/// even when every caller has given up waiting; callers bound their wait themselves.
#[derive(Debug)]
pub struct SingleFlight<T: Clone + Send + Sync + 'static> {
    slot: Slot<T>,
    next_id: std::sync::atomic::AtomicU64,
}

impl<T: Clone + Send + Sync + 'static> Default for SingleFlight<T> {
    fn default() -> Self {
        Self {
            slot: Arc::new(Mutex::new(None)),
            next_id: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> SingleFlight<T> {
    /// A new, idle single-flight.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a computation is running.
    pub fn in_flight(&self) -> bool {
        self.slot.lock().map(|s| s.is_some()).unwrap_or(false)
    }

    /// Joins the computation in flight, or starts `make()` when none is. The returned future
    /// resolves to `None` only if the computation panicked.
    pub fn run<F>(&self, make: F) -> Flight<T>
    where
        F: FnOnce() -> BoxFuture<'static, T>,
    {
        let mut slot = match self.slot.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some((_, fut)) = slot.as_ref() {
            return fut.clone();
        }
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let work = make();
        let slot_ref = Arc::clone(&self.slot);
        let handle = tokio::spawn(async move {
            let out = work.await;
            clear(&slot_ref, id);
            out
        });
        let slot_ref = Arc::clone(&self.slot);
        let fut = async move {
            let out = handle.await.ok();
            if out.is_none() {
                // The task panicked before clearing its slot.
                clear(&slot_ref, id);
            }
            out
        }
        .boxed()
        .shared();
        *slot = Some((id, fut.clone()));
        fut
    }
}

fn clear<T>(slot: &Mutex<Option<(u64, T)>>, id: u64) {
    let mut slot = match slot.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    if matches!(slot.as_ref(), Some((current, _)) if *current == id) {
        *slot = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let sf = Arc::new(SingleFlight::<usize>::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let mut waits = Vec::new();
        for _ in 0..10 {
            let runs = Arc::clone(&runs);
            waits.push(sf.run(move || {
                async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    runs.fetch_add(1, Ordering::SeqCst) + 1
                }
                .boxed()
            }));
        }
        for w in waits {
            assert_eq!(w.await, Some(1));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(!sf.in_flight());
        // A later call starts a new run.
        let again = sf.run(|| async { 7 }.boxed()).await;
        assert_eq!(again, Some(7));
    }

    #[tokio::test]
    async fn panic_becomes_none_and_frees_the_slot() {
        let sf = SingleFlight::<u8>::new();
        let out = sf.run(|| async { panic!("boom") }.boxed()).await;
        assert_eq!(out, None);
        assert!(!sf.in_flight());
    }
}
