//! The hostile client of `hostile_rpcs.rs`: raw gRPC calls whose message bytes (or whole HTTP/2 bodies) the
//! suite writes itself, over the same TLS a real client uses, and the variants it sends each method.

pub mod methods;
pub mod mutate;

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use drakkar_client::codec::RawCodec;
use methods::{Method, Shape};
use mutate::{Draw, Rng};
use tokio_stream::{Stream, StreamExt};
use tonic::Status;
use tonic::codegen::{Service, http};
use tonic::transport::Channel;

/// The mutation classes, in the order variants cycle through them.
pub const CLASSES: [&str; 10] = [
    "random",
    "bit flips",
    "truncated",
    "oversized field",
    "wrong-type field",
    "huge repeated count",
    "deep nesting",
    "bad framing",
    "abandoned",
    "valid",
];

/// What one request sends.
pub enum Variant {
    /// These messages, then the end of the request stream.
    Messages(Vec<Vec<u8>>),
    /// This HTTP/2 body, gRPC framing included.
    Framing(Vec<u8>),
    /// This message, then nothing, the request stream left open: the client gives up after a moment.
    Abandon(Vec<u8>),
}

impl Variant {
    /// The messages a body-level check (`may_send`) looks at.
    pub fn messages(&self) -> Vec<&[u8]> {
        match self {
            Variant::Messages(m) => m.iter().map(Vec::as_slice).collect(),
            Variant::Abandon(m) => vec![m.as_slice()],
            // The frame's message, as the server would find it.
            Variant::Framing(b) => vec![b.get(5..).unwrap_or_default()],
        }
    }
}

/// Sizes of oversized fields: past the 64 KiB key limit, 1 MiB, past Admin's 2 MiB message limit; the long
/// form adds one past the 40 MiB Kv limit once in a while.
fn oversize(rng: &mut Rng, long: bool) -> usize {
    if long && rng.below(40) == 0 {
        return (40 << 20) + 1024;
    }
    *rng.pick(&[(64 << 10) + 1, 1 << 20, (2 << 20) + 1024])
}

/// Variant `k` of `m` (class `k % 10`).
pub fn variant(rng: &mut Rng, m: &Method, k: usize, long: bool) -> (&'static str, Variant) {
    let class = k % CLASSES.len();
    let seed = rng.pick(&m.seeds).clone();
    let one = match class {
        0 => {
            let n = rng.below(600);
            rng.bytes(n)
        }
        1 => mutate::flip_bits(rng, &seed),
        2 => mutate::truncate(rng, &seed),
        3 => {
            let field = if m.bytes_fields.is_empty() { 15 } else { *rng.pick(m.bytes_fields) };
            let size = oversize(rng, long);
            mutate::oversized(rng, &seed, field, size)
        }
        4 => {
            let field = 1 + rng.below(12) as u32;
            mutate::wrong_type(rng, &seed, field)
        }
        5 => {
            if m.repeated.is_empty() {
                // No repeated field: a singular one repeated (the last occurrence wins) or an unknown one.
                let n = *rng.pick(&[100_000, 500_000]);
                if rng.below(2) == 0 {
                    mutate::repeated(&seed, 1, n, true)
                } else {
                    mutate::repeated(&seed, 15, n, false)
                }
            } else {
                let (field, max, varints) = *rng.pick(m.repeated);
                let n = *rng.pick(&[max.saturating_add(1).min(2_000_000), 200_000, 1_000_000]);
                mutate::repeated(&seed, field, n, varints)
            }
        }
        6 => {
            let depth = *rng.pick(&[101, 1_000, 50_000]);
            mutate::nested(rng, &seed, depth)
        }
        7 => return (CLASSES[class], Variant::Framing(mutate::bad_framing(rng, &seed))),
        8 => {
            let body = if rng.below(2) == 0 { seed } else { mutate::flip_bits(rng, &seed) };
            return (CLASSES[class], Variant::Abandon(body));
        }
        _ => seed,
    };
    // A client stream: sometimes more messages after the first (valid ones, or mutated).
    let mut msgs = vec![one];
    if matches!(m.shape, Shape::ClientStream | Shape::Bidi) && !m.follow.is_empty() {
        for _ in 0..rng.below(4) {
            let next = rng.pick(&m.follow).clone();
            msgs.push(if rng.below(2) == 0 { next } else { mutate::flip_bits(rng, &next) });
        }
    }
    (CLASSES[class], Variant::Messages(msgs))
}

