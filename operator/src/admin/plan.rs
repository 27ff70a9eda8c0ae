//! Membership changes as a pure function: given one group's membership (as a node reports it) and what
//! each reachable node runs, the next single step towards the desired voters.
//!
//! Invariants the planner keeps:
//! - one step per group per call, and at most one non-voter catching up per group (as etcd's learners);
//! - a member is identified by its address (the pod's stable DNS name): replica ids are never reused, so
//!   a pod that comes back after a scale-down joins under a fresh id;
//! - data is only deleted (`Clear`) on a node whose replica of the group is known to be removed from it:
//!   a membership read from a lagging replica may miss a recent addition, and must not make the operator
//!   destroy a live replica;
//! - the leader is never removed: leadership is handed to a caught-up desired voter first;
//! - a member whose node lost its data (the group refused its replica id as reused) is removed, then its
//!   node is cleared and added back under a fresh id like any new node: a wiped volume heals itself;
//! - changes carry the configuration index they were planned from, so a stale view is refused by the
//!   group instead of undoing a newer change.

use std::collections::{BTreeMap, BTreeSet};

/// How far (in log entries) a non-voter may trail the leader's applied index and still be promoted.
pub const CATCH_UP_LAG: u64 = 64;

/// The role of a member in a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewRole {
    /// Votes and holds data.
    Voter,
    /// Holds data, does not vote (catching up before a promotion).
    NonVoter,
    /// Votes, holds no data.
    Witness,
}

/// One member of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberView {
    /// Replica id.
    pub replica: u64,
    /// The node's advertised `host:port`.
    pub address: String,
    /// Role.
    pub role: ViewRole,
}

/// One group's membership.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupView {
    /// Group id.
    pub group: u64,
    /// Index of the last applied membership change (the optimistic lock of every change).
    pub conf_index: u64,
    /// The leader's replica id (0: none known).
    pub leader: u64,
    /// Members.
    pub members: Vec<MemberView>,
    /// Ids removed from the group, never reusable.
    pub removed: Vec<u64>,
}

/// One replica a node holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// Its replica id.
    pub replica: u64,
    /// The index applied to it (0 when `lost`).
    pub applied: u64,
    /// The group refused it as reused after data loss: it no longer runs and never will again.
    pub lost: bool,
}

impl Held {
    /// A running replica.
    pub fn running(replica: u64, applied: u64) -> Held {
        Held { replica, applied, lost: false }
    }

    /// A replica refused as reused after data loss.
    pub fn lost(replica: u64) -> Held {
        Held { replica, applied: 0, lost: true }
    }
}

/// What a reachable node holds: group -> its replica.
pub type NodeGroups = BTreeMap<u64, Held>;

/// The next change of one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Hand leadership to `to` (the leader is about to be removed).
    TransferLeader {
        /// The desired voter that takes over.
        to: u64,
    },
    /// Remove a member whose node lost its data (refused as reused): its node is added back under a new id.
    RemoveLost {
        /// Its replica id.
        replica: u64,
        /// Its address.
        address: String,
    },
    /// Remove a member whose pod is no longer wanted.
    Remove {
        /// Its replica id.
        replica: u64,
        /// Its address.
        address: String,
    },
    /// Delete the node's stale replica of the group (its id was removed from the group).
    Clear {
        /// The node.
        address: String,
        /// The removed replica id it still runs.
        replica: u64,
    },
    /// Start a member's replica on its node, which does not run it.
    Start {
        /// The member's replica id.
        replica: u64,
        /// The node.
        address: String,
    },
    /// Add a wanted node as a non-voter under a fresh id (then start it there).
    Add {
        /// The fresh replica id.
        replica: u64,
        /// The node.
        address: String,
    },
    /// Promote a caught-up non-voter to voter.
    Promote {
        /// Its replica id.
        replica: u64,
        /// Its address.
        address: String,
    },
}

