//! Calls any method of the contract by its path with raw message bytes, so a test can walk
//! every RPC the descriptor set declares (the contract and authorization matrices) without a
//! generated client per service.

use bytes::{Buf, BufMut};
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

use crate::authed;

/// One method of a `sneakernet.*` service, as the descriptor set declares it.
#[derive(Clone, Debug)]
pub struct Method {
    /// `/package.Service/Method`.
    pub path: String,
    /// The client sends a stream.
    pub client_streaming: bool,
    /// The server answers with a stream.
    pub server_streaming: bool,
}

/// Every method of every `sneakernet.*` service in the descriptor set the servers publish.
pub fn methods() -> Vec<Method> {
    let set = prost_types::FileDescriptorSet::decode(sneakernet_proto::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set decodes");
    let mut methods = Vec::new();
    for file in set.file {
        let package = file.package().to_owned();
        if !package.starts_with("sneakernet.") {
            continue;
        }
        for service in &file.service {
            for method in &service.method {
                methods.push(Method {
                    path: format!("/{package}.{}/{}", service.name(), method.name()),
                    client_streaming: method.client_streaming(),
                    server_streaming: method.server_streaming(),
                });
            }
        }
    }
    methods
}

/// Calls `method` with an empty message (every field at its default) as `token` (none:
/// anonymous); the status of the refusal, or `None` when it answered. A streaming answer
/// counts as answered once its headers arrive.
pub async fn call(channel: Channel, token: Option<&str>, method: &Method) -> Option<Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("channel ready");
    let path = PathAndQuery::try_from(method.path.as_str()).expect("a method path");
    fn request<T>(body: T, token: Option<&str>) -> tonic::Request<T> {
        match token {
            Some(token) => authed(body, token),
            None => tonic::Request::new(body),
        }
    }
    let one = || tokio_stream::iter(vec![Vec::new()]);
    let answer = match (method.client_streaming, method.server_streaming) {
        (false, false) => grpc
            .unary(request(Vec::new(), token), path, RawCodec)
            .await
            .map(drop),
        (false, true) => grpc
            .server_streaming(request(Vec::new(), token), path, RawCodec)
            .await
            .map(drop),
        (true, false) => grpc
            .client_streaming(request(one(), token), path, RawCodec)
            .await
            .map(drop),
        (true, true) => grpc
            .streaming(request(one(), token), path, RawCodec)
            .await
            .map(drop),
    };
    answer.err()
}

/// Sends and receives message bytes as they are, so any method can be called.
#[derive(Clone, Copy, Debug, Default)]
struct RawCodec;

#[derive(Debug)]
struct RawEncoder;

#[derive(Debug)]
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let bytes = src.chunk().to_vec();
        src.advance(bytes.len());
        Ok(Some(bytes))
    }
}