/// How a call ended.
#[derive(Debug)]
pub enum Outcome {
    /// The server's status (OK included).
    Status(Status),
    /// The client stopped reading a stream that was still going (a server stream, a watch).
    Abandoned,
}

impl Outcome {
    /// The status code, `None` when the client abandoned the call.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Outcome::Status(s) => Some(s.code()),
            Outcome::Abandoned => None,
        }
    }
}

type Body = Pin<Box<dyn Stream<Item = Bytes> + Send>>;

/// Calls `path` sending `msgs` (then, with `open`, keeping the request stream open forever), with
/// `timeout` as its `grpc-timeout`; reads at most `max_read` answers before abandoning the call.
pub async fn call(
    ch: Channel,
    path: &'static str,
    msgs: Vec<Vec<u8>>,
    open: bool,
    timeout: Option<Duration>,
    max_read: usize,
) -> Outcome {
    let mut grpc = tonic::client::Grpc::new(ch).max_decoding_message_size(64 << 20);
    if let Err(e) = grpc.ready().await {
        return Outcome::Status(Status::unavailable(format!("not ready: {e}")));
    }
    let msgs = tokio_stream::iter(msgs.into_iter().map(Bytes::from));
    let body: Body = if open { Box::pin(msgs.chain(tokio_stream::pending())) } else { Box::pin(msgs) };
    let mut req = tonic::Request::new(body);
    if let Some(t) = timeout {
        req.set_timeout(t);
    }
    let path = http::uri::PathAndQuery::from_static(path);
    let mut answers = match grpc.streaming(req, path, RawCodec).await {
        Ok(r) => r.into_inner(),
        Err(s) => return Outcome::Status(s),
    };
    for _ in 0..max_read {
        match answers.message().await {
            Ok(Some(_)) => {}
            Ok(None) => return Outcome::Status(Status::ok("")),
            Err(s) => return Outcome::Status(s),
        }
    }
    Outcome::Abandoned
}

/// An HTTP body of one data frame.
struct Whole(Option<Bytes>);

impl http_body::Body for Whole {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.take().map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// A POST of `path` whose HTTP/2 body is exactly `body`: the gRPC status; with `stop_at_data`, the call is
/// abandoned at the first answer (a stream that stays open by design).
pub async fn raw_http(
    ch: Channel,
    path: &str,
    body: Vec<u8>,
    timeout: Duration,
    stop_at_data: bool,
) -> Outcome {
    let millis = timeout.as_millis().to_string() + "m";
    let req = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", millis)
        .body(tonic::body::Body::new(Whole(Some(Bytes::from(body)))))
        .expect("request");
    let mut ch = ch;
    if let Err(e) = std::future::poll_fn(|cx| ch.poll_ready(cx)).await {
        return Outcome::Status(Status::unavailable(format!("not ready: {e}")));
    }
    let resp = match ch.call(req).await {
        Ok(r) => r,
        Err(e) => return Outcome::Status(Status::unavailable(format!("no HTTP answer: {e}"))),
    };
    if let Some(s) = Status::from_header_map(resp.headers()) {
        return Outcome::Status(s);
    }
    let mut body = resp.into_body();
    loop {
        let frame =
            std::future::poll_fn(|cx| tonic::codegen::Body::poll_frame(Pin::new(&mut body), cx)).await;
        match frame {
            Some(Ok(f)) => {
                if f.is_data() && stop_at_data {
                    return Outcome::Abandoned;
                }
                if let Ok(trailers) = f.into_trailers() {
                    let s = Status::from_header_map(&trailers)
                        .unwrap_or_else(|| Status::unknown("trailers without grpc-status"));
                    return Outcome::Status(s);
                }
            }
            Some(Err(e)) => return Outcome::Status(e),
            None => return Outcome::Status(Status::unknown("a body without grpc-status")),
        }
    }
}
