//! The encrypted chunk format. The compressed stream is cut into chunks of `chunk_size` bytes (the
//! last one may be shorter, even empty); each is sealed with AES-256-GCM under the backup's data key
//! and stored as ciphertext + 16-byte tag, back to back. The nonce is the chunk counter; the AAD
//! binds the backup id, the chunk index and a last-chunk flag, so reordering, truncation and
//! splicing between backups all fail authentication.

use bytes::{Bytes, BytesMut};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::BackupError;

pub const TAG_LEN: usize = 16;
pub const DEFAULT_CHUNK_SIZE: usize = 1 << 20;
const AAD_PREFIX: &[u8] = b"dbagent-backup-chunk-v1\0";

fn nonce(index: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&index.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn aad(backup_id: &str, index: u64, last: bool) -> Vec<u8> {
    let mut a = Vec::with_capacity(AAD_PREFIX.len() + backup_id.len() + 10);
    a.extend_from_slice(AAD_PREFIX);
    a.extend_from_slice(backup_id.as_bytes());
    a.push(0);
    a.extend_from_slice(&index.to_be_bytes());
    a.push(u8::from(last));
    a
}

fn key(data_key: &[u8]) -> Result<LessSafeKey, BackupError> {
    UnboundKey::new(&AES_256_GCM, data_key)
        .map(LessSafeKey::new)
        .map_err(|_| BackupError::DataKeyLength { found: data_key.len() })
}

/// A fresh random 256-bit data key, wiped from memory when dropped (as volume keys are).
pub fn new_data_key() -> Result<Zeroizing<[u8; 32]>, BackupError> {
    let mut k = Zeroizing::new([0u8; 32]);
    getrandom::fill(k.as_mut_slice()).map_err(BackupError::Random)?;
    Ok(k)
}

/// Cuts plaintext into sealed chunks. Keeps one full chunk back until more data (or the end)
/// shows whether it is the last.
pub struct Sealer {
    key: LessSafeKey,
    backup_id: String,
    chunk_size: usize,
    buf: Vec<u8>,
    index: u64,
    hash: Sha256,
    stored: u64,
}

impl Sealer {
    pub fn new(data_key: &[u8], backup_id: &str, chunk_size: usize) -> Result<Self, BackupError> {
        Ok(Self {
            key: key(data_key)?,
            backup_id: backup_id.to_owned(),
            chunk_size,
            buf: Vec::with_capacity(chunk_size + TAG_LEN),
            index: 0,
            hash: Sha256::new(),
            stored: 0,
        })
    }

    /// Feeds plaintext; `emit` receives each sealed chunk that is known not to be the last.
    pub fn push(&mut self, mut data: &[u8], emit: &mut dyn FnMut(Bytes) -> std::io::Result<()>) -> std::io::Result<()> {
        while !data.is_empty() {
            if self.buf.len() == self.chunk_size {
                let sealed = self.seal(false)?;
                emit(sealed)?;
            }
            let take = (self.chunk_size - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(())
    }

    /// Seals what is left as the last chunk; returns it with the SHA-256 (hex), stored size and chunk count.
    pub fn finish(mut self) -> std::io::Result<(Bytes, String, u64, u64)> {
        let last = self.seal(true)?;
        let digest = crate::hex::encode(&self.hash.finalize());
        Ok((last, digest, self.stored, self.index))
    }

    fn seal(&mut self, last: bool) -> std::io::Result<Bytes> {
        let mut out = std::mem::replace(&mut self.buf, Vec::with_capacity(self.chunk_size + TAG_LEN));
        self.key
            .seal_in_place_append_tag(nonce(self.index), Aad::from(aad(&self.backup_id, self.index, last)), &mut out)
            .map_err(|_| std::io::Error::other("AES-256-GCM seal failed"))?;
        self.index += 1;
        self.hash.update(&out);
        self.stored += out.len() as u64;
        Ok(Bytes::from(out))
    }
}

/// Why a stored stream failed to open: names the chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkFault {
    pub index: u64,
    pub offset: u64,
    pub message: String,
}

impl std::fmt::Display for ChunkFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "chunk {} (stored bytes from offset {}): {}", self.index, self.offset, self.message)
    }
}

/// Opens a stored stream chunk by chunk, whatever the sizes of the pieces it arrives in.
pub struct Opener {
    key: LessSafeKey,
    backup_id: String,
    frame: usize,
    buf: BytesMut,
    index: u64,
    offset: u64,
    hash: Sha256,
}