/// The next step that brings `view` closer to `voters` (desired voter addresses, in preference order),
/// knowing what the reachable nodes run (`nodes`, by address). None: converged, or nothing can be done
/// safely now (no leader, the node to act on unreachable, a non-voter still catching up).
pub fn next_step(view: &GroupView, nodes: &BTreeMap<String, NodeGroups>, voters: &[String]) -> Option<Step> {
    if view.leader == 0 {
        return None;
    }
    let g = view.group;
    let wanted: BTreeSet<&str> = voters.iter().map(String::as_str).collect();
    let applied = |m: &MemberView| {
        nodes.get(&m.address)?.get(&g).filter(|h| h.replica == m.replica && !h.lost).map(|h| h.applied)
    };
    let leader_applied = view.members.iter().find(|m| m.replica == view.leader).and_then(applied);
    let caught_up = |m: &MemberView| match (applied(m), leader_applied) {
        (Some(a), Some(l)) => a.saturating_add(CATCH_UP_LAG) >= l,
        _ => false,
    };

    // 1. Members no longer wanted, newest first; the leader hands over before it goes.
    let mut unwanted: Vec<&MemberView> =
        view.members.iter().filter(|m| !wanted.contains(m.address.as_str())).collect();
    unwanted.sort_by_key(|m| std::cmp::Reverse(m.replica));
    if let Some(m) = unwanted.first() {
        if m.replica != view.leader {
            return Some(Step::Remove { replica: m.replica, address: m.address.clone() });
        }
        let to = view.members.iter().find(|c| {
            c.role == ViewRole::Voter
                && c.replica != view.leader
                && wanted.contains(c.address.as_str())
                && caught_up(c)
        });
        return to.map(|c| Step::TransferLeader { to: c.replica });
    }

    // 2. Wanted members whose node does not run their replica: lost ones go, missing ones are started.
    for m in view.members.iter().filter(|m| m.role != ViewRole::Witness) {
        let Some(runs) = nodes.get(&m.address) else { continue };
        match runs.get(&g) {
            None => return Some(Step::Start { replica: m.replica, address: m.address.clone() }),
            Some(h) if h.replica == m.replica && h.lost => {
                return Some(Step::RemoveLost { replica: m.replica, address: m.address.clone() });
            }
            Some(h) if h.replica != m.replica && view.removed.contains(&h.replica) => {
                return Some(Step::Clear { address: m.address.clone(), replica: h.replica });
            }
            Some(_) => {}
        }
    }

    // 3. Caught-up non-voters are promoted; while one is catching up, nothing is added.
    let learners: Vec<&MemberView> = view.members.iter().filter(|m| m.role == ViewRole::NonVoter).collect();
    if let Some(m) = learners.iter().find(|m| caught_up(m)) {
        return Some(Step::Promote { replica: m.replica, address: m.address.clone() });
    }
    if !learners.is_empty() {
        return None;
    }

    // 4. Wanted nodes that are not members join, in preference order.
    let next_id =
        view.members.iter().map(|m| m.replica).chain(view.removed.iter().copied()).max().unwrap_or(0) + 1;
    for address in voters {
        if view.members.iter().any(|m| &m.address == address) {
            continue;
        }
        let Some(runs) = nodes.get(address) else { continue };
        return match runs.get(&g) {
            None => Some(Step::Add { replica: next_id, address: address.clone() }),
            Some(h) if view.removed.contains(&h.replica) => {
                Some(Step::Clear { address: address.clone(), replica: h.replica })
            }
            // A replica this view does not know: the view may be behind a recent addition. Wait.
            Some(_) => None,
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(replica: u64, role: ViewRole) -> MemberView {
        MemberView { replica, address: format!("n{replica}:7000"), role }
    }

    fn addr(i: u64) -> String {
        format!("n{i}:7000")
    }

    /// Group 1 with voters 1..=n, leader 1, conf index 10.
    fn voters(n: u64) -> GroupView {
        GroupView {
            group: 1,
            conf_index: 10,
            leader: 1,
            members: (1..=n).map(|i| member(i, ViewRole::Voter)).collect(),
            removed: vec![],
        }
    }

    /// Nodes 1..=n running replica i of group 1 at `applied`.
    fn running(n: u64, applied: u64) -> BTreeMap<String, NodeGroups> {
        (1..=n).map(|i| (addr(i), NodeGroups::from([(1, Held::running(i, applied))]))).collect()
    }

    fn want(ids: &[u64]) -> Vec<String> {
        ids.iter().map(|&i| addr(i)).collect()
    }

    #[test]
    fn converged_or_leaderless_groups_need_nothing() {
        assert_eq!(next_step(&voters(3), &running(3, 100), &want(&[1, 2, 3])), None);
        let mut v = voters(3);
        v.leader = 0;
        assert_eq!(next_step(&v, &running(3, 100), &want(&[1, 2, 3, 4])), None);
    }

    #[test]
    fn scale_up_adds_a_non_voter_under_a_fresh_id_then_promotes_it_once_caught_up() {
        let mut nodes = running(3, 100);
        nodes.insert(addr(4), NodeGroups::new());
        let mut v = voters(3);
        v.removed = vec![7];
        assert_eq!(
            next_step(&v, &nodes, &want(&[1, 2, 3, 4])),
            Some(Step::Add { replica: 8, address: addr(4) })
        );
        // Added, but its node has not started it yet (the start failed): start it.
        v.members.push(MemberView { replica: 8, address: addr(4), role: ViewRole::NonVoter });
        assert_eq!(
            next_step(&v, &nodes, &want(&[1, 2, 3, 4])),
            Some(Step::Start { replica: 8, address: addr(4) })
        );
        // Running, far behind: wait; nothing else is added meanwhile.
        nodes.insert(addr(4), NodeGroups::from([(1, Held::running(8, 10))]));
        nodes.insert(addr(5), NodeGroups::new());
        assert_eq!(next_step(&v, &nodes, &want(&[1, 2, 3, 4, 5])), None);
        // Caught up: promoted.
        nodes.insert(addr(4), NodeGroups::from([(1, Held::running(8, 100 - CATCH_UP_LAG))]));
        assert_eq!(
            next_step(&v, &nodes, &want(&[1, 2, 3, 4, 5])),
            Some(Step::Promote { replica: 8, address: addr(4) })
        );
        // Then the next node is added.
        v.members[3].role = ViewRole::Voter;
        assert_eq!(
            next_step(&v, &nodes, &want(&[1, 2, 3, 4, 5])),
            Some(Step::Add { replica: 9, address: addr(5) })
        );
    }

    #[test]
    fn unreachable_nodes_are_left_alone() {
        // Node 4 is wanted but not reachable: nothing to do; member 3's node unreachable: not restarted.
        let nodes: BTreeMap<String, NodeGroups> = running(2, 100);
        assert_eq!(next_step(&voters(3), &nodes, &want(&[1, 2, 3, 4])), None);
    }

    #[test]
    fn scale_down_removes_the_newest_unwanted_member_and_moves_leadership_first() {
        let nodes = running(5, 100);
        assert_eq!(
            next_step(&voters(5), &nodes, &want(&[1, 2, 3])),
            Some(Step::Remove { replica: 5, address: addr(5) })
        );
        let mut v = voters(5);
        v.leader = 5;
        assert_eq!(next_step(&v, &nodes, &want(&[1, 2, 3])), Some(Step::TransferLeader { to: 1 }));
        // No caught-up wanted voter to take over: wait rather than remove the leader.
        let lagging: BTreeMap<String, NodeGroups> = (1..=5)
            .map(|i| (addr(i), NodeGroups::from([(1, Held::running(i, if i == 5 { 1000 } else { 10 }))])))
            .collect();
        assert_eq!(next_step(&v, &lagging, &want(&[1, 2, 3])), None);
    }

    #[test]
    fn a_returning_pod_is_cleared_only_when_its_old_replica_was_removed() {
        // Node 4 still runs replica 4, which was removed: its data is cleared, then it is added anew.
        let mut nodes = running(3, 100);
        nodes.insert(addr(4), NodeGroups::from([(1, Held::running(4, 50))]));
        let mut v = voters(3);
        v.removed = vec![4];
        assert_eq!(
            next_step(&v, &nodes, &want(&[1, 2, 3, 4])),
            Some(Step::Clear { address: addr(4), replica: 4 })
        );
        // A replica the view does not know (the view may lag a recent addition): never cleared.
        v.removed.clear();
        assert_eq!(next_step(&v, &nodes, &want(&[1, 2, 3, 4])), None);
        // A member whose node runs another, removed replica of the group.
        let mut v = voters(3);
        v.members.push(MemberView { replica: 6, address: addr(4), role: ViewRole::NonVoter });
        v.removed = vec![4];
        assert_eq!(
            next_step(&v, &nodes, &want(&[1, 2, 3, 4])),
            Some(Step::Clear { address: addr(4), replica: 4 })
        );
    }

    #[test]
    fn a_wiped_member_is_removed_cleared_and_added_back_under_a_fresh_id() {
        // Node 2 lost its data: the group refused its replica 2 as reused.
        let mut nodes = running(3, 100);
        nodes.insert(addr(2), NodeGroups::from([(1, Held::lost(2))]));
        let mut v = voters(3);
        assert_eq!(
            next_step(&v, &nodes, &want(&[1, 2, 3])),
            Some(Step::RemoveLost { replica: 2, address: addr(2) })
        );
        // Removed: the node still holds the refused replica, which is now safe to delete.
        v.members.retain(|m| m.replica != 2);
        v.removed = vec![2];
        assert_eq!(
            next_step(&v, &nodes, &want(&[1, 2, 3])),
            Some(Step::Clear { address: addr(2), replica: 2 })
        );
        // Cleared: it joins under a fresh id, never its old one.
        nodes.insert(addr(2), NodeGroups::new());
        assert_eq!(
            next_step(&v, &nodes, &want(&[1, 2, 3])),
            Some(Step::Add { replica: 4, address: addr(2) })
        );
        // A lost replica never counts as caught up, so leadership is never handed to it.
        let mut v = voters(3);
        v.leader = 3;
        nodes.insert(addr(2), NodeGroups::from([(1, Held::lost(2))]));
        nodes.insert(addr(1), NodeGroups::from([(1, Held::running(1, 0))]));
        assert_eq!(next_step(&v, &nodes, &want(&[1, 2])), None);
    }
}
