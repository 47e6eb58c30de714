//! Reading a stored backup back: stored bytes -> chunk authentication -> zstd -> a sink (a restore
//! command's stdin, a file, or nothing for verify). Also the key-less copy that repair uses.

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::io::Write;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::BackupError;
use super::chunks::{ChunkFault, Opener};
use super::destination::{ByteStream, Destination, Upload};
use super::manifest::Manifest;
use super::manifest_mac::AuthenticManifest;

const QUEUE: usize = 4;

/// What reading a backup found.
#[derive(Debug)]
pub struct DecodeOutcome {
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub chunk_count: u64,
}

enum DecodeFailure {
    Chunk(ChunkFault),
    Zstd(std::io::Error),
}

/// Streams a stored backup through authentication and decompression into `sink`, checking the
/// chunk count, size and SHA-256 against the (authenticated, so bounded) manifest. Names the
/// first bad chunk.
pub async fn decode(
    mut stored: ByteStream,
    backup: &AuthenticManifest,
    destination: &str,
    sink: &mut (dyn AsyncWrite + Unpin + Send),
    cancel: &CancellationToken,
) -> Result<DecodeOutcome, BackupError> {
    let manifest = &backup.manifest;
    let corrupt = |message: String| BackupError::Corrupt {
        backup: backup.backup_id.clone(),
        destination: destination.to_owned(),
        message,
    };
    let opener = Opener::new(&backup.key, &backup.backup_id, manifest.chunk_size)?;
    let (enc_tx, enc_rx) = mpsc::channel::<Bytes>(QUEUE);
    let (plain_tx, mut plain_rx) = mpsc::channel::<Bytes>(QUEUE);
    let decoder = tokio::task::spawn_blocking(move || open_and_decompress(enc_rx, opener, plain_tx));

    let feed = async {
        let mut stored_bytes = 0u64;
        while let Some(piece) = stored.next().await {
            let piece = piece?;
            stored_bytes += piece.len() as u64;
            if enc_tx.send(piece).await.is_err() {
                break;
            }
        }
        drop(enc_tx);
        Ok::<u64, BackupError>(stored_bytes)
    };
    let drain = async {
        let mut raw = 0u64;
        while let Some(plain) = plain_rx.recv().await {
            raw += plain.len() as u64;
            sink.write_all(&plain).await.map_err(|e| BackupError::io("write the restored stream", e))?;
        }
        sink.shutdown().await.map_err(|e| BackupError::io("close the restored stream", e))?;
        Ok::<u64, BackupError>(raw)
    };
    let both = async { tokio::try_join!(feed, drain) };
    let (stored_bytes, raw) = tokio::select! {
        r = both => r?,
        () = cancel.cancelled() => return Err(BackupError::Cancelled),
    };
    let opened = decoder.await.map_err(|e| BackupError::io("join decoder", std::io::Error::other(e)))?;
    let (sha256, chunk_count) = match opened {
        Ok(x) => x,
        Err(DecodeFailure::Chunk(fault)) => {
            return Err(corrupt(format!("{fault} of {} chunks", manifest.chunk_count)));
        }
        Err(DecodeFailure::Zstd(e)) => return Err(corrupt(format!("zstd stream does not decode: {e}"))),
    };
    if chunk_count != manifest.chunk_count || stored_bytes != manifest.stored_bytes {
        return Err(corrupt(format!(
            "{chunk_count} chunks / {stored_bytes} bytes stored, the manifest says {} / {}",
            manifest.chunk_count, manifest.stored_bytes
        )));
    }
    if sha256 != manifest.sha256 {
        return Err(corrupt(format!("SHA-256 {sha256} does not match the manifest's {}", manifest.sha256)));
    }
    if raw != manifest.raw_bytes {
        return Err(corrupt(format!("{raw} bytes decoded, the manifest says {}", manifest.raw_bytes)));
    }
    Ok(DecodeOutcome { raw_bytes: raw, stored_bytes, chunk_count })
}

/// One destination's copy of a backup with the key that opens it: what a restore reads, once to
/// check it whole and once more into the server, or once into a data directory.
pub struct StoredCopy<'a> {
    pub destination: &'a dyn Destination,
    /// The destination's name, for messages.
    pub source: &'a str,
    /// The manifest read from `destination` and authenticated, with its data key.
    pub backup: AuthenticManifest,
}

impl StoredCopy<'_> {
    /// Reads the copy from the start through [`decode`] into `sink`.
    pub async fn decode_into(
        &self,
        sink: &mut (dyn AsyncWrite + Unpin + Send),
        cancel: &CancellationToken,
    ) -> Result<DecodeOutcome, BackupError> {
        let stream = self.destination.stream(&self.backup.data_object()).await?;
        decode(stream, &self.backup, self.source, sink, cancel).await
    }
}

struct ChannelWriter(mpsc::Sender<Bytes>);

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.blocking_send(Bytes::copy_from_slice(data)).map_err(|_| std::io::Error::other("restore sink closed"))?;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn open_and_decompress(
    mut rx: mpsc::Receiver<Bytes>,
    mut opener: Opener,
    tx: mpsc::Sender<Bytes>,
) -> Result<(String, u64), DecodeFailure> {
    let mut decoder = zstd::stream::write::Decoder::new(ChannelWriter(tx)).map_err(DecodeFailure::Zstd)?;
    let mut zstd_error = None;
    while let Some(piece) = rx.blocking_recv() {
        opener
            .push(&piece, &mut |plain| {
                decoder.write_all(plain).map_err(|e| {
                    let fault = ChunkFault { index: 0, offset: 0, message: String::new() };
                    zstd_error = Some(e);
                    fault
                })
            })
            .map_err(|f| match zstd_error.take() {
                Some(e) => DecodeFailure::Zstd(e),
                None => DecodeFailure::Chunk(f),
            })?;
    }
    let (last, sha256, count) = opener.finish().map_err(DecodeFailure::Chunk)?;
    decoder.write_all(&last).map_err(DecodeFailure::Zstd)?;
    decoder.flush().map_err(DecodeFailure::Zstd)?;
    Ok((sha256, count))
}

/// Copies stored bytes as they are into `upload`, checking size and SHA-256 on the way; the
/// upload is finished only if both match. No key needed, nothing re-dumped.
pub async fn copy_verified(
    mut stored: ByteStream,
    mut upload: Box<dyn Upload>,
    manifest: &Manifest,
    cancel: &CancellationToken,
) -> Result<u64, BackupError> {
    let mut hash = Sha256::new();
    let mut n = 0u64;
    let copied: Result<(), BackupError> = async {
        loop {
            let piece = tokio::select! {
                p = stored.next() => p,
                () = cancel.cancelled() => return Err(BackupError::Cancelled),
            };
            let Some(piece) = piece else { return Ok(()) };
            let piece = piece?;
            hash.update(&piece);
            n += piece.len() as u64;
            upload.write(piece).await?;
        }
    }
    .await;
    let digest = crate::hex::encode(&hash.finalize());
    let mismatch = copied.is_ok() && (digest != manifest.sha256 || n != manifest.stored_bytes);
    if copied.is_err() || mismatch {
        upload.abort().await?;
        copied?;
        return Err(BackupError::Corrupt {
            backup: manifest.backup_id.clone(),
            destination: "source".into(),
            message: format!(
                "copy has SHA-256 {digest} and {n} bytes, the manifest says {} and {}",
                manifest.sha256, manifest.stored_bytes
            ),
        });
    }
    upload.finish().await
}
