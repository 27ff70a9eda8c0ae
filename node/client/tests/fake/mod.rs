//! Fake nodes for the client's tests: a scripted server of the Kv and Session services on 127.0.0.1.

use drakkar_client::pb;
use tokio_stream::wrappers::TcpListenerStream;

/// Methods of the Kv and Session services a fake does not serve: each answers UNIMPLEMENTED.
#[macro_export]
macro_rules! unimplemented_rpcs {
    (get) => { $crate::unimplemented_rpcs!(@one get, GetRequest, GetResponse); };
    (delete) => { $crate::unimplemented_rpcs!(@one delete, DeleteRequest, DeleteResponse); };
    (delete_range) => { $crate::unimplemented_rpcs!(@one delete_range, DeleteRangeRequest, DeleteRangeResponse); };
    (scan) => { $crate::unimplemented_rpcs!(@one scan, ScanRequest, ScanResponse); };
    (compare_and_swap) => {
        $crate::unimplemented_rpcs!(@one compare_and_swap, CompareAndSwapRequest, CompareAndSwapResponse);
    };
    (txn) => { $crate::unimplemented_rpcs!(@one txn, TxnRequest, TxnResponse); };
    (propose_in_session) => {
        $crate::unimplemented_rpcs!(@one propose_in_session, ProposeInSessionRequest, ProposeResponse);
    };
    // What `#[tonic::async_trait]` makes of an `async fn` (the attribute runs before this macro expands).
    (@one $method:ident, $req:ident, $resp:ident) => {
        fn $method<'life0, 'async_trait>(
            &'life0 self,
            _: tonic::Request<drakkar_client::pb::$req>,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<
                        Output = Result<tonic::Response<drakkar_client::pb::$resp>, tonic::Status>,
                    > + Send
                    + 'async_trait,
            >,
        >
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            Box::pin(async { Err(tonic::Status::unimplemented("fake")) })
        }
    };
    ($($method:ident),+) => { $($crate::unimplemented_rpcs!($method);)+ };
}

/// Serves `fake` (Kv and Session) on 127.0.0.1:0 until the returned sender is dropped; returns its
/// address.
pub async fn serve<F>(fake: F) -> (String, tokio::sync::oneshot::Sender<()>)
where
    F: pb::kv_server::Kv + pb::session_server::Session + Clone,
{
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::kv_server::KvServer::new(fake.clone()))
            .add_service(pb::session_server::SessionServer::new(fake))
            .serve_with_incoming_shutdown(TcpListenerStream::new(l), async {
                let _ = rx.await;
            }),
    );
    (addr, tx)
}
