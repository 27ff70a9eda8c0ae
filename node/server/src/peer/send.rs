//! One task per peer: keeps a stream of batches open to it; and snapshot streams.

use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::peer::pb::{self, raft_client::RaftClient};
use drakkar_client::connect::{self, Connector, KeepAlive};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::convert;
use super::receive::MAX_BATCH_BYTES;
use drakkar::transport::{MessageBatch, MessageSink, SnapshotRequest, recipients};

/// Batches merged into one stream message stay under this many (estimated) bytes.
const MERGE_BYTES: u64 = 4 << 20;
/// Batches in flight on one stream (between this task and the connection).
const STREAM_BUFFER: usize = 16;
const SNAPSHOT_CHUNK: usize = 1 << 20;
/// A peer nothing was sent to for this long loses its task and connection (a removed member, say); the
/// next message to it starts a new one.
const IDLE: Duration = Duration::from_secs(300);
/// A stream that lasted this long before it broke resets the backoff: the peer was fine until now.
const STREAM_LASTED: Duration = Duration::from_secs(10);

/// Pauses between connection attempts: from `min`, doubling up to `max`, each plus up to 50 % jitter.
#[derive(Debug)]
pub(super) struct Backoff {
    min: Duration,
    max: Duration,
    /// The next pause without jitter; always within `min..=max`.
    next: Duration,
}

impl Backoff {
    pub(super) fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        let max = max.max(min);
        Backoff { min, max, next: min }
    }

    /// The pause before the next attempt, with `random` (any value) choosing the jitter; the one after
    /// it doubles.
    pub(super) fn pause(&mut self, random: u32) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base + base / 1000 * (random % 501)
    }

    /// Back to the minimum: the peer showed it is up.
    pub(super) fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Some randomness for the jitter, without a random number generator dependency.
fn random() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos())
}

/// Resolves at the next sign of life from the peer (never if the transport forgot the peer).
async fn heard_again(heard: &mut watch::Receiver<u64>) {
    if heard.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// How one connection and stream ended.
enum Ended {
    /// Stop for good: the transport stopped, or the queue closed, or the peer is idle.
    Stop,
    /// The connection could not be made, or the stream broke.
    Broken(String),
    /// The peer showed it is up while a connection attempt was pending: try again at once.
    PeerUp,
}

fn status_error(s: &tonic::Status) -> String {
    let mut out = format!("{}: {}", s.code(), s.message());
    sources(&mut out, std::error::Error::source(s));
    out
}

/// `e` with its sources: tonic's transport errors say little at the top.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    sources(&mut out, e.source());
    out
}

/// Appends the sources from `cur` on, each once (an I/O error repeats its inner error).
fn sources(out: &mut String, mut cur: Option<&dyn std::error::Error>) {
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
}

pub(super) struct PeerTask {
    pub(super) address: String,
    pub(super) queue: mpsc::Receiver<MessageBatch>,
    pub(super) connector: Connector,
    pub(super) keepalive: KeepAlive,
    pub(super) backoff: Backoff,
    /// Changes at every sign of life from the peer ([`super::GrpcTransport::heard_from`]).
    pub(super) heard: watch::Receiver<u64>,
    pub(super) stop: CancellationToken,
    pub(super) idle_since: Instant,
    /// The local NodeHost, told which replicas could not be reached.
    pub(super) local: Arc<OnceLock<Weak<dyn MessageSink>>>,
    /// The last batch handed to the stream: lost with it if the stream breaks.
    pub(super) last: Option<MessageBatch>,
}

fn size(b: &MessageBatch) -> u64 {
    b.messages.iter().map(|(_, m)| m.size()).sum::<u64>() + 64
}

impl PeerTask {
    /// Takes `first` and whatever else is queued (up to [`MERGE_BYTES`]) as one batch.
    fn merge(&mut self, mut first: MessageBatch) -> MessageBatch {
        let mut bytes = size(&first);
        while bytes < MERGE_BYTES {
            let Ok(next) = self.queue.try_recv() else { break };
            bytes += size(&next);
            if next.from != first.from || next.incarnation != first.incarnation {
                // Never happens (one NodeHost per transport); keep the newest identity.
                first.from = next.from;
                first.incarnation = next.incarnation;
            }
            first.messages.extend(next.messages);
            first.reused.extend(next.reused);
        }
        first
    }

