//! A tonic codec that carries serde types as bincode.

use bytes::{Buf, BufMut};
use serde::{de::DeserializeOwned, Serialize};
use std::marker::PhantomData;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

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
    D: DeserializeOwned + Send + 'static,
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

impl<T: DeserializeOwned> Decoder for BincodeDecoder<T> {
    type Item = T;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<T>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        bincode::deserialize(&bytes)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("decode: {e}")))
    }
}
