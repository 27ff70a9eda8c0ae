//! Who may do what, on real `drakkar serve` processes with TLS (docs/api.md, "Roles"): a client
//! certificate reads and writes but cannot change membership, stop groups, move snapshots or speak Raft;
//! an admin certificate can; a certificate of another CA and a caller without a certificate are refused
//! unless the node allows anonymous clients, who then act as clients.

use std::sync::Arc;
use std::time::Duration;

use drakkar_client::pb::{self, Consistency};
use drakkar_client::{Client, ClientError, tls};
use drakkar_e2e::{Cluster, drakkar};
use drakkar_server::peer::pb as peer;
use tonic::Code;

const T: Duration = Duration::from_secs(30);

async fn bounded<F: std::future::Future<Output = ()>>(limit: Duration, f: F) {
    tokio::time::timeout(limit, f).await.expect("test exceeded its time bound");
}

fn as_cert(c: &Cluster, cert: Option<&str>) -> Client {
    let mut cfg = c.client_config_as((1..=c.nodes.len()).map(|i| c.addr(i)).collect(), cert);
    cfg.retry_for = Duration::from_secs(2);
    Client::new(cfg).expect("client")
}

/// The call was refused for want of a role, and the message names it.
fn denied<T: std::fmt::Debug>(r: Result<T, ClientError>, role: &str, what: &str) {
    let e = r.expect_err(what);
    assert_eq!(e.code(), Some(Code::PermissionDenied), "{what}: {e}");
    assert!(e.to_string().contains(&format!("{role} role")), "{what}: {e}");
}