    pub(super) async fn run(mut self) {
        loop {
            if self.idle_since.elapsed() > IDLE {
                return;
            }
            // Only signs of life from now on count for this attempt.
            self.heard.borrow_and_update();
            let started = Instant::now();
            let peer_up = match self.stream_once().await {
                Ended::Stop => return,
                Ended::PeerUp => true,
                Ended::Broken(e) => {
                    tracing::debug!(peer = %self.address, error = %e, "raft stream ended");
                    // The peer opened a stream to this node while this one was up (its connection to
                    // this node was replaced, as after a restart): try again at once. If that was long
                    // ago, this costs one early attempt.
                    self.heard.has_changed().unwrap_or(false)
                }
            };
            let mut lost: Vec<MessageBatch> = self.last.take().into_iter().collect();
            if peer_up || started.elapsed() > STREAM_LASTED {
                self.backoff.reset();
            }
            if !peer_up {
                // Attempts start at most once per pause: time spent in the failed attempt (a connect
                // timeout, say) counts, so a healed network is tried again without waiting twice.
                let pause = self.backoff.pause(random()).saturating_sub(started.elapsed());
                tokio::select! {
                    _ = self.stop.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                    _ = heard_again(&mut self.heard) => self.backoff.reset(),
                }
            }
            // Stale by now: Raft has retransmitted or will.
            while let Ok(b) = self.queue.try_recv() {
                lost.push(b);
            }
            self.report_unreachable(&lost);
        }
    }

    /// Tells the local NodeHost that the recipients of `lost` could not be reached: their leaders probe
    /// them instead of streaming entries into a broken connection.
    fn report_unreachable(&self, lost: &[MessageBatch]) {
        let Some(sink) = self.local.get().and_then(Weak::upgrade) else { return };
        let mut targets: Vec<_> = lost.iter().flat_map(recipients).collect();
        targets.sort_unstable();
        targets.dedup();
        if !targets.is_empty() {
            sink.unreachable(targets);
        }
    }

    /// One connection and stream.
    async fn stream_once(&mut self) -> Ended {
        let endpoint = match connect::endpoint(&self.address, self.keepalive) {
            Ok(e) => e,
            Err(e) => return Ended::Broken(e.to_string()),
        };
        // Connect first (a new connection per attempt: the connector resolves the name again). A sign of
        // life from the peer meanwhile abandons an attempt that may be waiting for a dropped SYN.
        let channel = tokio::select! {
            _ = self.stop.cancelled() => return Ended::Stop,
            _ = heard_again(&mut self.heard) => return Ended::PeerUp,
            c = endpoint.connect_with_connector(self.connector.clone()) => match c {
                Ok(c) => c,
                Err(e) => return Ended::Broken(error_chain(&e)),
            },
        };
        let mut client = RaftClient::new(channel).max_encoding_message_size(MAX_BATCH_BYTES);
        let (tx, rx) = mpsc::channel::<pb::RaftBatch>(STREAM_BUFFER);
        let mut call = Box::pin(async move { client.send_messages(ReceiverStream::new(rx)).await });
        let ended = |r: Result<tonic::Response<pb::RaftAck>, tonic::Status>| match r {
            Ok(_) => Ended::Broken("the peer ended the stream".into()),
            Err(s) => Ended::Broken(status_error(&s)),
        };
        loop {
            let idle_at = tokio::time::Instant::from_std(self.idle_since + IDLE);
            tokio::select! {
                _ = self.stop.cancelled() => return Ended::Stop,
                _ = tokio::time::sleep_until(idle_at) => return Ended::Stop,
                r = &mut call => return ended(r),
                b = self.queue.recv() => {
                    let Some(b) = b else { return Ended::Stop };
                    self.idle_since = Instant::now();
                    let batch = self.merge(b);
                    let msg = convert::batch_to_pb(&batch);
                    self.last = Some(batch);
                    tokio::select! {
                        _ = self.stop.cancelled() => return Ended::Stop,
                        r = tx.send(msg) => if r.is_err() { return Ended::Broken("stream closed".into()) },
                        r = &mut call => return ended(r),
                    }
                }
            }
        }
    }
}

