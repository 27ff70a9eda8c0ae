//! Client-side bookkeeping of a session: series ids handed out and answered.
//!
//! Invariant: every series id `<= responded_to` has been answered (or abandoned by the client, which then
//! never retries it); `answered` holds the answered ids above `responded_to`.

use std::collections::BTreeSet;

use crate::pb::SessionRef;

/// The client's view of one open session.
#[derive(Debug)]
pub struct SessionState {
    client_id: u64,
    next_series: u64,
    responded_to: u64,
    answered: BTreeSet<u64>,
}

impl SessionState {
    /// A session just opened with `client_id`.
    pub fn new(client_id: u64) -> Self {
        SessionState { client_id, next_series: 1, responded_to: 0, answered: BTreeSet::new() }
    }

    /// The session id.
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// A new write's position. Retries of that write reuse the returned value unchanged.
    pub fn begin(&mut self) -> SessionRef {
        let series = self.next_series;
        self.next_series += 1;
        SessionRef { client_id: self.client_id, series, responded_to: self.responded_to }
    }

    /// The write `series` got its answer (or was abandoned): the group may forget its result.
    pub fn complete(&mut self, series: u64) {
        if series <= self.responded_to {
            return;
        }
        self.answered.insert(series);
        while self.answered.remove(&(self.responded_to + 1)) {
            self.responded_to += 1;
        }
    }

    /// Every series id up to this one has been answered.
    pub fn responded_to(&self) -> u64 {
        self.responded_to
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responded_to_advances_over_contiguous_answers_only() {
        let mut s = SessionState::new(7);
        let a = s.begin();
        let b = s.begin();
        let c = s.begin();
        assert_eq!((a.series, b.series, c.series), (1, 2, 3));
        assert_eq!(a.responded_to, 0);
        s.complete(2);
        assert_eq!(s.responded_to(), 0, "1 is still in flight");
        s.complete(1);
        assert_eq!(s.responded_to(), 2);
        let d = s.begin();
        assert_eq!((d.series, d.responded_to), (4, 2));
        s.complete(3);
        s.complete(3);
        s.complete(4);
        assert_eq!(s.responded_to(), 4);
        assert!(s.answered.is_empty());
    }
}
