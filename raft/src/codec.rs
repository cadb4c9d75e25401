//! A tonic codec that carries serde types as bincode. Decoding is for hostile input: a frame
//! larger than its message's `Frame::MAX` is refused unread, length prefixes cannot claim more
//! than the frame holds, and recursive values nest at most `model::nesting::MAX_NESTING` deep.

use bytes::{Buf, BufMut};
use serde::{de::DeserializeOwned, Serialize};
use std::marker::PhantomData;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

use crate::rpc::Frame;

#[derive(Debug)]
pub struct BincodeCodec<E, D>(PhantomData<fn() -> (E, D)>);

impl<E, D> Default for BincodeCodec<E, D> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<E, D> Codec for BincodeCodec<E, D>
where
    E: Serialize + Send + 'static,
    D: DeserializeOwned + Frame + Send + 'static,
{
    type Encode = E;
    type Decode = D;
    type Encoder = BincodeEncoder<E>;
    type Decoder = BincodeDecoder<D>;

    fn encoder(&mut self) -> Self::Encoder {
        BincodeEncoder(PhantomData)
    }
    fn decoder(&mut self) -> Self::Decoder {
        BincodeDecoder(PhantomData)
    }
}

#[derive(Debug)]
pub struct BincodeEncoder<T>(PhantomData<fn(T)>);

impl<T: Serialize> Encoder for BincodeEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        bincode::serialize_into(dst.writer(), &item)
            .map_err(|e| Status::internal(format!("encode: {e}")))
    }
}

#[derive(Debug)]
pub struct BincodeDecoder<T>(PhantomData<fn() -> T>);

impl<T: DeserializeOwned + Frame> Decoder for BincodeDecoder<T> {
    type Item = T;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<T>, Status> {
        fits::<T>(src.remaining())?;
        let bytes = src.copy_to_bytes(src.remaining());
        decode_frame(&bytes)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("decode: {e}")))
    }
}

/// Refuses a frame larger than its message type's cap before reading it.
fn fits<T: Frame>(len: usize) -> Result<(), Status> {
    match len <= T::MAX {
        true => Ok(()),
        false => Err(Status::resource_exhausted(format!(
            "message of {len} bytes, at most {} for this method",
            T::MAX
        ))),
    }
}

/// Decodes one message: bincode as `bincode::serialize` writes it, reading at most the
/// frame's own length (so no length prefix makes it allocate beyond that).
pub fn decode_frame<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(bytes.len() as u64)
        .deserialize(bytes)
}

