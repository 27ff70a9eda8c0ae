//! A scripted API server for reconcile tests (the controller-rs `ApiServerVerifier` pattern): the
//! reconciler talks to a `tower-test` mock service; the test takes each request in turn, asserts its
//! method, path and body, and answers it.
#![allow(dead_code)]

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle, SendResponse};

/// One request the reconciler made.
pub struct Seen {
    /// HTTP method.
    pub method: Method,
    /// URI path.
    pub path: String,
    /// URI query (empty when none).
    pub query: String,
    /// Content-Type header.
    pub content_type: String,
    /// The body as JSON (Null when empty).
    pub body: Value,
    reply: SendResponse<Response<Body>>,
}

impl Seen {
    /// Answers with `status` and `body`.
    pub fn reply(self, status: StatusCode, body: &Value) {
        let bytes = serde_json::to_vec(body).unwrap();
        self.reply.send_response(Response::builder().status(status).body(Body::from(bytes)).unwrap());
    }

    /// Answers 200 with `body`.
    pub fn ok(self, body: &Value) {
        self.reply(StatusCode::OK, body)
    }

    /// Answers 200 with the request's own body (what an apply returns, give or take server fields).
    pub fn echo(self) {
        let body = self.body.clone();
        self.ok(&body)
    }

    /// Answers 404 NotFound.
    pub fn not_found(self) {
        let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"});
        self.reply(StatusCode::NOT_FOUND, &status)
    }

    /// The query parameter `key`, if present.
    pub fn param(&self, key: &str) -> Option<String> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
    }

    /// Asserts a server-side apply by the operator.
    pub fn assert_apply(&self) {
        assert_eq!(self.method, Method::PATCH, "{}", self.path);
        assert_eq!(self.content_type, "application/apply-patch+yaml", "{}", self.path);
        assert_eq!(self.param("fieldManager").as_deref(), Some("drakkar-operator"), "{}", self.path);
        assert_eq!(self.param("force").as_deref(), Some("true"), "{}", self.path);
    }
}

/// The test's end of the mock API server.
pub struct ApiServer(Handle<Request<Body>, Response<Body>>);

/// A client wired to a new scripted server.
pub fn pair() -> (Client, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), ApiServer(handle))
}

impl ApiServer {
    /// The next request (panics when the reconciler stops asking).
    pub async fn next(&mut self) -> Seen {
        let (req, reply) = self.0.next_request().await.expect("the reconciler made no further request");
        let (parts, body) = req.into_parts();
        let bytes = body.collect_bytes().await.unwrap();
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        Seen {
            method: parts.method,
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or_default().to_string(),
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default(),
            body,
            reply,
        }
    }

    /// The next request, asserted to be `method path`.
    pub async fn expect(&mut self, method: Method, path: &str) -> Seen {
        let seen = self.next().await;
        assert_eq!((&seen.method, seen.path.as_str()), (&method, path), "unexpected request");
        seen
    }

    /// The next request, asserted to be a server-side apply to `path`; answered with its own body.
    pub async fn expect_apply(&mut self, path: &str) -> Value {
        let seen = self.expect(Method::PATCH, path).await;
        seen.assert_apply();
        let body = seen.body.clone();
        seen.echo();
        body
    }

    /// The next request, asserted to be an Event about the cluster with `reason`; answered.
    pub async fn expect_event(&mut self, namespace: &str, reason: &str) -> Value {
        let seen =
            self.expect(Method::POST, &format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events")).await;
        assert_eq!(seen.body["reason"], reason, "{}", seen.body);
        assert_eq!(seen.body["regarding"]["kind"], "DrakkarCluster");
        assert_eq!(seen.body["reportingController"], "drakkar-operator");
        let body = seen.body.clone();
        seen.reply(StatusCode::CREATED, &body);
        body
    }
}
