//! TLS refusals (plaintext, wrong CA, missing client certificate, a client certificate speaking Raft)
//! and bad input answered with the right gRPC codes while the node keeps serving.

use std::sync::Arc;
use std::time::Duration;

use drakkar_client::pb::{self, Consistency};
use drakkar_client::{Client, ClientConfig, tls};
use drakkar_e2e::{Cluster, drakkar};
use drakkar_server::peer::pb as peer;
use tonic::Code;

fn code<T: std::fmt::Debug>(r: Result<T, drakkar_client::ClientError>) -> Option<Code> {
    r.unwrap_err().code()
}

const T: Duration = Duration::from_secs(30);

async fn bounded<F: std::future::Future<Output = ()>>(limit: Duration, f: F) {
    tokio::time::timeout(limit, f).await.expect("test exceeded its time bound");
}

fn quick(mut cfg: ClientConfig) -> Client {
    cfg.retry_for = Duration::from_millis(200);
    cfg.request_timeout = Duration::from_secs(2);
    Client::new(cfg).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_wrong_ca_and_certless_clients_are_refused() {
    let mut c = Cluster::new(1, 1, 1, true);
    c.start_all();
    bounded(Duration::from_secs(60), async {
        let certs = c.certs();
        let with_cert = {
            let cfg = tls::client_config_from_files(
                &certs.join("ca.pem"),
                Some((&certs.join("client.pem"), &certs.join("client-key.pem"))),
            )
            .unwrap();
            let mut cc = ClientConfig::new([c.addr(1)]).with_tls(Arc::new(Arc::new(cfg)));
            cc.retry_for = T;
            Client::new(cc).unwrap()
        };
        with_cert.put(1, "k", "v").await.expect("a client with a certificate signed by the CA is served");

        // Plaintext against a TLS node.
        let plain = quick(ClientConfig::new([c.addr(1)]));
        assert!(plain.get(1, "k", Consistency::Linearizable).await.is_err(), "plaintext client served");

        // A client trusting another CA refuses the node's certificate.
        let other = c.dir.path().join("other-ca");
        let (ok, _, err) = drakkar(&["cert", "ca", "--out", other.to_str().unwrap()], &[]);
        assert!(ok, "{err}");
        let wrong = tls::client_config_from_files(&other.join("ca.pem"), None).unwrap();
        let wrong = quick(ClientConfig::new([c.addr(1)]).with_tls(Arc::new(Arc::new(wrong))));
        assert!(wrong.get(1, "k", Consistency::Linearizable).await.is_err(), "wrong-CA client served");

        // The node requires client certificates: a client without one is refused.
        let certless = tls::client_config_from_files(&certs.join("ca.pem"), None).unwrap();
        let certless = quick(ClientConfig::new([c.addr(1)]).with_tls(Arc::new(Arc::new(certless))));
        assert!(certless.get(1, "k", Consistency::Linearizable).await.is_err(), "certless client served");

        // A client certificate cannot speak Raft.
        let ch = with_cert.channel(&c.addr(1)).unwrap();
        let batch = peer::RaftBatch { from: c.addr(1), ..Default::default() };
        let r = peer::raft_client::RaftClient::new(ch).send_messages(tokio_stream::iter(vec![batch])).await;
        let code = r.expect_err("a client certificate spoke Raft").code();
        assert!(matches!(code, Code::PermissionDenied | Code::Unauthenticated), "{code:?}");

        // And the node still serves.
        let v = with_cert.get(1, "k", Consistency::Linearizable).await.unwrap();
        assert_eq!(v.map(|k| k.value), Some("v".into()));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_right_codes_and_the_node_keeps_serving() {
    let mut c = Cluster::new(3, 3, 1, false);
    c.start_all();
    bounded(Duration::from_secs(60), async {
        c.wait_for_leaders(T).await;
        let client = c.client();

        // A key over 64 KiB.
        let big_key = vec![b'k'; 64 * 1024 + 1];
        assert_eq!(code(client.put(1, big_key, "v").await), Some(Code::InvalidArgument));
        // A scan without a range, a compare-and-swap without an expectation.
        let ch = client.channel(&c.addr(1)).unwrap();
        let mut kv = pb::kv_client::KvClient::new(ch.clone());
        let r = kv.scan(pb::ScanRequest { group: 1, ..Default::default() }).await;
        assert_eq!(r.unwrap_err().code(), Code::InvalidArgument);
        let r = kv
            .compare_and_swap(pb::CompareAndSwapRequest { group: 1, key: "a".into(), ..Default::default() })
            .await;
        assert_eq!(r.unwrap_err().code(), Code::InvalidArgument);
        // An unknown consistency value.
        let r = kv.get(pb::GetRequest { group: 1, key: "a".into(), consistency: 77 }).await;
        assert_eq!(r.unwrap_err().code(), Code::InvalidArgument);
        // A query the state machine cannot decode.
        let r = pb::state_machine_client::StateMachineClient::new(ch.clone())
            .read(pb::ReadRequest { group: 1, query: vec![0xff, 0, 1].into(), consistency: 0 })
            .await;
        assert_eq!(r.unwrap_err().code(), Code::InvalidArgument);
        // A group nobody runs.
        assert_eq!(code(client.get(99, "a", Consistency::Linearizable).await), Some(Code::NotFound));
        // A stale configuration index.
        let m = client.membership(1).await.unwrap();
        assert_eq!(code(client.remove_replica(1, 3, m.conf_index + 7).await), Some(Code::FailedPrecondition));
        // A session that does not exist.
        let r = pb::session_client::SessionClient::new(ch.clone())
            .propose_in_session(pb::ProposeInSessionRequest {
                group: 1,
                session: Some(pb::SessionRef { client_id: 12345, series: 1, responded_to: 0 }),
                command: "x".into(),
            })
            .await;
        assert_eq!(r.unwrap_err().code(), Code::FailedPrecondition);
        // A message over the request size limit (40 MiB).
        let huge = vec![0u8; 41 << 20];
        let r = kv.put(pb::PutRequest { group: 1, key: "h".into(), value: huge.into(), session: None }).await;
        let huge_code = r.unwrap_err().code();
        assert!(
            matches!(huge_code, Code::ResourceExhausted | Code::OutOfRange | Code::Internal),
            "{huge_code:?}"
        );

        // Health: live at once, ready (caught up) soon.
        let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
        let check = |service: &str| tonic_health::pb::HealthCheckRequest { service: service.into() };
        let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
        assert_eq!(health.check(check("")).await.unwrap().into_inner().status, serving);
        let deadline = tokio::time::Instant::now() + T;
        while health.check(check("drakkar.v1.Kv")).await.unwrap().into_inner().status != serving {
            assert!(tokio::time::Instant::now() < deadline, "never ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Reflection lists the services.
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = ServerReflectionClient::new(ch.clone())
            .server_reflection_info(tokio_stream::iter(vec![req]))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            answers.message().await.unwrap().unwrap().message_response
        else {
            panic!("not a service list");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for s in [
            "drakkar.v1.Kv",
            "drakkar.v1.StateMachine",
            "drakkar.v1.Session",
            "drakkar.v1.Admin",
            "drakkar.v1.Raft",
            "grpc.health.v1.Health",
        ] {
            assert!(names.iter().any(|n| n == s), "{s} missing from {names:?}");
        }

        // The cluster still serves, and every bad request left no trace.
        client.put(1, "after", "ok").await.unwrap();
        let v = client.get(1, "after", Consistency::Linearizable).await.unwrap();
        assert_eq!(v.map(|k| k.value), Some("ok".into()));
        let all =
            client.scan(1, drakkar_client::prefix(""), 0, true, Consistency::Linearizable).await.unwrap();
        let keys: Vec<_> = all.items.iter().map(|i| i.key.clone()).collect();
        assert_eq!(keys, vec![bytes::Bytes::from("after")]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificate_files_are_picked_up_without_a_restart() {
    let mut c = Cluster::new(1, 1, 1, true);
    c.start_all();
    bounded(Duration::from_secs(60), async {
        let certs = c.certs();
        // A client of the PKI in `dir`: its CA, its client certificate.
        let trusting = |dir: &std::path::Path| {
            let identity = (dir.join("client.pem"), dir.join("client-key.pem"));
            let cfg =
                tls::client_config_from_files(&dir.join("ca.pem"), Some((&identity.0, &identity.1))).unwrap();
            let mut cc = ClientConfig::new([c.addr(1)]).with_tls(Arc::new(Arc::new(cfg)));
            cc.retry_for = T;
            cc.request_timeout = Duration::from_secs(2);
            Client::new(cc).unwrap()
        };
        let old_pki = c.dir.path().join("old");
        std::fs::create_dir(&old_pki).unwrap();
        for f in ["ca.pem", "client.pem", "client-key.pem"] {
            std::fs::copy(certs.join(f), old_pki.join(f)).unwrap();
        }
        trusting(&old_pki).put(1, "k", "v").await.expect("served with the first certificate");

        // cert-manager style rotation: a new CA and a new node certificate written over the old files.
        let fresh = c.dir.path().join("fresh");
        let (ok, _, err) = drakkar(&["cert", "dev", "--out", fresh.to_str().unwrap(), "--nodes", "1"], &[]);
        assert!(ok, "{err}");
        for f in ["node-1-key.pem", "node-1.pem", "ca.pem"] {
            let tmp = certs.join(format!("{f}.tmp"));
            std::fs::copy(fresh.join(f), &tmp).unwrap();
            std::fs::rename(&tmp, certs.join(f)).unwrap();
        }
        // New connections get the new certificate: a client trusting only the new CA is served, and one
        // trusting only the old CA is refused, all without a restart.
        let new_client = trusting(&fresh);
        let got = new_client.get(1, "k", Consistency::Linearizable).await.expect("served after the rotation");
        assert_eq!(got.map(|kv| kv.value), Some("v".into()));
        let identity = (old_pki.join("client.pem"), old_pki.join("client-key.pem"));
        let old_tls =
            tls::client_config_from_files(&old_pki.join("ca.pem"), Some((&identity.0, &identity.1))).unwrap();
        let mut old = ClientConfig::new([c.addr(1)]).with_tls(Arc::new(Arc::new(old_tls)));
        old.retry_for = Duration::from_millis(200);
        old.request_timeout = Duration::from_secs(2);
        let old = Client::new(old).unwrap();
        assert!(
            old.get(1, "k", Consistency::Linearizable).await.is_err(),
            "the old certificate is still served"
        );
        let log = c.procs[0].as_ref().unwrap().log();
        assert!(log.contains("TLS certificates reloaded"), "no reload in the log");
    })
    .await;
}