impl Opener {
    pub fn new(data_key: &[u8], backup_id: &str, chunk_size: usize) -> Result<Self, BackupError> {
        Ok(Self {
            key: key(data_key)?,
            backup_id: backup_id.to_owned(),
            frame: chunk_size + TAG_LEN,
            buf: BytesMut::new(),
            index: 0,
            offset: 0,
            hash: Sha256::new(),
        })
    }

    /// Feeds stored bytes; `emit` receives the plaintext of every chunk known not to be the last.
    pub fn push(
        &mut self,
        data: &[u8],
        emit: &mut dyn FnMut(&[u8]) -> Result<(), ChunkFault>,
    ) -> Result<(), ChunkFault> {
        self.hash.update(data);
        self.buf.extend_from_slice(data);
        // Strictly more than one frame: the frame in hand is followed by data, so it is not the last.
        while self.buf.len() > self.frame {
            let chunk = self.buf.split_to(self.frame);
            let plain = self.open(chunk, false)?;
            emit(&plain)?;
        }
        Ok(())
    }

    /// Opens the remaining bytes as the last chunk; returns its plaintext and the SHA-256 of everything fed.
    pub fn finish(mut self) -> Result<(Vec<u8>, String, u64), ChunkFault> {
        if self.buf.len() < TAG_LEN {
            return Err(self.fault("the stream ends inside a chunk: the backup is truncated"));
        }
        let rest = std::mem::take(&mut self.buf);
        let plain = self.open(rest, true)?;
        let digest = crate::hex::encode(&self.hash.finalize());
        Ok((plain, digest, self.index))
    }

    fn fault(&self, message: &str) -> ChunkFault {
        ChunkFault { index: self.index, offset: self.offset, message: message.to_owned() }
    }

    fn open(&mut self, chunk: BytesMut, last: bool) -> Result<Vec<u8>, ChunkFault> {
        let len = chunk.len() as u64;
        let mut buf = chunk.to_vec();
        let ok = self
            .key
            .open_in_place(nonce(self.index), Aad::from(aad(&self.backup_id, self.index, last)), &mut buf)
            .is_ok();
        if !ok {
            let why = if last {
                "fails authentication (corrupted, truncated or from another backup)"
            } else {
                "fails authentication (corrupted, reordered or from another backup)"
            };
            return Err(self.fault(why));
        }
        buf.truncate(buf.len() - TAG_LEN);
        self.index += 1;
        self.offset += len;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal_all(data: &[u8], chunk: usize) -> (Vec<u8>, String, u64) {
        let mut s = Sealer::new(&[3u8; 32], "b1", chunk).unwrap();
        let mut out = Vec::new();
        for piece in data.chunks(7) {
            s.push(piece, &mut |b| {
                out.extend_from_slice(&b);
                Ok(())
            })
            .unwrap();
        }
        let (last, digest, stored, count) = s.finish().unwrap();
        out.extend_from_slice(&last);
        assert_eq!(stored, out.len() as u64);
        (out, digest, count)
    }

    fn open_all(stored: &[u8], chunk: usize, id: &str) -> Result<(Vec<u8>, String), ChunkFault> {
        let mut o = Opener::new(&[3u8; 32], id, chunk).unwrap();
        let mut out = Vec::new();
        for piece in stored.chunks(5) {
            o.push(piece, &mut |p| {
                out.extend_from_slice(p);
                Ok(())
            })?;
        }
        let (last, digest, _) = o.finish()?;
        out.extend_from_slice(&last);
        Ok((out, digest))
    }

    #[test]
    fn round_trips_any_length() {
        for len in [0usize, 1, 63, 64, 65, 128, 1000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31) as u8).collect();
            let (stored, digest, count) = seal_all(&data, 64);
            assert_eq!(count, (len.max(1) as u64).div_ceil(64), "len {len}");
            let (back, d2) = open_all(&stored, 64, "b1").unwrap();
            assert_eq!(back, data);
            assert_eq!(digest, d2);
        }
    }

    #[test]
    fn detects_flip_truncation_reorder_and_splice() {
        let data = vec![9u8; 300];
        let (stored, _, _) = seal_all(&data, 64);
        let mut flipped = stored.clone();
        flipped[80 * 2 + 3] ^= 1;
        assert_eq!(open_all(&flipped, 64, "b1").unwrap_err().index, 2);
        // Truncated at a chunk boundary: the new last chunk was not sealed as last.
        assert_eq!(open_all(&stored[..80 * 2], 64, "b1").unwrap_err().index, 1);
        let mut swapped = stored[80..160].to_vec();
        swapped.extend_from_slice(&stored[..80]);
        swapped.extend_from_slice(&stored[160..]);
        assert_eq!(open_all(&swapped, 64, "b1").unwrap_err().index, 0);
        assert_eq!(open_all(&stored, 64, "b2").unwrap_err().index, 0);
    }
}