fn metric(c: &Cluster, i: usize, line: &str) -> u64 {
    let (_, body) = c.http_get(i, "/metrics").expect("metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(line).map(|v| v.trim().parse().expect("a number")))
        .unwrap_or_else(|| panic!("no {line} in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_reads_and_writes_and_nothing_more() {
    let mut c = Cluster::new(3, 3, 1, true);
    c.start_all();
    bounded(Duration::from_secs(120), async {
        c.wait_for_leaders(T).await;
        let client = as_cert(&c, Some("client"));
        let admin = as_cert(&c, Some("admin"));
        client.put(1, "k", "v").await.expect("a client writes");
        let v = client.get(1, "k", Consistency::Linearizable).await.expect("a client reads");
        assert_eq!(v.map(|k| k.value), Some("v".into()));
        // Admin reads are open to any authenticated caller.
        let m = client.membership(1).await.expect("a client reads the membership");
        client.status(&c.addr(1)).await.expect("a client reads the status");

        denied(client.remove_replica(1, 3, m.conf_index).await, "admin", "a client removed a member");
        denied(
            client.stop_group(&c.addr(3), 1, true).await,
            "admin",
            "a client stopped a group, data removed",
        );
        denied(client.transfer_leader(1, 2).await, "admin", "a client moved the leadership");
        let start = pb::StartGroupRequest { group: 7, replica: 1, ..Default::default() };
        denied(client.start_group(&c.addr(1), start).await, "admin", "a client started a group");
        let mut sink = Vec::new();
        denied(client.export_snapshot(1, &mut sink).await, "admin", "a client exported a snapshot");
        assert!(sink.is_empty(), "snapshot bytes reached a client");
        let target = pb::ImportSnapshotTarget { group: 1, replica: 3, members: Vec::new() };
        let r = client.import_snapshot(&c.addr(3), target, std::io::Cursor::new(vec![0u8; 64]), |_| {}).await;
        denied(r, "admin", "a client imported a snapshot");

        // Raft messages: neither a client's nor an admin's certificate speaks for a node.
        for (name, who) in [("client", &client), ("admin", &admin)] {
            let ch = who.channel(&c.addr(1)).expect("channel");
            let batch = peer::RaftBatch { from: c.addr(2), ..Default::default() };
            let r =
                peer::raft_client::RaftClient::new(ch).send_messages(tokio_stream::iter(vec![batch])).await;
            let s = r.expect_err("a non-node certificate spoke Raft");
            assert_eq!(s.code(), Code::PermissionDenied, "{name}: {s:?}");
            assert!(s.message().contains("peer role"), "{name}: {}", s.message());
        }
        assert!(metric(&c, 1, "drakkar_rpc_denied_total{needed=\"peer\"}") >= 2);

        // The node keeps serving, and the admin certificate can do what the client could not.
        let mut out = Vec::new();
        admin.export_snapshot(1, &mut out).await.expect("an admin exports a snapshot");
        assert!(!out.is_empty());
        admin.transfer_leader(1, 2).await.expect("an admin moves the leadership");
        let m = admin.membership(1).await.unwrap();
        admin.remove_replica(1, 3, m.conf_index).await.expect("an admin removes a member");
        // GetMembership answers from the node it reaches, which applies the removal within moments.
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let m = admin.membership(1).await.unwrap();
            if !m.members.iter().any(|v| v.replica == 3) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "replica 3 is still a member: {m:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        client.put(1, "k2", "v2").await.expect("writes go on");
        let v = client.get(1, "k2", Consistency::Linearizable).await.unwrap();
        assert_eq!(v.map(|k| k.value), Some("v2".into()));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_are_refused_and_anonymous_clients_only_when_allowed() {
    let mut c = Cluster::new(2, 1, 1, true);
    // Node 1 requires certificates (the default); node 2 allows anonymous clients.
    c.start(1);
    c.extra.push("--allow-anonymous-clients".into());
    c.start(2);
    bounded(Duration::from_secs(90), async {
        c.wait_for_leaders(T).await;
        let quick = |cfg: drakkar_client::ClientConfig| {
            let mut cfg = cfg;
            cfg.retry_for = Duration::from_millis(300);
            cfg.request_timeout = Duration::from_secs(2);
            Client::new(cfg).unwrap()
        };
        // A caller without a certificate: refused by node 1 at the handshake.
        let anon1 = quick(c.client_config_as(vec![c.addr(1)], None));
        assert!(
            anon1.get(1, "k", Consistency::Linearizable).await.is_err(),
            "node 1 served an anonymous caller"
        );

        // A node certificate of another CA.
        let other = c.dir.path().join("other");
        let (ok, _, err) = drakkar(&["cert", "dev", "--out", other.to_str().unwrap(), "--nodes", "1"], &[]);
        assert!(ok, "{err}");
        let foreign = tls::client_config_from_files(
            &c.certs().join("ca.pem"),
            Some((&other.join("node-1.pem"), &other.join("node-1-key.pem"))),
        )
        .unwrap();
        let mut cfg = drakkar_client::ClientConfig::new([c.addr(1)]).with_tls(Arc::new(Arc::new(foreign)));
        cfg.retry_for = Duration::from_millis(300);
        let foreign = Client::new(cfg).unwrap();
        let ch = foreign.channel(&c.addr(1)).unwrap();
        let batch = peer::RaftBatch { from: c.addr(2), ..Default::default() };
        let r = peer::raft_client::RaftClient::new(ch).send_messages(tokio_stream::iter(vec![batch])).await;
        assert!(r.is_err(), "a peer of another CA spoke Raft");
        assert!(foreign.status(&c.addr(1)).await.is_err(), "a certificate of another CA was served");

        // Node 2 lets an anonymous caller act as a client: data yes (forwarded to node 1, which runs the
        // group and trusts node 2's forward), Admin changes no.
        let anon2 = quick(c.client_config_as(vec![c.addr(2)], None));
        anon2.put(1, "anon", "yes").await.expect("an allowed anonymous client writes");
        anon2.status(&c.addr(2)).await.expect("an allowed anonymous client reads the status");
        let r = anon2.stop_group(&c.addr(2), 1, true).await;
        denied(r, "admin", "an anonymous client stopped a group");
        assert!(metric(&c, 2, "drakkar_rpc_denied_total{needed=\"admin\"}") >= 1);
        // Both nodes still serve.
        let admin = as_cert(&c, Some("admin"));
        let v = admin.get(1, "anon", Consistency::Linearizable).await.unwrap();
        assert_eq!(v.map(|k| k.value), Some("yes".into()));
    })
    .await;
}
