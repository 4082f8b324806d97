//! Nothing in the contract is left unbuilt by accident: every RPC of every `sneakernet.*.v1`
//! service, read from the descriptor set the servers publish, is called on a running node,
//! and none may answer UNIMPLEMENTED (the generated default of a forgotten handler): every RPC
//! of the contract is built (the last, SetWriteProtect, with issue 11). And a drive's token
//! (role DRIVE, the newest role) reaches nothing but its own link and the public RPCs: every
//! role list is an allow-list.

use sneakernet_integration_tests::raw_rpc::{call, methods};
use sneakernet_integration_tests::{Sandbox, backends};

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
    for method in &methods {
        let path = &method.path;
        // Each role in turn: a handler that checks its caller refuses the wrong ones, which a
        // generated default never does; the right one reaches the handler.
        let mut codes = Vec::new();
        for token in [&operator, &user, &kiosk, &drive] {
            let status = call(sandbox.channel().await, Some(token), method).await;
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
