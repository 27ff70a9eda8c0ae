//! One task per peer: keeps a stream of batches open to it; and snapshot streams.

use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use drakkar_client::connect::{self, Connector};
use drakkar_client::pb::{self, raft_client::RaftClient};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::convert;
use super::receive::MAX_BATCH_BYTES;
use crate::transport::{MessageBatch, MessageSink, SnapshotRequest, recipients};

/// Batches merged into one stream message stay under this many (estimated) bytes.
const MERGE_BYTES: u64 = 4 << 20;
/// Batches in flight on one stream (between this task and the connection).
const STREAM_BUFFER: usize = 16;
const SNAPSHOT_CHUNK: usize = 1 << 20;
/// A peer nothing was sent to for this long loses its task and connection (a removed member, say); the
/// next message to it starts a new one.
const IDLE: Duration = Duration::from_secs(300);

pub(super) struct PeerTask {
    pub(super) address: String,
    pub(super) queue: mpsc::Receiver<MessageBatch>,
    pub(super) connector: Connector,
    pub(super) max_backoff: Duration,
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

/// Some jitter for the backoff, without a random number generator dependency.
fn jitter(max_ms: u64) -> Duration {
    let n =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    Duration::from_millis(u64::from(n) % max_ms.max(1))
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
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.idle_since.elapsed() > IDLE {
                return;
            }
            let started = Instant::now();
            match self.stream_once().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::debug!(peer = %self.address, error = %e, "raft stream ended"),
            }
            let mut lost: Vec<MessageBatch> = self.last.take().into_iter().collect();
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(100);
            }
            let pause = backoff + jitter(backoff.as_millis() as u64 / 2);
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            backoff = (backoff * 2).min(self.max_backoff);
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

    /// One connection and stream. `Ok(true)`: stop for good (transport stopped or closed).
    async fn stream_once(&mut self) -> Result<bool, String> {
        // A new channel per attempt: the connector resolves the name again.
        let channel = connect::channel(&self.address, self.connector.clone()).map_err(|e| e.to_string())?;
        let mut client = RaftClient::new(channel).max_encoding_message_size(MAX_BATCH_BYTES);
        let (tx, rx) = mpsc::channel::<pb::RaftBatch>(STREAM_BUFFER);
        let mut call = Box::pin(async move { client.send_messages(ReceiverStream::new(rx)).await });
        loop {
            let idle_at = tokio::time::Instant::from_std(self.idle_since + IDLE);
            tokio::select! {
                _ = self.stop.cancelled() => return Ok(true),
                _ = tokio::time::sleep_until(idle_at) => return Ok(true),
                r = &mut call => {
                    return match r {
                        Ok(_) => Err("the peer ended the stream".into()),
                        Err(s) => Err(format!("{}: {}", s.code(), s.message())),
                    };
                }
                b = self.queue.recv() => {
                    let Some(b) = b else { return Ok(true) };
                    self.idle_since = Instant::now();
                    let batch = self.merge(b);
                    let msg = convert::batch_to_pb(&batch);
                    self.last = Some(batch);
                    tokio::select! {
                        _ = self.stop.cancelled() => return Ok(true),
                        r = tx.send(msg) => if r.is_err() { return Err("stream closed".into()) },
                        r = &mut call => {
                            return match r {
                                Ok(_) => Err("the peer ended the stream".into()),
                                Err(s) => Err(format!("{}: {}", s.code(), s.message())),
                            };
                        }
                    }
                }
            }
        }
    }
}

/// Streams one snapshot file (header, then 1 MiB chunks) on its own connection; `Ok` once the receiver
/// accepted it.
pub(super) async fn send_snapshot(connector: Connector, req: SnapshotRequest) -> Result<(), String> {
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
    let channel = connect::channel(connect::host_port(&req.to), connector).map_err(|e| e.to_string())?;
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
