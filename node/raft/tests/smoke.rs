//! A minimal end-to-end check of the public API: three replicas elect a leader and replicate.

use bytes::Bytes;
use drakkar_raft::{Config, EntryKind, MemStorage, Membership, Message, RawNode, ReplicaId, Role};

fn cluster(n: u64) -> Vec<RawNode<MemStorage>> {
    let m = Membership::with_voters((1..=n).map(ReplicaId));
    (1..=n)
        .map(|i| {
            let cfg = Config::new(ReplicaId(i));
            RawNode::new(cfg, MemStorage::bootstrap(m.clone())).unwrap()
        })
        .collect()
}

/// Runs every node's ready loop until no messages remain. Returns applied data per node.
fn stabilize(nodes: &mut [RawNode<MemStorage>], applied: &mut [Vec<Bytes>]) {
    loop {
        let mut msgs: Vec<Message> = Vec::new();
        for (i, n) in nodes.iter_mut().enumerate() {
            while n.has_ready() {
                let rd = n.ready().unwrap();
                msgs.extend(rd.messages.iter().cloned());
                if let Some(s) = &rd.snapshot {
                    n.storage_mut().apply_snapshot(s.clone()).unwrap();
                }
                n.storage_mut().append(&rd.entries).unwrap();
                if let Some(hs) = rd.hard_state {
                    n.storage_mut().set_hard_state(hs);
                }
                msgs.extend(rd.persisted_messages.iter().cloned());
                for e in &rd.committed_entries {
                    if e.kind == EntryKind::Normal && !e.data.is_empty() {
                        applied[i].push(e.data.clone());
                    }
                }
                n.advance(rd);
            }
        }
        if msgs.is_empty() {
            return;
        }
        for m in msgs {
            let to = m.to.0 as usize - 1;
            nodes[to].step(m).unwrap();
        }
    }
}

#[test]
fn three_replicas_elect_and_replicate() {
    let mut nodes = cluster(3);
    let mut applied = vec![Vec::new(); 3];
    nodes[0].campaign();
    stabilize(&mut nodes, &mut applied);
    assert_eq!(nodes[0].status().soft_state.role, Role::Leader);
    for i in 0..10 {
        nodes[0].propose(Bytes::from(format!("v{i}"))).unwrap();
    }
    // A follower's proposal is forwarded to the leader.
    nodes[2].propose(Bytes::from_static(b"from-3")).unwrap();
    stabilize(&mut nodes, &mut applied);
    assert_eq!(applied[0].len(), 11);
    assert_eq!(applied[0], applied[1]);
    assert_eq!(applied[0], applied[2]);
    for n in &nodes {
        assert_eq!(n.status().hard_state.commit, nodes[0].status().last_index);
    }
}

#[test]
fn single_replica_commits_after_persisting() {
    let mut nodes = cluster(1);
    let mut applied = vec![Vec::new()];
    nodes[0].campaign();
    stabilize(&mut nodes, &mut applied);
    assert_eq!(nodes[0].status().soft_state.role, Role::Leader);
    nodes[0].propose(Bytes::from_static(b"x")).unwrap();
    let rd = nodes[0].ready().unwrap();
    assert!(rd.committed_entries.is_empty(), "nothing commits before it is durable");
    nodes[0].storage_mut().append(&rd.entries).unwrap();
    nodes[0].advance(rd);
    let rd = nodes[0].ready().unwrap();
    assert_eq!(rd.committed_entries.len(), 1);
}

#[test]
fn committed_entries_wait_for_the_state_machine_to_catch_up() {
    let m = Membership::with_voters([ReplicaId(1)]);
    let mut cfg = Config::new(ReplicaId(1));
    cfg.max_applying_bytes = 100;
    let mut n = RawNode::new(cfg, MemStorage::bootstrap(m)).unwrap();
    n.campaign();
    // Persist everything but report nothing applied.
    let mut handed_out = Vec::new();
    for round in 0..6 {
        if round == 1 {
            for i in 0..10 {
                n.propose(Bytes::from(vec![b'x'; 40 + i])).unwrap();
            }
        }
        while n.has_ready() {
            let rd = n.ready().unwrap();
            n.storage_mut().append(&rd.entries).unwrap();
            if let Some(hs) = rd.hard_state {
                n.storage_mut().set_hard_state(hs);
            }
            handed_out.extend(rd.committed_entries.iter().map(|e| e.index));
            n.on_persisted(rd.number());
        }
    }
    let held_back = n.status().last_index;
    assert!(
        handed_out.last().copied().unwrap_or_default() < held_back,
        "the apply window must hold entries back"
    );
    // Applying what was handed out releases the rest.
    n.advance_apply_to(*handed_out.last().unwrap());
    let mut more = Vec::new();
    while n.has_ready() {
        let rd = n.ready().unwrap();
        more.extend(rd.committed_entries.iter().map(|e| e.index));
        let last = rd.committed_entries.last().map(|e| e.index);
        n.on_persisted(rd.number());
        if let Some(i) = last {
            n.advance_apply_to(i);
        }
    }
    assert_eq!(more.last().copied(), Some(held_back));
}
