//! A chunk's stored form: its plain bytes compressed as the bucket asks (zstd or gzip), then
//! sealed with AES-256-GCM when the bucket encrypts. Each chunk is transformed on its own, so a
//! range of a large file is read by decoding only the chunks it covers.
//!
//! Keys: each file has its own, derived (HKDF-SHA256) from the project's storage key — a
//! random secret held in the replicated state, never logged — and the bucket and file ids. A
//! sealed chunk is `nonce (12 random bytes) ‖ ciphertext ‖ tag`, and its index is the
//! associated data, so chunks cannot be swapped within a file nor moved between files.
//!
//! Pure, blocking work: callers run it off the async runtime.

use model::storage::{ChunkRef, Compression};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};
use std::io::Read;

/// Why a stored chunk could not be read back.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CodecError {
    #[error("the chunk could not be decrypted (wrong key, or damaged)")]
    Open,
    #[error("the chunk could not be decompressed: {0}")]
    Decompress(String),
    #[error("the chunk's plain bytes do not match their checksum")]
    Checksum,
    #[error("encryption failed")]
    Seal,
}

/// A file's sealing key.
pub(crate) struct FileKey(LessSafeKey);

impl FileKey {
    /// The key of file `file` in bucket `bucket`, from the project's storage key (hex).
    pub(crate) fn derive(project_key: &str, bucket: &str, file: &str) -> FileKey {
        let ikm = hex::decode(project_key).unwrap_or_else(|_| project_key.as_bytes().to_vec());
        let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"basalt storage v1");
        let info = [bucket.as_bytes(), &[0u8], file.as_bytes()].concat();
        let info = [info.as_slice()];
        let prk = salt.extract(&ikm);
        let okm = prk
            .expand(&info, &AES_256_GCM)
            .expect("HKDF output of one AES-256 key length is always valid");
        FileKey(LessSafeKey::new(UnboundKey::from(okm)))
    }
}

fn aad(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Plain chunk bytes in their stored form, and the `ChunkRef` that describes it, its blob
/// name (the stored bytes' SHA-256) included. Stored as they are (no compression, no
/// encryption), the bytes are hashed once: their blob name is their plain checksum.
pub(crate) fn encode(
    plain: Vec<u8>,
    index: u64,
    compression: Compression,
    key: Option<&FileKey>,
) -> Result<(Vec<u8>, ChunkRef), CodecError> {
    let plain_sha256 = hex::encode(Sha256::digest(&plain));
    let size = plain.len() as u64;
    let mut out = match compression {
        Compression::None => plain,
        Compression::Zstd => {
            zstd::bulk::compress(&plain, 3).map_err(|e| CodecError::Decompress(e.to_string()))?
        }
        Compression::Gzip => {
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(plain.len() / 2),
                flate2::Compression::new(6),
            );
            enc.write_all(&plain)
                .and_then(|_| enc.finish())
                .map_err(|e| CodecError::Decompress(e.to_string()))?
        }
    };
    if let Some(k) = key {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| CodecError::Seal)?;
        k.0.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(index)),
            &mut out,
        )
        .map_err(|_| CodecError::Seal)?;
        out = [nonce.as_slice(), &out].concat();
    }
    let blob = match (compression, key) {
        (Compression::None, None) => plain_sha256.clone(),
        _ => hex::encode(Sha256::digest(&out)),
    };
    let chunk = ChunkRef {
        blob,
        plain_sha256,
        size,
        stored: out.len() as u64,
        compression,
        encrypted: key.is_some(),
    };
    Ok((out, chunk))
}

/// A stored chunk's plain bytes, checked against the chunk's plain checksum. Decompression
/// stops past the chunk's plain size, so a damaged or crafted blob cannot inflate.
pub(crate) fn decode(
    mut stored: Vec<u8>,
    index: u64,
    chunk: &ChunkRef,
    key: Option<&FileKey>,
) -> Result<Vec<u8>, CodecError> {
    if chunk.encrypted {
        let k = key.ok_or(CodecError::Open)?;
        if stored.len() < NONCE_LEN {
            return Err(CodecError::Open);
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&stored[..NONCE_LEN]);
        let body = &mut stored[NONCE_LEN..];
        let len =
            k.0.open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(index)),
                body,
            )
            .map_err(|_| CodecError::Open)?
            .len();
        stored.copy_within(NONCE_LEN..NONCE_LEN + len, 0);
        stored.truncate(len);
    }
    let limit = chunk.size as usize;
    let plain = match chunk.compression {
        Compression::None => stored,
        Compression::Zstd => zstd::bulk::decompress(&stored, limit)
            .map_err(|e| CodecError::Decompress(e.to_string()))?,
        Compression::Gzip => {
            let mut out = Vec::with_capacity(limit);
            flate2::read::GzDecoder::new(stored.as_slice())
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| CodecError::Decompress(e.to_string()))?;
            out
        }
    };
    // Stored as they are, the bytes were checked against their blob name when read, which is
    // their plain checksum: hashing them again would tell nothing more.
    let as_stored = chunk.compression == Compression::None
        && !chunk.encrypted
        && chunk.blob == chunk.plain_sha256;
    if plain.len() != limit
        || (!as_stored && hex::encode(Sha256::digest(&plain)) != chunk.plain_sha256)
    {
        return Err(CodecError::Checksum);
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn every_codec_round_trips_and_checks() {
        let plain = sample();
        let key = FileKey::derive(&"ab".repeat(32), "bucket", "file");
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            for k in [None, Some(&key)] {
                let (stored, chunk) = encode(plain.clone(), 3, compression, k).unwrap();
                if compression != Compression::None {
                    assert!(stored.len() < plain.len() / 2, "{compression:?} compresses");
                }
                assert_eq!(decode(stored.clone(), 3, &chunk, k).unwrap(), plain);
                if k.is_some() {
                    // Another index, another file's key, or a flipped byte: refused.
                    assert!(decode(stored.clone(), 4, &chunk, k).is_err());
                    let other = FileKey::derive(&"ab".repeat(32), "bucket", "other");
                    assert!(decode(stored.clone(), 3, &chunk, Some(&other)).is_err());
                    let mut bad = stored.clone();
                    bad[20] ^= 1;
                    assert!(decode(bad, 3, &chunk, k).is_err());
                }
            }
        }
    }

    #[test]
    fn a_chunk_cannot_inflate_past_its_size() {
        let plain = vec![0u8; 1 << 20];
        let (stored, mut chunk) = encode(plain.clone(), 0, Compression::Zstd, None).unwrap();
        chunk.size = 1000;
        assert!(decode(stored.clone(), 0, &chunk, None).is_err());
        let (stored, mut chunk) = encode(plain.clone(), 0, Compression::Gzip, None).unwrap();
        chunk.size = 1000;
        assert!(decode(stored, 0, &chunk, None).is_err());
    }
}
