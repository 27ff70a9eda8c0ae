//! The Raft core's hot path: a proposal replicated, committed and handed out for applying in a 3-replica
//! group in memory (propose, ready, step the appends and their responses, advance), one entry and a
//! batch of 64. `cargo bench -p drakkar-raft --bench raft`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use drakkar_raft::{Config, LogIndex, MemStorage, Membership, Message, RawNode, ReplicaId, Role};

struct Group {
    nodes: BTreeMap<ReplicaId, RawNode<MemStorage>>,
    applied: BTreeMap<ReplicaId, LogIndex>,
}

impl Group {
    fn new() -> Self {
        let m = Membership::with_voters((1..=3).map(ReplicaId));
        let nodes = (1..=3)
            .map(|i| {
                let n = RawNode::new(Config::new(ReplicaId(i)), MemStorage::bootstrap(m.clone()))
                    .expect("config");
                (ReplicaId(i), n)
            })
            .collect();
        let mut g = Group { nodes, applied: BTreeMap::new() };
        g.nodes.get_mut(&ReplicaId(1)).expect("replica 1").campaign();
        g.settle();
        assert_eq!(g.nodes[&ReplicaId(1)].status().soft_state.role, Role::Leader);
        g
    }

    /// Persists (in memory), delivers and applies until no replica has work: one full replication round.
    fn settle(&mut self) {
        loop {
            let mut msgs: Vec<Message> = Vec::new();
            for (id, n) in self.nodes.iter_mut() {
                while n.has_ready() {
                    let rd = n.ready().expect("ready");
                    msgs.extend(rd.messages.iter().cloned());
                    let s = n.storage_mut();
                    s.append(&rd.entries).expect("append");
                    if let Some(hs) = rd.hard_state {
                        s.set_hard_state(hs);
                    }
                    msgs.extend(rd.persisted_messages.iter().cloned());
                    if let Some(last) = rd.committed_entries.last() {
                        self.applied.insert(*id, last.index);
                    }
                    n.advance(rd);
                }
            }
            if msgs.is_empty() {
                return;
            }
            for m in msgs {
                if let Some(n) = self.nodes.get_mut(&m.to) {
                    let _ = n.step(m);
                }
            }
        }
    }

    /// Drops applied entries now and then so memory stays flat over millions of rounds.
    fn compact(&mut self) {
        for (id, n) in self.nodes.iter_mut() {
            let applied = self.applied.get(id).copied().unwrap_or_default();
            if applied.0 > 1_000 {
                let _ = n.storage_mut().compact(LogIndex(applied.0 - 100));
            }
        }
    }
}

fn replicate(c: &mut Criterion) {
    let mut group = c.benchmark_group("raft");
    for batch in [1usize, 64] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("propose_commit_3_replicas_{batch}x16B"), |b| {
            let mut g = Group::new();
            let payload = Bytes::from_static(b"0123456789abcdef");
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for i in 0..iters {
                    let t = Instant::now();
                    let leader = g.nodes.get_mut(&ReplicaId(1)).expect("leader");
                    if batch == 1 {
                        leader.propose(payload.clone()).expect("propose");
                    } else {
                        leader.propose_batch(vec![payload.clone(); batch]).expect("propose");
                    }
                    g.settle();
                    spent += t.elapsed();
                    if i % 4096 == 4095 {
                        g.compact();
                    }
                }
                spent
            });
        });
    }
    group.finish();
}

criterion_group!(benches, replicate);
criterion_main!(benches);
