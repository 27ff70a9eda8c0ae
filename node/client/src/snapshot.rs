//! Snapshot export and import (Admin.ExportSnapshot, Admin.ImportSnapshot).

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::client::Client;
use crate::error::ClientError;
use crate::pb;

type Admin = pb::admin_client::AdminClient<tonic::transport::Channel>;

/// Bytes per ImportSnapshot message (the server's request limit is far larger).
/// Bytes of file per ImportSnapshot message: well under the Admin service's 1 MiB message limit.
const CHUNK: usize = 256 << 10;

impl Client {
    /// Takes a snapshot of `group` and writes it to `out`; returns (log index, bytes written).
    pub async fn export_snapshot(
        &self,
        group: u64,
        out: &mut (impl AsyncWrite + Unpin),
    ) -> Result<(u64, u64), ClientError> {
        self.export_snapshot_with_progress(group, out, |_, _| {}).await
    }

    /// [`Client::export_snapshot`], calling `progress(written, total)` after every chunk.
    pub async fn export_snapshot_with_progress(
        &self,
        group: u64,
        out: &mut (impl AsyncWrite + Unpin),
        mut progress: impl FnMut(u64, u64),
    ) -> Result<(u64, u64), ClientError> {
        let mut stream = self
            .call(Some(group), true, |ch, _| async move {
                // The stream's length depends on the snapshot size: no per-attempt deadline.
                Admin::new(ch).export_snapshot(tonic::Request::new(pb::ExportSnapshotRequest { group })).await
            })
            .await?;
        let (mut index, mut total, mut written) = (0, None, 0u64);
        loop {
            let chunk =
                stream.message().await.map_err(|s| ClientError::from_status(&s, "snapshot stream"))?;
            let Some(chunk) = chunk else { break };
            if total.is_none() {
                index = chunk.index;
                total = Some(chunk.total_size);
            }
            out.write_all(&chunk.data).await?;
            written += chunk.data.len() as u64;
            progress(written, total.unwrap_or(0));
        }
        out.flush().await?;
        if total != Some(written) {
            return Err(ClientError::Protocol(format!(
                "snapshot stream ended after {written} of {total:?} bytes"
            )));
        }
        Ok((index, written))
    }

    /// Installs an exported snapshot (read from `file`) as the replica `target.replica` of `target.group`
    /// on the node at `endpoint`, with the membership `target.members` (Admin.ImportSnapshot). The group
    /// must not be running on that node; start it afterwards with [`Client::start_group`] (`join`).
    /// Calls `progress(bytes sent)` after every chunk. Not retried: the file is streamed once.
    pub async fn import_snapshot(
        &self,
        endpoint: &str,
        target: pb::ImportSnapshotTarget,
        mut file: impl AsyncRead + Unpin + Send + 'static,
        progress: impl Fn(u64) + Send + 'static,
    ) -> Result<pb::ImportSnapshotResponse, ClientError> {
        let channel = self.channel(endpoint)?;
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::ImportSnapshotChunk>(4);
        // The reader runs beside the call; an I/O error ends the stream early and is reported below
        // (the server refuses a truncated file: its trailer checksum is missing).
        let reader = tokio::spawn(async move {
            let mut target = Some(target);
            let mut sent = 0u64;
            loop {
                let mut buf = vec![0u8; CHUNK];
                let n = file.read(&mut buf).await?;
                if n == 0 && target.is_none() {
                    return Ok::<u64, std::io::Error>(sent);
                }
                buf.truncate(n);
                sent += n as u64;
                let chunk = pb::ImportSnapshotChunk { target: target.take(), data: buf.into() };
                if tx.send(chunk).await.is_err() {
                    return Ok(sent);
                }
                progress(sent);
                if n == 0 {
                    return Ok(sent);
                }
            }
        });
        let call = Admin::new(channel).import_snapshot(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
        let read = reader.await.map_err(|e| ClientError::Protocol(format!("snapshot reader: {e}")))?;
        let sent = read?;
        let resp = call.map_err(|s| ClientError::from_status(&s, endpoint))?.into_inner();
        if resp.bytes != sent {
            return Err(ClientError::Protocol(format!("the node received {} of {sent} bytes", resp.bytes)));
        }
        Ok(resp)
    }
}
