//! The authorization matrix (issue 12): every RPC of the contract, read from the descriptor
//! set the servers publish, called as anonymous, a user, an operator, a kiosk, a drive's
//! module and each service credential; who reaches each handler lives in one table,
//! [`ACCESS`], and an RPC without a row fails the test. Then every protected RPC with broken
//! tokens (expired, `alg: none`, HS256 signed with the published public key, garbage), and a
//! second user on the first user's order: NOT_FOUND, as if it did not exist. Forged tokens
//! that differ from real ones in one claim each are `auth::expired_future_foreign_…`; a
//! kiosk's link never carries another kiosk's commands is `gateway::…` (the link's identity
//! is its token's subject, never a field a kiosk sends).

use std::collections::BTreeMap;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sneakernet_integration_tests::raw_rpc::{call, methods};
use sneakernet_integration_tests::rentals::{
    self, SimKiosk, create_rental, customer_with_deposit, drive, drive_type, rental_request,
    scan_until_available, start_priced, wait_for_state,
};
use sneakernet_integration_tests::{Sandbox, authed, backends};
use sneakernet_proto::auth::v1 as auth;
use sneakernet_proto::common::v1 as common;
use sneakernet_proto::orders::v1 as pb;
use sneakernet_proto::orders::v1::OrderState as S;
use sneakernet_proto::orders::v1::order_service_client::OrderServiceClient;
use sneakernet_runtime::Role;
use sneakernet_runtime::caller::Claims;
use tonic::Code;

/// Who calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    Anonymous,
    User,
    Operator,
    Kiosk,
    Drive,
    OrdersService,
    ContentService,
}

use Who::*;

/// Every caller but the anonymous one.
const SIGNED_IN: &[Who] = &[User, Operator, Kiosk, Drive, OrdersService, ContentService];

/// Everyone, tokens or not: the RPCs that hand out tokens and keys.
const PUBLIC: &[Who] = &[
    Anonymous,
    User,
    Operator,
    Kiosk,
    Drive,
    OrdersService,
    ContentService,
];

