//! Group commit: concurrent [`crate::LogDb::save`] calls share one write and one fdatasync.
//!
//! A caller that finds no writer becomes the leader: it writes its batch together with every batch queued so
//! far. A caller that arrives while a leader is writing queues a copy of its batch and waits. When the leader
//! is done it answers the batches it took and steps down; one waiting caller then leads the queue. So a caller
//! waits for at most one write before its own, and each batch is still its own frame: atomic on its own, and
//! rejected on its own if invalid.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use crate::batch::WriteBatch;
use crate::error::{Error, Result};

#[derive(Default)]
struct Queue {
    /// True while a caller is writing. Invariant: a ticket is in `waiting`, taken by the current leader, or
    /// answered in `results`.
    leader: bool,
    waiting: Vec<(u64, WriteBatch)>,
    next_ticket: u64,
    results: HashMap<u64, Result<()>>,
}

/// The queue of batches waiting for the current leader.
#[derive(Default)]
pub(crate) struct GroupCommit {
    queue: Mutex<Queue>,
    done: Condvar,
}

/// Leadership: answers the queued batches it took and steps down when dropped, even if the write panicked.
struct Lead<'a> {
    gc: &'a GroupCommit,
    tickets: Vec<u64>,
    results: Vec<Result<()>>,
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        let mut q = self.gc.lock();
        let mut results = std::mem::take(&mut self.results).into_iter();
        for t in &self.tickets {
            let r =
                results.next().unwrap_or_else(|| Err(Error::Poisoned("the writing thread panicked".into())));
            q.results.insert(*t, r);
        }
        q.leader = false;
        self.gc.done.notify_all();
    }
}

impl GroupCommit {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores `batch` through `write`, which receives every batch of one group commit and returns one
    /// result per batch, in order.
    pub fn save(
        &self,
        batch: &WriteBatch,
        write: impl FnOnce(&[&WriteBatch]) -> Vec<Result<()>>,
    ) -> Result<()> {
        let mut q = self.lock();
        if !q.leader {
            q.leader = true;
            let queued = std::mem::take(&mut q.waiting);
            drop(q);
            let mut lead =
                Lead { gc: self, tickets: queued.iter().map(|(t, _)| *t).collect(), results: Vec::new() };
            let mut all: Vec<&WriteBatch> = Vec::with_capacity(1 + queued.len());
            all.push(batch);
            all.extend(queued.iter().map(|(_, b)| b));
            let mut results = write(&all).into_iter();
            let mine =
                results.next().unwrap_or_else(|| Err(Error::Poisoned("no result for the batch".into())));
            lead.results = results.collect();
            return mine;
        }
        let ticket = q.next_ticket;
        q.next_ticket += 1;
        q.waiting.push((ticket, batch.clone()));
        loop {
            q = self.done.wait(q).unwrap_or_else(PoisonError::into_inner);
            if let Some(r) = q.results.remove(&ticket) {
                return r;
            }
            if !q.leader {
                break;
            }
        }
        // No leader, and our batch is still queued: lead the queue.
        q.leader = true;
        let queued = std::mem::take(&mut q.waiting);
        drop(q);
        let lead = Lead { gc: self, tickets: queued.iter().map(|(t, _)| *t).collect(), results: Vec::new() };
        let all: Vec<&WriteBatch> = queued.iter().map(|(_, b)| b).collect();
        let results = write(&all);
        let mut lead = lead;
        lead.results = results;
        drop(lead);
        self.lock()
            .results
            .remove(&ticket)
            .unwrap_or_else(|| Err(Error::Poisoned("no result for the batch".into())))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use drakkar_raft::{GroupId, HardState};

    use super::*;

    /// Concurrent callers are grouped, every caller gets its own batch's answer.
    #[test]
    fn concurrent_callers_share_writes_and_get_their_own_results() {
        let gc = Arc::new(GroupCommit::default());
        let writes = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let (gc, writes) = (gc.clone(), writes.clone());
                std::thread::spawn(move || {
                    for i in 0..50u64 {
                        let mut b = WriteBatch::new();
                        b.set_hard_state(GroupId(t * 1000 + i), HardState::default());
                        let r = gc.save(&b, |all| {
                            writes.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(1));
                            // Odd group ids are "rejected": each batch must get its own answer.
                            all.iter()
                                .map(|b| match b.ops[0].0.0 % 2 {
                                    0 => Ok(()),
                                    _ => Err(Error::InvalidOptions(format!("{}", b.ops[0].0.0))),
                                })
                                .collect()
                        });
                        match r {
                            Ok(()) => assert_eq!(i % 2, 0),
                            Err(Error::InvalidOptions(s)) => assert_eq!(s, format!("{}", t * 1000 + i)),
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let writes = writes.load(Ordering::Relaxed);
        assert!(writes < 200, "4 x 50 saves in {writes} writes");
    }
}