/// Streams one snapshot file (header, then 1 MiB chunks) on its own connection; `Ok` once the receiver
/// accepted it.
pub(super) async fn send_snapshot(
    connector: Connector,
    keepalive: KeepAlive,
    req: SnapshotRequest,
) -> Result<(), String> {
    use pb::raft_snapshot_chunk::Part;
    let message = convert::message_to_pb(&req.msg).ok_or("a snapshot message of an unknown kind")?;
    let (file, size) = match &req.file {
        Some(path) => {
            let f = tokio::fs::File::open(path).await.map_err(|e| format!("{}: {e}", path.display()))?;
            let len = f.metadata().await.map_err(|e| e.to_string())?.len();
            (Some(f), len)
        }
        None => (None, 0),
    };
    let header = pb::RaftSnapshotHeader {
        from: req.from.clone(),
        incarnation_hi: 0,
        incarnation_lo: 0,
        group: req.group.0,
        message: Some(message),
        size,
    };
    let (tx, rx) = mpsc::channel(4);
    let _ = tx.send(pb::RaftSnapshotChunk { part: Some(Part::Header(header)) }).await;
    if let Some(mut f) = file {
        tokio::spawn(async move {
            loop {
                let mut buf = vec![0u8; SNAPSHOT_CHUNK];
                match f.read(&mut buf).await {
                    // A read error ends the stream short: the receiver refuses an incomplete file.
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        buf.truncate(n);
                        let chunk = pb::RaftSnapshotChunk { part: Some(Part::Data(buf.into())) };
                        if tx.send(chunk).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    } else {
        drop(tx);
    }
    let channel = connect::channel_with(connect::host_port(&req.to), connector, keepalive)
        .map_err(|e| e.to_string())?;
    let mut client = RaftClient::new(channel);
    // Generous: at least a minute, plus a second per 4 MiB.
    let deadline = Duration::from_secs(60 + size / (4 << 20));
    let ack = tokio::time::timeout(deadline, client.send_snapshot(ReceiverStream::new(rx)))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|s| format!("{}: {}", s.code(), s.message()))?
        .into_inner();
    if ack.accepted { Ok(()) } else { Err(format!("refused: {}", ack.error)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn backoff_doubles_up_to_the_cap_with_at_most_half_jitter() {
        let mut b = Backoff::new(100 * MS, 500 * MS);
        let bare: Vec<_> = (0..6).map(|_| b.pause(0)).collect();
        assert_eq!(bare, [100 * MS, 200 * MS, 400 * MS, 500 * MS, 500 * MS, 500 * MS]);
        let mut b = Backoff::new(100 * MS, 500 * MS);
        let most: Vec<_> = (0..5).map(|_| b.pause(500)).collect();
        assert_eq!(most, [150 * MS, 300 * MS, 600 * MS, 750 * MS, 750 * MS]);
        // Any random value stays within the 50 % jitter.
        let mut b = Backoff::new(100 * MS, 500 * MS);
        for r in [1, 499, 501, 1000, u32::MAX] {
            let p = b.pause(r);
            assert!(p <= 750 * MS, "{p:?}");
        }
    }

    #[test]
    fn a_reset_backoff_is_back_to_its_minimum() {
        let mut b = Backoff::new(100 * MS, 500 * MS);
        for _ in 0..10 {
            b.pause(0);
        }
        assert_eq!(b.pause(0), 500 * MS);
        b.reset();
        assert_eq!(b.pause(0), 100 * MS);
        assert_eq!(b.pause(0), 200 * MS);
    }

    #[test]
    fn backoff_bounds_are_sane() {
        // A cap below the minimum is raised to it; a zero minimum would spin.
        let mut b = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(b.pause(0), MS);
        let mut b = Backoff::new(300 * MS, 100 * MS);
        assert_eq!((b.pause(0), b.pause(0)), (300 * MS, 300 * MS));
    }

    #[test]
    fn the_default_backoff_cap_is_short() {
        let cfg = super::super::TransportConfig::default();
        let mut b = Backoff::new(cfg.min_backoff, cfg.max_backoff);
        let longest = (0..20).map(|_| b.pause(u32::MAX)).max().unwrap_or_default();
        assert!(longest <= Duration::from_secs(1), "a dead peer is retried every {longest:?} at most");
        assert!(cfg.connect_timeout <= Duration::from_secs(1));
        assert!(cfg.keepalive.interval + cfg.keepalive.timeout <= Duration::from_millis(1500));
    }
}
