//! Nothing in the contract is left unbuilt by accident: every RPC of every `sneakernet.*.v1`
//! service, read from the descriptor set the servers publish, is called on a running node,
//! and none may answer UNIMPLEMENTED (the generated default of a forgotten handler): every RPC
//! of the contract is built (the last, SetWriteProtect, with issue 11). And a drive's token
//! (role DRIVE, the newest role) reaches nothing but its own link and the public RPCs: every
//! role list is an allow-list.

use bytes::{Buf, BufMut};
use prost::Message;
use sneakernet_integration_tests::{Sandbox, authed, backends};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;

/// What a drive's token may call: its link, and the RPCs open to anyone (a token on them is
/// only noted).
const DRIVE_MAY_CALL: &[&str] = &[
    "/sneakernet.gateway.v1.KioskLinkService/Open",
    "/sneakernet.auth.v1.AuthService/Register",
    "/sneakernet.auth.v1.AuthService/Login",
    "/sneakernet.auth.v1.AuthService/Refresh",
    "/sneakernet.auth.v1.AuthService/GetSigningKeys",
    "/sneakernet.auth.v1.AuthService/KioskLogin",
    "/sneakernet.auth.v1.AuthService/DriveLogin",
    "/sneakernet.auth.v1.AuthService/ServiceLogin",
];

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

/// Every method of every sneakernet service: (path, client streaming, server streaming).
fn methods() -> Vec<(String, bool, bool)> {
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
                methods.push((
                    format!("/{package}.{}/{}", service.name(), method.name()),
                    method.client_streaming(),
                    method.server_streaming(),
                ));
            }
        }
    }
    methods
}

/// Calls `path` with an empty message (every field at its default) as `token`; the status
/// of the refusal, or `None` when it answered.
async fn call(
    channel: tonic::transport::Channel,
    token: &str,
    path: &str,
    client_streaming: bool,
    server_streaming: bool,
) -> Option<Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("channel ready");
    let path = PathAndQuery::try_from(path).expect("a method path");
    let one = || tokio_stream::iter(vec![Vec::new()]);
    let answer = match (client_streaming, server_streaming) {
        (false, false) => grpc
            .unary(authed(Vec::new(), token), path, RawCodec)
            .await
            .map(drop),
        (false, true) => grpc
            .server_streaming(authed(Vec::new(), token), path, RawCodec)
            .await
            .map(drop),
        (true, false) => grpc
            .client_streaming(authed(one(), token), path, RawCodec)
            .await
            .map(drop),
        (true, true) => grpc
            .streaming(authed(one(), token), path, RawCodec)
            .await
            .map(drop),
    };
    answer.err()
}

#[tokio::test]
async fn every_rpc_of_the_contract_is_built() {
    let backend = backends().remove(0);
    let sandbox = Sandbox::start(&backend).await;
    let operator = sandbox.operator().await.access_token;
    let user = sandbox.register("contract@example.com").await.access_token;
    let kiosk = sandbox.kiosk_token("K-1").await;
    let drive = sandbox.drive_token("D-1").await;
    let methods = methods();
    assert!(
        methods.len() > 40,
        "the descriptor set lists the whole contract"
    );
    let mut unbuilt = Vec::new();
    for (path, client_streaming, server_streaming) in &methods {
        // Each role in turn: a handler that checks its caller refuses the wrong ones, which a
        // generated default never does; the right one reaches the handler.
        let mut codes = Vec::new();
        for token in [&operator, &user, &kiosk, &drive] {
            let status = call(
                sandbox.channel().await,
                token,
                path,
                *client_streaming,
                *server_streaming,
            )
            .await;
            codes.push(status.map(|s| s.code()));
        }
        // A drive's module may open its own link and call the public RPCs; everything else
        // refuses it by role before looking at the request.
        let drive_answer = codes[3];
        if path == DRIVE_MAY_CALL[0] {
            assert_eq!(
                drive_answer,
                Some(tonic::Code::FailedPrecondition),
                "a drive's token opens a link (and must say Hello first)"
            );
        } else if !DRIVE_MAY_CALL.contains(&path.as_str()) {
            assert_eq!(
                drive_answer,
                Some(tonic::Code::PermissionDenied),
                "{path} must refuse a drive's token"
            );
        }
        if codes.contains(&Some(tonic::Code::Unimplemented)) {
            unbuilt.push(format!("{path}: {codes:?}"));
        }
    }
    assert!(
        unbuilt.is_empty(),
        "RPCs answer UNIMPLEMENTED: {unbuilt:#?}"
    );
    sandbox.stop().await;
}
