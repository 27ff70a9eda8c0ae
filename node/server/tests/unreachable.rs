//! Transports tell the sending NodeHost which replicas they could not reach (so its leaders probe them
//! instead of streaming entries into a broken connection): the test network (`drakkar_sim::SimNetwork`)
//! when a partition cuts a batch, the gRPC transport when a peer's connection cannot be opened.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use drakkar::transport::{MessageBatch, MessageSink, Transport};
use drakkar_raft::{GroupId, Message, MessageKind, ReplicaId, Term};
use drakkar_server::peer::{GrpcTransport, TransportConfig};
use drakkar_sim::{NetFaults, SimNetwork};

/// Records what it is told, delivers nothing.
#[derive(Default)]
struct Recorder {
    delivered: Mutex<usize>,
    unreachable: Mutex<Vec<(GroupId, ReplicaId)>>,
}

impl MessageSink for Recorder {
    fn deliver(&self, _batch: MessageBatch) {
        *self.delivered.lock().unwrap() += 1;
    }
    fn snapshot_landing(&self, _group: GroupId) -> Result<std::path::PathBuf, String> {
        Err("not in this test".into())
    }
    fn receive_snapshot(
        &self,
        _group: GroupId,
        _msg: Message,
        _file: Option<std::path::PathBuf>,
    ) -> Result<(), String> {
        Err("not in this test".into())
    }
    fn unreachable(&self, targets: Vec<(GroupId, ReplicaId)>) {
        self.unreachable.lock().unwrap().extend(targets);
    }
}

/// Heartbeats from replica 1 to replica 2 of groups 1 and 2 (twice for group 1) and to replica 3 of group 2.
fn batch(from: &str) -> MessageBatch {
    let hb = |g: u64, to: u64| {
        (GroupId(g), Message::new(MessageKind::Heartbeat, ReplicaId(1), ReplicaId(to), Term(1)))
    };
    MessageBatch {
        from: from.to_string(),
        incarnation: 7,
        messages: vec![hb(1, 2), hb(1, 2), hb(2, 2), hb(2, 3)],
        reused: Vec::new(),
    }
}

fn expected() -> Vec<(GroupId, ReplicaId)> {
    vec![(GroupId(1), ReplicaId(2)), (GroupId(2), ReplicaId(2)), (GroupId(2), ReplicaId(3))]
}

#[test]
fn a_partition_reports_the_recipients_of_cut_batches_to_the_sender() {
    let net = SimNetwork::new(1);
    let (a, b) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
    net.register("a:1", Arc::downgrade(&a) as Weak<dyn MessageSink>);
    net.register("b:1", Arc::downgrade(&b) as Weak<dyn MessageSink>);

    net.send("b:1", batch("a:1"));
    net.deliver_due(1);
    assert_eq!(*b.delivered.lock().unwrap(), 1);
    assert!(a.unreachable.lock().unwrap().is_empty(), "nothing cut yet");

    let side = |a: &str| BTreeSet::from([a.to_string()]);
    net.set_faults(NetFaults { partition: vec![side("a:1"), side("b:1")], ..NetFaults::default() });
    net.send("b:1", batch("a:1"));
    net.deliver_due(2);
    assert_eq!(*b.delivered.lock().unwrap(), 1, "the cut batch was delivered");
    assert_eq!(*a.unreachable.lock().unwrap(), expected());
    assert!(b.unreachable.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_refuses_connections_is_reported_unreachable() {
    // A port nothing listens on: every connection attempt is refused.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let t =
        GrpcTransport::new(tokio::runtime::Handle::current(), None, TransportConfig::default(), stop.clone());
    let me = Arc::new(Recorder::default());
    t.set_local(Arc::downgrade(&me) as Weak<dyn MessageSink>);

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        t.send(&dead.to_string(), batch("me:1"));
        let got: BTreeSet<_> = me.unreachable.lock().unwrap().iter().copied().collect();
        if got == expected().into_iter().collect() {
            break;
        }
        assert!(Instant::now() < deadline, "not reported within 20 s: {got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
}