/// Who reaches each RPC's handler. Everyone else is refused before it: anonymous callers
/// with UNAUTHENTICATED, signed-in ones with PERMISSION_DENIED.
const ACCESS: &[(&str, &[Who])] = &[
    ("/sneakernet.auth.v1.AuthService/Register", PUBLIC),
    ("/sneakernet.auth.v1.AuthService/Login", PUBLIC),
    ("/sneakernet.auth.v1.AuthService/Refresh", PUBLIC),
    ("/sneakernet.auth.v1.AuthService/Logout", &[User, Operator]),
    ("/sneakernet.auth.v1.AuthService/GetSigningKeys", PUBLIC),
    (
        "/sneakernet.auth.v1.AuthService/CreateOperator",
        &[Operator],
    ),
    (
        "/sneakernet.auth.v1.AuthService/IssueKioskCredential",
        &[Operator],
    ),
    (
        "/sneakernet.auth.v1.AuthService/RevokeKioskCredential",
        &[Operator],
    ),
    ("/sneakernet.auth.v1.AuthService/KioskLogin", PUBLIC),
    (
        "/sneakernet.auth.v1.AuthService/IssueServiceCredential",
        &[Operator],
    ),
    ("/sneakernet.auth.v1.AuthService/ServiceLogin", PUBLIC),
    (
        "/sneakernet.auth.v1.AuthService/IssueDriveCredential",
        &[Operator],
    ),
    (
        "/sneakernet.auth.v1.AuthService/RevokeDriveCredential",
        &[Operator],
    ),
    ("/sneakernet.auth.v1.AuthService/DriveLogin", PUBLIC),
    (
        "/sneakernet.content.v1.ContentService/CreatePackage",
        &[Operator],
    ),
    (
        "/sneakernet.content.v1.ContentService/UploadFile",
        &[Operator],
    ),
    (
        "/sneakernet.content.v1.ContentService/GetUploadStatus",
        &[Operator],
    ),
    // Kiosks download what they provision; the manifest and chunks are theirs and operators'.
    (
        "/sneakernet.content.v1.ContentService/GetManifest",
        &[Operator, Kiosk],
    ),
    (
        "/sneakernet.content.v1.ContentService/DownloadChunks",
        &[Operator, Kiosk],
    ),
    // The catalogue: users choose content, orders prices it, kiosks and operators see it.
    (
        "/sneakernet.content.v1.ContentService/ListPackages",
        &[User, Operator, Kiosk, OrdersService, ContentService],
    ),
    (
        "/sneakernet.content.v1.ContentService/GetPackage",
        &[User, Operator, Kiosk, OrdersService, ContentService],
    ),
    // A device opens its own link; which device is its token's subject.
    (
        "/sneakernet.gateway.v1.KioskLinkService/Open",
        &[Kiosk, Drive],
    ),
    // Commands: operators, and orders for the kinds it needs (grants.rs); content none.
    (
        "/sneakernet.gateway.v1.DeviceCommandService/SendCommand",
        &[Operator, OrdersService],
    ),
    (
        "/sneakernet.gateway.v1.DeviceCommandService/GetCommand",
        &[Operator, OrdersService],
    ),
    (
        "/sneakernet.gateway.v1.DeviceCommandService/ForceEject",
        &[Operator],
    ),
    (
        "/sneakernet.gateway.v1.DeviceCommandService/RequestInventory",
        &[Operator, OrdersService],
    ),
    (
        "/sneakernet.gateway.v1.DeviceEventService/Subscribe",
        &[Operator, OrdersService],
    ),
    (
        "/sneakernet.gateway.v1.DeviceEventService/ListRefusedMessages",
        &[Operator, OrdersService],
    ),
    // What a renter does; operators do not rent.
    ("/sneakernet.orders.v1.OrderService/ScanKiosk", &[User]),
    ("/sneakernet.orders.v1.OrderService/PayDeposit", &[User]),
    ("/sneakernet.orders.v1.OrderService/RefundDeposit", &[User]),
    ("/sneakernet.orders.v1.OrderService/CreateRental", &[User]),
    (
        "/sneakernet.orders.v1.OrderService/CreateReservation",
        &[User],
    ),
    (
        "/sneakernet.orders.v1.OrderService/CancelReservation",
        &[User],
    ),
    (
        "/sneakernet.orders.v1.OrderService/CollectReservation",
        &[User],
    ),
    // What support reads or changes for a renter too.
    (
        "/sneakernet.orders.v1.OrderService/GetOrder",
        &[User, Operator],
    ),
    (
        "/sneakernet.orders.v1.OrderService/ListOrders",
        &[User, Operator],
    ),
    (
        "/sneakernet.orders.v1.OrderService/WatchOrder",
        &[User, Operator],
    ),
    (
        "/sneakernet.orders.v1.OrderService/FindKiosks",
        &[User, Operator],
    ),
    (
        "/sneakernet.orders.v1.OrderService/SetWriteProtect",
        &[User, Operator],
    ),
    (
        "/sneakernet.orders.v1.FleetService/RegisterKiosk",
        &[Operator],
    ),
    ("/sneakernet.orders.v1.FleetService/ListKiosks", &[Operator]),
    ("/sneakernet.orders.v1.FleetService/GetKiosk", &[Operator]),
    ("/sneakernet.orders.v1.FleetService/SetPricing", &[Operator]),
    ("/sneakernet.orders.v1.FleetService/Audit", &[Operator]),
    (
        "/sneakernet.orders.v1.FleetService/ListParkedEvents",
        &[Operator],
    ),
    (
        "/sneakernet.orders.v1.FleetService/RetryParkedEvent",
        &[Operator],
    ),
    (
        "/sneakernet.orders.v1.FleetService/DropParkedEvent",
        &[Operator],
    ),
];

/// What the caller's answer says about authorization: it reached the handler (any answer
/// but the two refusals; the empty request is usually INVALID_ARGUMENT there), or it was
/// refused before it.
fn outcome(status: Option<&tonic::Status>) -> Option<Code> {
    match status.map(tonic::Status::code) {
        Some(code @ (Code::Unauthenticated | Code::PermissionDenied | Code::Unimplemented)) => {
            Some(code)
        }
        _ => None,
    }
}

fn expected(who: Who, allowed: &[Who]) -> Option<Code> {
    if allowed.contains(&who) {
        None
    } else if who == Anonymous {
        Some(Code::Unauthenticated)
    } else {
        Some(Code::PermissionDenied)
    }
}

fn show(code: Option<Code>) -> String {
    code.map_or_else(|| "handler".to_owned(), |code| format!("{code:?}"))
}

