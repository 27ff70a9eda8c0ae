//! Majority quorum arithmetic.

use std::collections::{BTreeMap, BTreeSet};

use crate::types::{LogIndex, ReplicaId};

/// The outcome of an election so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// Not enough answers yet to decide.
    Pending,
    /// A majority refused.
    Lost,
    /// A majority granted.
    Won,
}

/// The number of members that form a majority of `n` (`n / 2 + 1`; 0 for an empty set).
pub fn majority(n: usize) -> usize {
    if n == 0 { 0 } else { n / 2 + 1 }
}

/// The largest index that a majority of `voters` has acknowledged, where `acked` gives each voter's
/// acknowledged index (absent voters count as 0). An empty voter set commits nothing.
pub fn committed_index(
    voters: &BTreeSet<ReplicaId>,
    acked: impl Fn(ReplicaId) -> Option<LogIndex>,
) -> LogIndex {
    if voters.is_empty() {
        return LogIndex(0);
    }
    let mut idx: Vec<LogIndex> = voters.iter().map(|&v| acked(v).unwrap_or_default()).collect();
    idx.sort_unstable_by(|a, b| b.cmp(a));
    idx[majority(idx.len()) - 1]
}

/// Tallies `votes` (granted or refused, by voter) over `voters`. Votes from non-voters are ignored.
pub fn vote_result(voters: &BTreeSet<ReplicaId>, votes: &BTreeMap<ReplicaId, bool>) -> VoteResult {
    let q = majority(voters.len());
    let (mut yes, mut no) = (0, 0);
    for v in voters {
        match votes.get(v) {
            Some(true) => yes += 1,
            Some(false) => no += 1,
            None => {}
        }
    }
    if voters.is_empty() || yes >= q {
        VoteResult::Won
    } else if no > voters.len() - q {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The committed index is acknowledged by a majority, and no larger index is.
        #[test]
        fn committed_index_is_the_majority_floor(acks in proptest::collection::vec(0u64..50, 1..9)) {
            let voters: BTreeSet<ReplicaId> = (1..=acks.len() as u64).map(ReplicaId).collect();
            let get = |id: ReplicaId| Some(LogIndex(acks[(id.0 - 1) as usize]));
            let ci = committed_index(&voters, get);
            let at_least = |i: LogIndex| acks.iter().filter(|&&a| LogIndex(a) >= i).count();
            prop_assert!(at_least(ci) >= majority(acks.len()));
            prop_assert!(at_least(ci.next()) < majority(acks.len()));
        }

        /// Won and Lost are exclusive and final: adding more votes never flips a decided result.
        #[test]
        fn vote_results_are_consistent(n in 1usize..8, votes in proptest::collection::vec(any::<Option<bool>>(), 8)) {
            let voters: BTreeSet<ReplicaId> = (1..=n as u64).map(ReplicaId).collect();
            let mut map = BTreeMap::new();
            let mut decided = VoteResult::Pending;
            for (i, v) in votes.iter().take(n).enumerate() {
                if let Some(v) = v { map.insert(ReplicaId(i as u64 + 1), *v); }
                let r = vote_result(&voters, &map);
                if decided != VoteResult::Pending { prop_assert_eq!(r, decided); }
                decided = r;
                let yes = map.values().filter(|&&v| v).count();
                let no = map.values().filter(|&&v| !v).count();
                prop_assert_eq!(r == VoteResult::Won, yes >= majority(n));
                prop_assert_eq!(r == VoteResult::Lost, no > n - majority(n));
            }
        }
    }

    #[test]
    fn examples() {
        let v: BTreeSet<ReplicaId> = [1, 2, 3].map(ReplicaId).into();
        assert_eq!(committed_index(&v, |id| Some(LogIndex(id.0 * 10))), LogIndex(20));
        assert_eq!(committed_index(&v, |id| (id.0 == 1).then_some(LogIndex(5))), LogIndex(0));
        assert_eq!(committed_index(&BTreeSet::new(), |_| None), LogIndex(0));
        assert_eq!(majority(4), 3);
    }
}
