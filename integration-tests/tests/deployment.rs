//! Roles in separate processes, as a Kubernetes deployment runs them: a node without the auth
//! role verifies tokens with keys fetched from auth, and follows a key rotation without a gap.

use std::time::Duration;

use sneakernet::NodeRole;
use sneakernet_integration_tests::{
    Backend, PASSWORD, authed, backends, connect, eventually, test_config,
};
use sneakernet_proto::auth::v1 as pb;
use sneakernet_proto::auth::v1::auth_service_client::AuthServiceClient;
use sneakernet_proto::orders::v1::GetOrderRequest;
use sneakernet_proto::orders::v1::order_service_client::OrderServiceClient;
use sneakernet_runtime::Shutdown;
use tonic::Code;

fn kid(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

/// What the orders node answers for `token` on GetOrder with no order id: INVALID_ARGUMENT
/// ([`ACCEPTED`]) means the auth layer let it through to the handler, UNAUTHENTICATED means
/// it did not.
const ACCEPTED: Code = Code::InvalidArgument;

async fn orders_verdict(
    orders: &mut OrderServiceClient<tonic::transport::Channel>,
    token: &str,
) -> Code {
    let status = orders
        .get_order(authed(GetOrderRequest::default(), token))
        .await
        .expect_err("an empty order id never succeeds");
    if status.code() != ACCEPTED {
        eprintln!("orders node refused the token: {}", status.message());
    }
    status.code()
}

#[tokio::test]
async fn node_without_auth_verifies_with_fetched_keys_and_follows_a_rotation() {
    for backend in backends() {
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut auth_config = test_config(&backend, dir_a.path());
        auth_config.auth.keys_refresh_interval = Duration::from_millis(200);
        // The test polls Login until the rotation takes effect.
        auth_config.rate_limit.attempts_per_account = 10_000;
        let auth_node = sneakernet::node::start(
            auth_config.clone(),
            &[NodeRole::Auth],
            Shutdown::new(),
            None,
        )
        .await
        .expect("auth node");

        let mut orders_config = test_config(&backend, dir_b.path());
        orders_config.auth.url = Some(format!("http://{}", auth_node.address));
        orders_config.auth.keys_refresh_interval = Duration::from_millis(200);
        // Orders logs in as a service (to read kiosk events) with a credential from auth.
        let secret_file = dir_b.path().join("orders.secret");
        let secret = sneakernet_auth::issue_service_secret(&auth_config, "orders")
            .await
            .unwrap();
        std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
        orders_config.auth.service_secret_file = Some(secret_file);
        let orders_node = sneakernet::node::start(
            orders_config.clone(),
            // Orders reads the content catalog and commands kiosks: those peers run beside it.
            &[NodeRole::Orders, NodeRole::Gateway, NodeRole::Content],
            Shutdown::new(),
            None,
        )
        .await
        .expect("orders node");

        let mut auth = AuthServiceClient::new(connect(auth_node.address).await);
        let mut orders = OrderServiceClient::new(connect(orders_node.address).await);
        let email = format!("split-{}@example.com", uuid::Uuid::new_v4().simple());
        let session = auth
            .register(pb::RegisterRequest {
                email: email.clone(),
                password: PASSWORD.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .session
            .unwrap();

        eventually(
            Duration::from_secs(10),
            "the orders node to fetch the signing keys",
            || {
                let (mut orders, token) = (orders.clone(), session.access_token.clone());
                async move { orders_verdict(&mut orders, &token).await == ACCEPTED }
            },
        )
        .await;
        let mut forged = session.access_token.clone();
        forged.replace_range(forged.len() - 4.., "AAAA");
        assert_eq!(
            orders_verdict(&mut orders, &forged).await,
            Code::Unauthenticated,
            "{backend}"
        );

        // Rotate: the new key is published now and signs from one second on.
        let old_kid = kid(&session.access_token);
        let (new_kid, _) =
            sneakernet_auth::rotate_signing_key(&auth_config, Duration::from_secs(1))
                .await
                .expect("rotate");
        assert_ne!(new_kid, old_kid);
        let login = || {
            let mut auth = auth.clone();
            let email = email.clone();
            async move {
                auth.login(pb::LoginRequest {
                    email,
                    password: PASSWORD.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .session
                .unwrap()
                .access_token
            }
        };
        eventually(
            Duration::from_secs(15),
            "the auth node to sign with the new key",
            || {
                let (login, new_kid) = (login(), new_kid.clone());
                async move { kid(&login.await) == new_kid }
            },
        )
        .await;
        let fresh = login().await;
        assert_eq!(kid(&fresh), new_kid);
        // The orders node knew the new key before it signed anything: accepted at once.
        assert_eq!(
            orders_verdict(&mut orders, &fresh).await,
            ACCEPTED,
            "{backend}: new key"
        );
        assert_eq!(
            orders_verdict(&mut orders, &session.access_token).await,
            ACCEPTED,
            "{backend}: tokens of the retired key verify until they expire"
        );

        for node in [orders_node, auth_node] {
            node.stop();
            node.wait().await.expect("clean stop");
        }
        sneakernet_integration_tests::drop_schemas(&auth_config).await;
        sneakernet_integration_tests::drop_schemas(&orders_config).await;
    }
}

#[tokio::test]
async fn auth_replicas_starting_together_on_an_empty_database_agree_on_one_key() {
    // Replicas share a database only on Postgres; SQLite is the single-process embedded default.
    for backend in backends()
        .into_iter()
        .filter(|b| matches!(b, Backend::Postgres(_)))
    {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(&backend, dir.path());
        let (a, b) = tokio::join!(
            sneakernet::node::start(config.clone(), &[NodeRole::Auth], Shutdown::new(), None),
            sneakernet::node::start(config.clone(), &[NodeRole::Auth], Shutdown::new(), None),
        );
        let (a, b) = (a.expect("replica a"), b.expect("replica b"));
        let mut kids = Vec::new();
        for node in [&a, &b] {
            let keys = AuthServiceClient::new(connect(node.address).await)
                .get_signing_keys(pb::GetSigningKeysRequest {})
                .await
                .unwrap()
                .into_inner()
                .keys;
            kids.push(keys.into_iter().map(|k| k.kid).collect::<Vec<_>>());
        }
        assert_eq!(
            kids[0],
            vec![sneakernet_auth::store::FIRST_KEY_ID.to_owned()],
            "{backend}"
        );
        assert_eq!(kids[0], kids[1], "{backend}");
        for node in [a, b] {
            node.stop();
            node.wait().await.expect("clean stop");
        }
        sneakernet_integration_tests::drop_schemas(&config).await;
    }
}
