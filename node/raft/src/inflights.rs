//! The window of append messages in flight to one follower.

use std::collections::VecDeque;

use crate::types::LogIndex;

/// Appends sent but not yet acknowledged, oldest first, each as (last index carried, bytes carried).
///
/// Invariants: indices are strictly increasing; `bytes` is the sum of the sizes in `buf`;
/// `buf.len() <= cap`.
#[derive(Clone, Debug)]
pub struct Inflights {
    buf: VecDeque<(LogIndex, u64)>,
    cap: usize,
    max_bytes: u64,
    bytes: u64,
}

impl Inflights {
    /// A window of at most `cap` messages and (when non-zero) `max_bytes` bytes.
    pub fn new(cap: usize, max_bytes: u64) -> Self {
        Inflights { buf: VecDeque::new(), cap, max_bytes, bytes: 0 }
    }

    /// Records a message carrying entries up to `last` of total size `bytes`.
    pub fn add(&mut self, last: LogIndex, bytes: u64) {
        debug_assert!(self.buf.back().is_none_or(|&(l, _)| l < last), "inflight indices must grow");
        self.buf.push_back((last, bytes));
        self.bytes += bytes;
    }

    /// Frees every message whose entries are all at or below `to` (acknowledged).
    pub fn free_le(&mut self, to: LogIndex) {
        while let Some(&(last, bytes)) = self.buf.front() {
            if last > to {
                break;
            }
            self.bytes -= bytes;
            self.buf.pop_front();
        }
    }

    /// True when no more messages may be sent.
    pub fn full(&self) -> bool {
        self.buf.len() >= self.cap || (self.max_bytes != 0 && self.bytes >= self.max_bytes)
    }

    /// Messages in flight.
    pub fn count(&self) -> usize {
        self.buf.len()
    }

    /// Forgets everything.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against a model: the window holds exactly the unacknowledged messages, and `full` tracks the caps.
        #[test]
        fn matches_model(ops in proptest::collection::vec((any::<bool>(), 1u64..5, 0u64..100), 1..200),
                         cap in 1usize..10, max_bytes in 0u64..300) {
            let mut w = Inflights::new(cap, max_bytes);
            let mut model: Vec<(u64, u64)> = Vec::new();
            let mut last = 0u64;
            for (add, step, size) in ops {
                if add {
                    if w.full() { continue; }
                    last += step;
                    w.add(LogIndex(last), size);
                    model.push((last, size));
                } else {
                    let to = last.saturating_sub(step);
                    w.free_le(LogIndex(to));
                    model.retain(|&(l, _)| l > to);
                }
                let bytes: u64 = model.iter().map(|m| m.1).sum();
                prop_assert_eq!(w.count(), model.len());
                prop_assert_eq!(w.full(), model.len() >= cap || (max_bytes != 0 && bytes >= max_bytes));
                prop_assert!(w.count() <= cap);
            }
            w.reset();
            prop_assert!(!w.full() && w.count() == 0);
        }
    }
}
