//! A three-replica group in memory, narrated: election, replication, a crashed leader, a new leader,
//! a linearizable read. `cargo run --release -p drakkar-raft --example cluster`
//!
//! Until the `drakkar` node binary exists this is the project's "main job": it shows the core working
//! end to end with nothing but the library.

use std::collections::BTreeMap;

use bytes::Bytes;
use drakkar_raft::{
    ConfChange, Config, EntryKind, LogIndex, MemStorage, Membership, Message, RawNode, ReplicaId, Role,
};

struct Replica {
    node: RawNode<MemStorage>,
    kv: BTreeMap<String, String>,
    applied: LogIndex,
}

struct Group {
    replicas: BTreeMap<ReplicaId, Replica>,
    down: BTreeMap<ReplicaId, MemStorage>,
}

impl Group {
    fn new(n: u64) -> Self {
        let m = Membership::with_voters((1..=n).map(ReplicaId));
        let replicas = (1..=n)
            .map(|i| {
                let node = RawNode::new(Config::new(ReplicaId(i)), MemStorage::bootstrap(m.clone()))
                    .expect("valid config");
                (ReplicaId(i), Replica { node, kv: BTreeMap::new(), applied: LogIndex(0) })
            })
            .collect();
        Group { replicas, down: BTreeMap::new() }
    }

    /// Runs ready loops and delivers messages until the group is quiet.
    fn settle(&mut self) {
        loop {
            let mut msgs: Vec<Message> = Vec::new();
            for (id, r) in self.replicas.iter_mut() {
                while r.node.has_ready() {
                    let rd = r.node.ready().expect("ready");
                    if let Some(ss) = rd.soft_state
                        && ss.role == Role::Leader
                    {
                        println!(
                            "  replica {id} became leader in term {}",
                            r.node.status().hard_state.term.0
                        );
                    }
                    for rs in &rd.read_states {
                        println!(
                            "  replica {id}: read {:?} confirmed at commit index {}",
                            String::from_utf8_lossy(&rs.context),
                            rs.index
                        );
                    }
                    msgs.extend(rd.messages.iter().cloned());
                    let store = r.node.storage_mut();
                    store.append(&rd.entries).expect("append");
                    if let Some(hs) = rd.hard_state {
                        store.set_hard_state(hs);
                    }
                    msgs.extend(rd.persisted_messages.iter().cloned());
                    for e in &rd.committed_entries {
                        match e.kind {
                            EntryKind::Normal if !e.data.is_empty() => {
                                let s = String::from_utf8_lossy(&e.data).to_string();
                                if let Some((k, v)) = s.split_once('=') {
                                    r.kv.insert(k.to_string(), v.to_string());
                                }
                            }
                            EntryKind::ConfChange => {
                                if let Some(cc) = ConfChange::decode(&e.data) {
                                    let _ = r.node.apply_conf_change(&cc);
                                }
                            }
                            _ => {}
                        }
                        r.applied = e.index;
                    }
                    r.node.advance(rd);
                }
            }
            msgs.retain(|m| self.replicas.contains_key(&m.to));
            if msgs.is_empty() {
                return;
            }
            for m in msgs {
                if let Some(r) = self.replicas.get_mut(&m.to) {
                    let _ = r.node.step(m);
                }
            }
        }
    }

    fn leader(&self) -> Option<ReplicaId> {
        self.replicas.iter().find(|(_, r)| r.node.status().soft_state.role == Role::Leader).map(|(id, _)| *id)
    }

    fn tick_until_leader(&mut self) -> ReplicaId {
        for ticks in 1.. {
            for r in self.replicas.values_mut() {
                r.node.tick();
            }
            self.settle();
            if let Some(l) = self.leader() {
                println!("  (after {ticks} ticks)");
                return l;
            }
        }
        unreachable!()
    }
}

fn main() {
    println!("Starting a 3-replica group in memory (logical ticks, no clock, no network).");
    let mut g = Group::new(3);
    let leader = g.tick_until_leader();

    println!("Proposing 5 writes to leader {leader}.");
    for i in 1..=5 {
        let data = Bytes::from(format!("key{i}=value{i}"));
        g.replicas.get_mut(&leader).and_then(|r| r.node.propose(data).ok());
    }
    g.settle();
    for (id, r) in &g.replicas {
        println!("  replica {id}: applied up to {}, {} keys", r.applied, r.kv.len());
    }

    println!("Crashing leader {leader}; the others elect a new one.");
    if let Some(r) = g.replicas.remove(&leader) {
        g.down.insert(leader, r.node.storage().clone());
    }
    let new_leader = g.tick_until_leader();

    println!("Writing through a follower of leader {new_leader} (forwarded to the leader).");
    let follower = *g.replicas.keys().find(|id| **id != new_leader).expect("two replicas remain");
    g.replicas.get_mut(&follower).and_then(|r| r.node.propose(Bytes::from_static(b"key6=value6")).ok());
    g.settle();

    println!("Restarting replica {leader} from its durable log; it catches up.");
    if let Some(store) = g.down.remove(&leader) {
        let node = RawNode::new(Config::new(leader), store).expect("restart");
        g.replicas.insert(leader, Replica { node, kv: BTreeMap::new(), applied: LogIndex(0) });
    }
    for r in g.replicas.values_mut() {
        r.node.tick();
    }
    g.settle();

    println!("Linearizable read on follower {follower} (ReadIndex through the leader):");
    if let Some(r) = g.replicas.get_mut(&follower) {
        let _ = r.node.read_index(Bytes::from_static(b"read-1"));
    }
    for _ in 0..2 {
        for r in g.replicas.values_mut() {
            r.node.tick();
        }
        g.settle();
    }
    let r = &g.replicas[&follower];
    println!("  key6 = {:?} (applied up to {})", r.kv.get("key6"), r.applied);
    for (id, r) in &g.replicas {
        println!(
            "  replica {id}: applied up to {}, {} keys, role {:?}",
            r.applied,
            r.kv.len(),
            r.node.status().soft_state.role
        );
    }
}