/// Every RPC decoder over hostile frames: random bytes, mutated valid messages, length
/// prefixes that claim more than the frame holds, and nesting bombs. None may panic, abort or
/// allocate beyond the frame; the valid messages must still decode. `BASALT_FUZZ_ROUNDS`
/// raises the number of frames per message type (default 3,000; CI runs the default).
#[cfg(test)]
mod fuzz {
    use super::decode_frame;
    use crate::rpc::*;
    use crate::NodeInfo;
    use model::command::{Actor, DocOp, DocTarget, DocumentsOp, Envelope, Op, RequestId};
    use model::{Batch, Value};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, SnapshotMeta, Vote};
    use serde::de::DeserializeOwned;
    use serde::Serialize;

    /// xorshift64*: deterministic, so a failure names its seed.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn rounds() -> usize {
        std::env::var("BASALT_FUZZ_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3_000)
    }

    fn envelope() -> Envelope {
        let nested = (0..6).fold(Value::Int(7), |v, _| Value::Array(vec![v, Value::Null]));
        Envelope::new(
            "p",
            RequestId(9),
            Actor::Key {
                id: "k".into(),
                scopes: vec!["rows.write".into()],
            },
            Op::Documents(DocumentsOp::Write {
                ops: vec![DocTarget {
                    database: "d".into(),
                    collection: "c".into(),
                    op: DocOp::Create {
                        id: "r".into(),
                        data: [("a".to_string(), nested)].into_iter().collect(),
                        permissions: None,
                    },
                }],
            }),
        )
    }

    fn log_id(term: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    /// Random frames and mutations of `valid` through `decode_frame::<T>`.
    fn hammer<T: Serialize + DeserializeOwned + Frame>(name: &str, valid: &T, seed: u64) {
        let good = bincode::serialize(valid).unwrap();
        assert!(
            good.len() <= T::MAX,
            "{name}: a valid message exceeds its cap"
        );
        assert!(
            decode_frame::<T>(&good).is_ok(),
            "{name}: valid frame refused"
        );
        let mut rng = Rng(seed);
        for round in 0..rounds() {
            let frame: Vec<u8> = match round % 4 {
                0 => (0..rng.below(600)).map(|_| rng.next() as u8).collect(),
                1 => {
                    let mut f = good.clone();
                    for _ in 0..1 + rng.below(8) {
                        let i = rng.below(f.len());
                        f[i] = rng.next() as u8;
                    }
                    f
                }
                2 => good[..rng.below(good.len())].to_vec(),
                _ => {
                    // A length prefix (8 bytes, little-endian) somewhere claims a huge count.
                    let mut f = good.clone();
                    let i = rng.below(f.len().saturating_sub(8));
                    f[i..i + 8].copy_from_slice(&(u64::MAX >> rng.below(40)).to_le_bytes());
                    f
                }
            };
            // Must return, Ok or Err; a panic fails the test with this round's seed.
            let _ = std::panic::catch_unwind(|| decode_frame::<T>(&frame)).unwrap_or_else(|_| {
                panic!("{name}: decoder panicked on round {round} (seed {seed})")
            });
        }
    }

    #[test]
    fn every_rpc_decoder_survives_hostile_frames() {
        let vote = Vote::new(3, 1);
        let entry = Entry::<crate::TypeConfig> {
            log_id: log_id(3, 10),
            payload: EntryPayload::Normal(Batch(vec![envelope(), envelope()])),
        };
        hammer::<VoteReq>(
            "vote",
            &VoteReq {
                vote,
                last_log_id: Some(log_id(2, 9)),
            },
            1,
        );
        hammer::<AppendReq>(
            "append",
            &AppendReq {
                vote,
                prev_log_id: Some(log_id(3, 9)),
                entries: vec![entry],
                leader_commit: Some(log_id(3, 8)),
            },
            2,
        );
        hammer::<SnapshotReq>(
            "snapshot",
            &SnapshotReq {
                vote,
                meta: SnapshotMeta {
                    last_log_id: Some(log_id(3, 10)),
                    last_membership: Default::default(),
                    snapshot_id: "s-1".into(),
                },
                offset: 0,
                data: vec![1, 2, 3, 4],
                done: false,
            },
            3,
        );
        hammer::<ForwardReq>("forward", &envelope(), 4);
        hammer::<JoinReq>("join", &(4, NodeInfo::default()), 5);
        hammer::<RemoveReq>("remove", &4, 6);
        hammer::<DigestReq>("digest", &RequestId(5), 7);
        hammer::<ForwardReply>("forward reply", &Ok(model::Outcome::Done), 8);
        hammer::<MembershipReply>("membership reply", &Ok(vec![1, 2, 3]), 9);
        hammer::<PingReply>(
            "ping reply",
            &(1, Some(2), Some(1_800_000_000), 1_800_000_000_000),
            10,
        );
        hammer::<EnrollReq>(
            "enroll",
            &crate::enroll::Request {
                node_id: 4,
                csr: crate::pki::new_request().unwrap().1,
                proof: crate::enroll::prove(&"a".repeat(64), 4, b"csr"),
            },
            11,
        );
        hammer::<RenewReq>("renew", &crate::pki::new_request().unwrap().1, 12);
        hammer::<RenewReply>("renew reply", &Ok("-----BEGIN CERTIFICATE-----".into()), 13);
    }

    #[test]
    fn a_nesting_bomb_is_refused_not_followed() {
        // A forward whose row value is spliced into `levels` nested one-element arrays.
        let mut env = envelope();
        if let Op::Documents(DocumentsOp::Write { ops }) = &mut env.op {
            if let DocOp::Create { data, .. } = &mut ops[0].op {
                data.insert("a".into(), Value::Str("BOMB-MARKER".into()));
            }
        }
        let frame = bincode::serialize(&env).unwrap();
        let marker = bincode::serialize(&Value::Str("BOMB-MARKER".into())).unwrap();
        let at = frame
            .windows(marker.len())
            .position(|w| w == marker.as_slice())
            .unwrap();
        let spliced = |levels: usize| {
            let mut f = frame[..at].to_vec();
            for _ in 0..levels {
                f.extend_from_slice(&5u32.to_le_bytes());
                f.extend_from_slice(&1u64.to_le_bytes());
            }
            f.extend_from_slice(&bincode::serialize(&Value::Null).unwrap());
            f.extend_from_slice(&frame[at + marker.len()..]);
            f
        };
        assert!(decode_frame::<ForwardReq>(&spliced(10)).is_ok());
        assert!(decode_frame::<ForwardReq>(&spliced(1_000_000)).is_err());
    }

    #[test]
    fn a_frame_past_its_cap_is_refused_unread() {
        assert!(super::fits::<VoteReq>(VoteReq::MAX).is_ok());
        let e = super::fits::<VoteReq>(VoteReq::MAX + 1).unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert!(super::fits::<AppendReq>(MAX_APPEND + 1).is_err());
    }
}