/// Signs `claims` with HMAC-SHA256 under `secret`: what an attacker does with a published
/// Ed25519 public key when a verifier trusts the token's `alg`.
fn hs256(kid: &str, secret: &[u8], claims: &Claims) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret)).expect("hs256")
}

/// A token with `alg: none` and no signature.
fn unsigned(kid: &str, claims: &Claims) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = serde_json::json!({ "alg": "none", "typ": "JWT", "kid": kid });
    format!(
        "{}.{}.",
        b64.encode(serde_json::to_vec(&header).expect("header")),
        b64.encode(serde_json::to_vec(claims).expect("claims"))
    )
}

/// The claims of a live operator token for `sandbox`, as auth would issue them.
fn operator_claims(sandbox: &Sandbox, subject: &str, expires_in: i64) -> Claims {
    let now = chrono::Utc::now().timestamp();
    Claims {
        sub: subject.into(),
        role: Role::Operator,
        aud: sandbox.config.auth.audience.clone(),
        iss: sandbox.config.auth.issuer.clone(),
        exp: now + expires_in,
        nbf: now - 5,
        iat: now - 5,
        jti: "authz-matrix".into(),
    }
}

#[tokio::test]
async fn every_rpc_admits_exactly_the_callers_its_row_names_and_refuses_broken_tokens() {
    let backend = backends().remove(0);
    let sandbox = Sandbox::start(&backend).await;
    let operator_session = sandbox.operator().await;
    let operator = operator_session.access_token.clone();
    let tokens: BTreeMap<Who, String> = [
        (
            User,
            sandbox.register("authz@example.com").await.access_token,
        ),
        (Operator, operator.clone()),
        (Kiosk, sandbox.kiosk_token("K-1").await),
        (Drive, sandbox.drive_token("D-1").await),
        (
            OrdersService,
            sandbox.service_token(&operator, "orders").await,
        ),
        (
            ContentService,
            sandbox.service_token(&operator, "content").await,
        ),
    ]
    .into();
    let access: BTreeMap<&str, &[Who]> = ACCESS.iter().copied().collect();
    let methods = methods();
    let without_row: Vec<&str> = methods
        .iter()
        .map(|m| m.path.as_str())
        .filter(|path| !access.contains_key(path))
        .collect();
    assert!(
        without_row.is_empty(),
        "RPCs without a row in ACCESS (say who may call them): {without_row:#?}"
    );
    assert_eq!(
        ACCESS.len(),
        methods.len(),
        "ACCESS names RPCs the contract no longer has"
    );

    let mut wrong = Vec::new();
    for method in &methods {
        let allowed = access[method.path.as_str()];
        let mut callers = vec![(Anonymous, None)];
        callers.extend(
            SIGNED_IN
                .iter()
                .map(|who| (*who, Some(tokens[who].as_str()))),
        );
        for (who, token) in callers {
            let status = call(sandbox.channel().await, token, method).await;
            let (got, want) = (outcome(status.as_ref()), expected(who, allowed));
            if got != want {
                wrong.push(format!(
                    "{} as {who:?}: {} (expected {}): {status:?}",
                    method.path,
                    show(got),
                    show(want)
                ));
            }
        }
    }

    // Broken tokens: refused on every protected RPC, and only noted on the public ones.
    let (kid, _) = sandbox.signing_key().await;
    let public_key = sandbox
        .auth()
        .await
        .get_signing_keys(auth::GetSigningKeysRequest {})
        .await
        .expect("signing keys")
        .into_inner()
        .keys
        .into_iter()
        .find(|key| key.kid == kid)
        .expect("the active key is published")
        .public_key;
    let live = operator_claims(&sandbox, &operator_session.user_id, 600);
    let expired = operator_claims(&sandbox, &operator_session.user_id, -3600);
    let broken = [
        ("alg none", unsigned(&kid, &live)),
        ("HS256 with the public key", hs256(&kid, &public_key, &live)),
        ("garbage", "not-a-jwt".to_owned()),
        ("expired, otherwise an operator's", {
            let (kid, seed) = sandbox.signing_key().await;
            sign_ed25519(&kid, &seed, &expired)
        }),
    ];
    for method in &methods {
        let public = access[method.path.as_str()].contains(&Anonymous);
        for (name, token) in &broken {
            let status = call(sandbox.channel().await, Some(token), method).await;
            let got = status.as_ref().map(tonic::Status::code);
            let refused = got == Some(Code::Unauthenticated);
            if refused == public {
                wrong.push(format!(
                    "{} with a broken token ({name}): {status:?}",
                    method.path
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    sandbox.stop().await;
}

/// Signs `claims` with the real Ed25519 key `seed` under `kid`, as auth does.
fn sign_ed25519(kid: &str, seed: &[u8; 32], claims: &Claims) -> String {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let der = ed25519_dalek::SigningKey::from_bytes(seed)
        .to_pkcs8_der()
        .expect("pkcs8");
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(der.as_bytes())).expect("sign")
}

/// Another user's order does not exist for you: every RPC that names an order answers a
/// second user NOT_FOUND (never PERMISSION_DENIED, which would confirm it), lists leave it
/// out, and the owner's order is unchanged.
#[tokio::test]
async fn another_user_s_order_is_not_found_by_every_rpc_that_names_an_order() {
    for backend in backends() {
        let (sandbox, channel, operator) = start_priced(&backend, &[common::ItemKind::Drive]).await;
        let kiosk = SimKiosk::healthy(
            sandbox.node().address,
            &operator,
            "K-AUTHZ",
            vec![Some(drive("D-1")), None],
        )
        .await;
        let owner = customer_with_deposit(&channel).await;
        let offer = scan_until_available(&channel, &owner.token, &kiosk, &drive_type(), 1).await;
        let order = create_rental(
            &channel,
            &owner.token,
            rental_request(&offer, &drive_type(), 1, None, "owner"),
        )
        .await
        .expect("the owner rents");
        let lent = wait_for_state(&channel, &owner.token, &order.order_id, &[S::Lent]).await;
        let other = customer_with_deposit(&channel).await;
        let id = order.order_id.clone();
        let mut orders = OrderServiceClient::new(channel.clone());
        let t = &other.token;

        let answers = [
            (
                "GetOrder",
                orders
                    .get_order(authed(
                        pb::GetOrderRequest {
                            order_id: id.clone(),
                        },
                        t,
                    ))
                    .await
                    .map(drop),
            ),
            (
                "WatchOrder",
                orders
                    .watch_order(authed(
                        pb::WatchOrderRequest {
                            order_id: id.clone(),
                        },
                        t,
                    ))
                    .await
                    .map(drop),
            ),
            (
                "SetWriteProtect",
                orders
                    .set_write_protect(authed(
                        pb::SetWriteProtectRequest {
                            order_id: id.clone(),
                            on: true,
                        },
                        t,
                    ))
                    .await
                    .map(drop),
            ),
            (
                "CancelReservation",
                orders
                    .cancel_reservation(authed(
                        pb::CancelReservationRequest {
                            order_id: id.clone(),
                        },
                        t,
                    ))
                    .await
                    .map(drop),
            ),
            (
                "CollectReservation",
                orders
                    .collect_reservation(authed(
                        pb::CollectReservationRequest {
                            order_id: id.clone(),
                            qr_payload: kiosk.qr(),
                        },
                        t,
                    ))
                    .await
                    .map(drop),
            ),
        ];
        for (rpc, answer) in answers {
            let status = answer.expect_err(rpc);
            assert_eq!(
                status.code(),
                Code::NotFound,
                "{backend}: {rpc}: {status:?}"
            );
        }
        let listed = orders
            .list_orders(authed(pb::ListOrdersRequest::default(), t))
            .await
            .expect("list")
            .into_inner();
        assert!(
            listed.orders.iter().all(|o| o.order_id != id),
            "{backend}: another user's list leaves the order out"
        );
        let after = orders
            .get_order(authed(
                pb::GetOrderRequest {
                    order_id: id.clone(),
                },
                &owner.token,
            ))
            .await
            .expect("the owner reads it")
            .into_inner()
            .order
            .expect("order");
        assert_eq!(after.state, S::Lent as i32, "{backend}");
        assert_eq!(after.item_id, lent.item_id, "{backend}");
        assert!(
            !after.write_protected || lent.write_protected,
            "{backend}: the other user's toggle did nothing"
        );
        rentals::assert_audit_clean(&channel, &operator, &backend.to_string()).await;
        sandbox.stop().await;
    }
}
