//! The gRPC codec of every veritrace service: tonic-prost's, except that a message that
//! does not parse is `INVALID_ARGUMENT` naming the decode error.
//!
//! tonic-prost answers such a request `INTERNAL`, after gRPC's status-code table, but to a
//! client that code means "the server's fault, retry later", and veritrace promises that
//! `INTERNAL` is never caused by the request (docs/api.md). The generated clients and
//! servers use this codec (`codec_path` in build.rs), so a garbled reply seen by a client
//! is `INVALID_ARGUMENT` too.

use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::{ProstCodec, ProstDecoder};

/// tonic-prost's codec with decode failures as `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct StrictCodec<T, U> {
    inner: ProstCodec<T, U>,
}

impl<T, U> Default for StrictCodec<T, U> {
    fn default() -> Self {
        StrictCodec { inner: ProstCodec::default() }
    }
}

impl<T, U> Codec for StrictCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.inner.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder { inner: self.inner.decoder() }
    }
}

/// tonic-prost's decoder with decode failures as `INVALID_ARGUMENT`.
#[derive(Debug)]
pub struct StrictDecoder<U> {
    inner: ProstDecoder<U>,
}

impl<U: Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.inner.decode(buf).map_err(|s| match s.code() {
            Code::Internal => Status::invalid_argument(format!("malformed protobuf message: {}", s.message())),
            _ => s,
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}
