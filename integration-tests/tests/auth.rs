//! The auth service end to end, through gRPC only: sessions, refresh rotation and reuse
//! detection, forged and expired tokens, roles, input validation, rate limits, kiosk
//! credentials. Every test runs on each backend of this run (SQLite, and Postgres when
//! `DATABASE_URL` is set).

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sneakernet_integration_tests::{Backend, PASSWORD, Sandbox, authed, backends};
use sneakernet_proto::auth::v1 as pb;
use sneakernet_runtime::Role;
use sneakernet_runtime::caller::Claims;
use tonic::Code;
use tonic_types::StatusExt;

fn email() -> String {
    format!("user-{}@example.com", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn register_login_refresh_and_logout_round_trip() {
    for backend in backends() {
        let sandbox = Sandbox::start(&backend).await;
        let mut auth = sandbox.auth().await;
        let address = email();

        let registered = sandbox.register(&address).await;
        assert_eq!(registered.role, pb::Role::User as i32);
        assert!(!registered.access_token.is_empty() && !registered.refresh_token.is_empty());

        let login = auth
            .login(pb::LoginRequest {
                email: address.to_uppercase(),
                password: PASSWORD.into(),
            })
            .await
            .expect("login with the email in another case")
            .into_inner()
            .session
            .unwrap();
        assert_eq!(login.user_id, registered.user_id);

        let wrong = auth
            .login(pb::LoginRequest {
                email: address.clone(),
                password: "not the password".into(),
            })
            .await;
        assert_eq!(
            wrong.unwrap_err().code(),
            Code::Unauthenticated,
            "{backend}"
        );

        let refreshed = auth
            .refresh(pb::RefreshRequest {
                refresh_token: login.refresh_token.clone(),
            })
            .await
            .expect("refresh")
            .into_inner()
            .session
            .unwrap();
        assert_ne!(
            refreshed.refresh_token, login.refresh_token,
            "{backend}: rotation issues a new token"
        );
        assert_eq!(refreshed.user_id, registered.user_id);

        auth.logout(authed(
            pb::LogoutRequest {
                refresh_token: refreshed.refresh_token.clone(),
            },
            &refreshed.access_token,
        ))
        .await
        .expect("logout");
        let after = auth
            .refresh(pb::RefreshRequest {
                refresh_token: refreshed.refresh_token,
            })
            .await;
        assert_eq!(
            after.unwrap_err().code(),
            Code::Unauthenticated,
            "{backend}: logged-out session is dead"
        );

        // The registration session is a separate family and still works.
        auth.refresh(pb::RefreshRequest {
            refresh_token: registered.refresh_token,
        })
        .await
        .expect("other sessions survive a logout");
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn reused_refresh_token_revokes_the_whole_family() {
    for backend in backends() {
        let sandbox = Sandbox::start(&backend).await;
        let mut auth = sandbox.auth().await;
        let first = sandbox.register(&email()).await;

        let second = auth
            .refresh(pb::RefreshRequest {
                refresh_token: first.refresh_token.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .session
            .unwrap();
        // An attacker replays the spent token.
        let replay = auth
            .refresh(pb::RefreshRequest {
                refresh_token: first.refresh_token.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(replay.code(), Code::Unauthenticated, "{backend}");
        assert!(
            replay.message().contains("already used"),
            "{backend}: {}",
            replay.message()
        );

        // The legitimate, newer token of the same family is revoked too.
        let newer = auth
            .refresh(pb::RefreshRequest {
                refresh_token: second.refresh_token,
            })
            .await
            .unwrap_err();
        assert_eq!(newer.code(), Code::Unauthenticated, "{backend}");
        assert!(
            newer.message().contains("revoked"),
            "{backend}: {}",
            newer.message()
        );

        let unknown = auth
            .refresh(pb::RefreshRequest {
                refresh_token: "made-up".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(unknown.code(), Code::Unauthenticated);
        sandbox.stop().await;
    }
}

/// Signs `claims` like the auth service would, with `seed` under key id `kid`.
fn forge(kid: &str, seed: &[u8; 32], claims: &Claims) -> String {
    let der = SigningKey::from_bytes(seed).to_pkcs8_der().unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(der.as_bytes())).unwrap()
}

fn operator_claims(sandbox: &Sandbox, subject: &str) -> Claims {
    let now = chrono::Utc::now().timestamp();
    Claims {
        sub: subject.into(),
        role: Role::Operator,
        aud: sandbox.config.auth.audience.clone(),
        iss: sandbox.config.auth.issuer.clone(),
        exp: now + 600,
        nbf: now - 5,
        iat: now - 5,
        jti: "forged".into(),
    }
}

async fn create_operator_with(sandbox: &Sandbox, token: &str) -> Result<(), tonic::Status> {
    sandbox
        .auth()
        .await
        .create_operator(authed(
            pb::CreateOperatorRequest {
                email: email(),
                password: PASSWORD.into(),
            },
            token,
        ))
        .await
        .map(drop)
}

#[tokio::test]
async fn expired_future_foreign_tampered_and_other_key_tokens_are_unauthenticated() {
    for backend in backends() {
        let sandbox = Sandbox::start(&backend).await;
        let operator = sandbox.operator().await;
        let (kid, seed) = sandbox.signing_key().await;
        let valid = operator_claims(&sandbox, &operator.user_id);

        // Control: the forging works, so each refusal below is due to its one defect.
        create_operator_with(&sandbox, &forge(&kid, &seed, &valid))
            .await
            .expect("a correctly signed token works");

        let mut expired = valid.clone();
        (expired.exp, expired.nbf, expired.iat) =
            (valid.exp - 7200, valid.nbf - 7200, valid.iat - 7200);
        let mut future = valid.clone();
        (future.nbf, future.iat, future.exp) =
            (valid.nbf + 3600, valid.iat + 3600, valid.exp + 3600);
        let mut foreign = valid.clone();
        foreign.aud = "some-other-system".into();
        let mut wrong_issuer = valid.clone();
        wrong_issuer.iss = "mallory".into();

        let genuine = forge(&kid, &seed, &valid);
        let (head, rest) = genuine.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let mut elevated = valid.clone();
        elevated.sub = "someone-else".into();
        let tampered = format!(
            "{head}.{}.{signature}",
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                serde_json::to_vec(&elevated).unwrap()
            )
        );

        let cases = [
            ("expired", forge(&kid, &seed, &expired), "expired"),
            (
                "not yet valid",
                forge(&kid, &seed, &future),
                "not valid yet",
            ),
            ("wrong audience", forge(&kid, &seed, &foreign), "audience"),
            ("wrong issuer", forge(&kid, &seed, &wrong_issuer), "issuer"),
            ("tampered payload", tampered, "signature"),
            (
                "other key, same kid",
                forge(&kid, &[7u8; 32], &valid),
                "signature",
            ),
            (
                "unknown kid",
                forge("no-such-key", &seed, &valid),
                "unknown key",
            ),
            ("garbage", "not-a-jwt".to_owned(), "malformed"),
        ];
        for (name, token, says) in cases {
            let status = create_operator_with(&sandbox, &token).await.unwrap_err();
            assert_eq!(
                status.code(),
                Code::Unauthenticated,
                "{backend}: {name}: {status:?}"
            );
            assert!(
                status.message().contains(says),
                "{backend}: {name}: {}",
                status.message()
            );
        }

        sandbox.stop().await;
    }
}

#[tokio::test]
async fn users_get_permission_denied_on_operator_rpcs() {
    for backend in backends() {
        let sandbox = Sandbox::start(&backend).await;
        let user = sandbox.register(&email()).await;
        let mut auth = sandbox.auth().await;

        let status = create_operator_with(&sandbox, &user.access_token)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{backend}");
        let status = auth
            .issue_kiosk_credential(authed(
                pb::IssueKioskCredentialRequest {
                    kiosk_id: "K-1".into(),
                },
                &user.access_token,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{backend}");
        let status = auth
            .revoke_kiosk_credential(authed(
                pb::RevokeKioskCredentialRequest {
                    kiosk_id: "K-1".into(),
                },
                &user.access_token,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{backend}");

        // Without any token the same calls are UNAUTHENTICATED, not PERMISSION_DENIED.
        let status = auth
            .create_operator(pb::CreateOperatorRequest {
                email: email(),
                password: PASSWORD.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{backend}");

        // An operator may.
        let operator = sandbox.operator().await;
        create_operator_with(&sandbox, &operator.access_token)
            .await
            .expect("operator creates operator");
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn kiosk_credentials_log_in_only_as_that_kiosk_and_stop_when_revoked() {
    for backend in backends() {
        let sandbox = Sandbox::start(&backend).await;
        let operator = sandbox.operator().await;
        let mut auth = sandbox.auth().await;
        let issue = |kiosk: &str| {
            authed(
                pb::IssueKioskCredentialRequest {
                    kiosk_id: kiosk.into(),
                },
                &operator.access_token,
            )
        };

        let first = auth
            .issue_kiosk_credential(issue("K-0001"))
            .await
            .unwrap()
            .into_inner();
        let login = auth
            .kiosk_login(pb::KioskLoginRequest {
                kiosk_id: "K-0001".into(),
                secret: first.secret.clone(),
            })
            .await
            .expect("kiosk login")
            .into_inner();
        let claims = sandbox
            .node()
            .verifier
            .verify(&login.access_token)
            .expect("valid kiosk token");
        assert_eq!(
            (claims.sub.as_str(), claims.role),
            ("K-0001", Role::Kiosk),
            "{backend}"
        );

        // The secret of one kiosk does not open another.
        auth.issue_kiosk_credential(issue("K-0002")).await.unwrap();
        let status = auth
            .kiosk_login(pb::KioskLoginRequest {
                kiosk_id: "K-0002".into(),
                secret: first.secret.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{backend}");

        // A kiosk token cannot act as a user or an operator.
        let status = auth
            .logout(authed(
                pb::LogoutRequest {
                    refresh_token: "x".into(),
                },
                &login.access_token,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{backend}");
        let status = create_operator_with(&sandbox, &login.access_token)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{backend}");

        // Re-issuing replaces the secret.
        let second = auth
            .issue_kiosk_credential(issue("K-0001"))
            .await
            .unwrap()
            .into_inner();
        assert_ne!(second.secret, first.secret);
        let status = auth
            .kiosk_login(pb::KioskLoginRequest {
                kiosk_id: "K-0001".into(),
                secret: first.secret,
            })
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "{backend}: old secret stops working"
        );

        // The kiosk agent proves the same identity from its configuration file.
        let dir = tempfile::tempdir().unwrap();
        let credential_file = dir.path().join("kiosk.secret");
        std::fs::write(&credential_file, format!("{}\n", second.secret)).unwrap();
        let agent = sneakernet_kiosk_agent::config::AgentConfig {
            content: Default::default(),
            kiosk_id: "K-0001".into(),
            credential_file,
            auth_url: format!("http://{}", sandbox.node().address),
            gateway_url: format!("http://{}", sandbox.node().address),
            data_dir: dir.path().join("data"),
            allow_plaintext: false,
            qr_secret_file: None,
            link: Default::default(),
            simulation: None,
        };

        let expires = sneakernet_kiosk_agent::login(&agent)
            .await
            .expect("agent login");
        assert!(expires > chrono::Utc::now().timestamp(), "{backend}");

        auth.revoke_kiosk_credential(authed(
            pb::RevokeKioskCredentialRequest {
                kiosk_id: "K-0001".into(),
            },
            &operator.access_token,
        ))
        .await
        .expect("revoke");
        let status = auth
            .kiosk_login(pb::KioskLoginRequest {
                kiosk_id: "K-0001".into(),
                secret: second.secret,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{backend}: revoked");
        let status = auth
            .revoke_kiosk_credential(authed(
                pb::RevokeKioskCredentialRequest {
                    kiosk_id: "K-9999".into(),
                },
                &operator.access_token,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{backend}");
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn bad_email_and_short_password_are_invalid_argument_naming_each_field() {
    for backend in backends() {
        let sandbox = Sandbox::start(&backend).await;
        let mut auth = sandbox.auth().await;
        let status = auth
            .register(pb::RegisterRequest {
                email: "not-an-email".into(),
                password: "short".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{backend}");
        let details = status.get_details_bad_request().expect("field violations");
        let fields: Vec<&str> = details
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, ["email", "password"], "{backend}");

        let status = auth
            .register(pb::RegisterRequest {
                email: email(),
                password: "short".into(),
            })
            .await
            .unwrap_err();
        let details = status.get_details_bad_request().unwrap();
        assert_eq!(details.field_violations.len(), 1);
        assert_eq!(details.field_violations[0].field, "password");
        assert!(
            details.field_violations[0].description.contains("10"),
            "{backend}"
        );

        let taken = email();
        sandbox.register(&taken).await;
        let status = auth
            .register(pb::RegisterRequest {
                email: taken,
                password: PASSWORD.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::AlreadyExists, "{backend}");

        let status = auth
            .issue_kiosk_credential(authed(
                pb::IssueKioskCredentialRequest {
                    kiosk_id: "bad id!".into(),
                },
                &sandbox.operator().await.access_token,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.get_details_bad_request().unwrap().field_violations[0].field,
            "kiosk_id"
        );
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn burst_of_failed_logins_is_resource_exhausted_with_retry_info() {
    for backend in backends() {
        let sandbox = Sandbox::start(&backend).await;
        let victim = email();
        sandbox.register(&victim).await;
        let mut auth = sandbox.auth().await;
        let budget = sandbox.config.rate_limit.attempts_per_account;
        for attempt in 0..budget {
            let status = auth
                .login(pb::LoginRequest {
                    email: victim.clone(),
                    password: format!("guess number {attempt}"),
                })
                .await
                .unwrap_err();
            assert_eq!(
                status.code(),
                Code::Unauthenticated,
                "{backend}: attempt {attempt}"
            );
        }
        let status = auth
            .login(pb::LoginRequest {
                email: victim.clone(),
                password: PASSWORD.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::ResourceExhausted,
            "{backend}: even the right password waits"
        );
        let retry = status.get_details_retry_info().expect("retry info");
        assert!(
            retry.retry_delay.is_some_and(|d| !d.is_zero()),
            "{backend}: {retry:?}"
        );

        // Another account is not affected by this account's budget.
        let other = email();
        sandbox.register(&other).await;
        auth.login(pb::LoginRequest {
            email: other,
            password: PASSWORD.into(),
        })
        .await
        .expect("other account");
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn registrations_from_one_address_are_rate_limited() {
    let sandbox = Sandbox::start_with(&Backend::Sqlite, |config| {
        config.rate_limit.register_per_address = 3
    })
    .await;
    let mut auth = sandbox.auth().await;
    for _ in 0..3 {
        auth.register(pb::RegisterRequest {
            email: email(),
            password: PASSWORD.into(),
        })
        .await
        .expect("within budget");
    }
    let status = auth
        .register(pb::RegisterRequest {
            email: email(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.get_details_retry_info().is_some());
    sandbox.stop().await;
}

#[tokio::test]
async fn signing_keys_are_published_with_audience_and_issuer() {
    let sandbox = Sandbox::start(&Backend::Sqlite).await;
    let keys = sandbox
        .auth()
        .await
        .get_signing_keys(pb::GetSigningKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    let (kid, _) = sandbox.signing_key().await;
    assert_eq!(keys.keys.len(), 1);
    assert_eq!(keys.keys[0].kid, kid);
    assert_eq!(keys.keys[0].algorithm, "EdDSA");
    assert_eq!(keys.keys[0].public_key.len(), 32);
    assert_eq!(keys.audience, sandbox.config.auth.audience);
    assert_eq!(keys.issuer, sandbox.config.auth.issuer);
    sandbox.stop().await;
}

#[tokio::test]
async fn racing_refreshes_of_one_token_leave_one_winner_and_a_dead_session() {
    for backend in backends() {
        let sandbox = Sandbox::start(&backend).await;
        let session = sandbox.register(&email()).await;
        let mut attempts = Vec::new();
        for _ in 0..4 {
            let mut auth = sandbox.auth().await;
            let token = session.refresh_token.clone();
            attempts.push(tokio::spawn(async move {
                auth.refresh(pb::RefreshRequest {
                    refresh_token: token,
                })
                .await
            }));
        }
        let mut winners = Vec::new();
        for attempt in attempts {
            match attempt.await.unwrap() {
                Ok(response) => winners.push(response.into_inner().session.unwrap()),
                Err(status) => assert_eq!(status.code(), Code::Unauthenticated, "{backend}"),
            }
        }
        assert_eq!(winners.len(), 1, "{backend}: exactly one rotation wins");
        // The losers were reuse: the session is revoked, the winner's new token included.
        let after = sandbox
            .auth()
            .await
            .refresh(pb::RefreshRequest {
                refresh_token: winners[0].refresh_token.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(after.code(), Code::Unauthenticated, "{backend}");
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn refresh_tokens_expire_after_their_lifetime() {
    for backend in backends() {
        let sandbox = Sandbox::start(&backend).await;
        let session = sandbox.register(&email()).await;
        sandbox.clock.advance(
            chrono::Duration::from_std(sandbox.config.auth.refresh_token_ttl).unwrap()
                + chrono::Duration::minutes(1),
        );
        let status = sandbox
            .auth()
            .await
            .refresh(pb::RefreshRequest {
                refresh_token: session.refresh_token,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{backend}");
        assert!(
            status.message().contains("expired"),
            "{backend}: {}",
            status.message()
        );
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn nobody_can_log_out_someone_elses_session() {
    for backend in backends() {
        let sandbox = Sandbox::start(&backend).await;
        let (alice, bob) = (
            sandbox.register(&email()).await,
            sandbox.register(&email()).await,
        );
        let mut auth = sandbox.auth().await;
        let status = auth
            .logout(authed(
                pb::LogoutRequest {
                    refresh_token: alice.refresh_token.clone(),
                },
                &bob.access_token,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{backend}");
        auth.refresh(pb::RefreshRequest {
            refresh_token: alice.refresh_token,
        })
        .await
        .expect("alice's session survives bob's attempt");
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn a_stale_access_token_riding_along_does_not_block_login_or_refresh() {
    let sandbox = Sandbox::start(&Backend::Sqlite).await;
    let address = email();
    let session = sandbox.register(&address).await;
    let (kid, seed) = sandbox.signing_key().await;
    let mut expired = operator_claims(&sandbox, &session.user_id);
    expired.role = Role::User;
    (expired.exp, expired.nbf, expired.iat) =
        (expired.exp - 7200, expired.nbf - 7200, expired.iat - 7200);
    let stale = forge(&kid, &seed, &expired);
    let mut auth = sandbox.auth().await;
    auth.refresh(authed(
        pb::RefreshRequest {
            refresh_token: session.refresh_token,
        },
        &stale,
    ))
    .await
    .expect("refresh is public");
    auth.login(authed(
        pb::LoginRequest {
            email: address,
            password: PASSWORD.into(),
        },
        &stale,
    ))
    .await
    .expect("login is public");
    let status = auth
        .logout(authed(
            pb::LogoutRequest {
                refresh_token: "x".into(),
            },
            &stale,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("expired"), "{}", status.message());
    sandbox.stop().await;
}

#[tokio::test]
async fn logins_from_one_address_are_rate_limited_across_accounts() {
    let sandbox = Sandbox::start_with(&Backend::Sqlite, |config| {
        config.rate_limit.login_per_address = 3
    })
    .await;
    let mut auth = sandbox.auth().await;
    for _ in 0..3 {
        let status = auth
            .login(pb::LoginRequest {
                email: email(),
                password: PASSWORD.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let status = auth
        .login(pb::LoginRequest {
            email: email(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.get_details_retry_info().is_some());
    sandbox.stop().await;
}

#[tokio::test]
async fn oversized_login_fields_are_refused_before_any_work() {
    let sandbox = Sandbox::start(&Backend::Sqlite).await;
    let status = sandbox
        .auth()
        .await
        .login(pb::LoginRequest {
            email: format!("{}@example.com", "a".repeat(100_000)),
            password: PASSWORD.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.get_details_bad_request().unwrap().field_violations[0].field,
        "email"
    );
    sandbox.stop().await;
}

/// A login as `email` with `password`, arriving with `x-forwarded-for: forwarded_for`.
async fn login_via(
    sandbox: &Sandbox,
    forwarded_for: &str,
    email: &str,
    password: &str,
) -> Result<pb::LoginResponse, tonic::Status> {
    let mut request = tonic::Request::new(pb::LoginRequest {
        email: email.into(),
        password: password.into(),
    });
    request
        .metadata_mut()
        .insert("x-forwarded-for", forwarded_for.parse().expect("header"));
    sandbox
        .auth()
        .await
        .login(request)
        .await
        .map(tonic::Response::into_inner)
}

/// Behind an ingress every client arrives from the proxy's address. With the proxy trusted
/// (`rate_limit.trusted_proxies`), budgets follow the client it names: one guesser spends
/// only its own budget, the owner logging in from elsewhere is not locked out, and addresses
/// do not share one budget.
#[tokio::test]
async fn behind_a_trusted_proxy_each_client_has_its_own_budget_and_a_guesser_cannot_lock_the_owner_out()
 {
    let sandbox = Sandbox::start_with(&Backend::Sqlite, |config| {
        config.rate_limit.trusted_proxies = vec!["127.0.0.0/8".parse().expect("network")];
        config.rate_limit.attempts_per_account = 3;
        config.rate_limit.login_per_address = 5;
    })
    .await;
    let owner = email();
    sandbox.register(&owner).await;
    let guesser = "198.51.100.7";
    for attempt in 0..3 {
        let status = login_via(&sandbox, guesser, &owner, &format!("guess {attempt}"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "guess {attempt}");
    }
    let status = login_via(&sandbox, guesser, &owner, "guess 4")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    login_via(&sandbox, "198.51.100.8", &owner, PASSWORD)
        .await
        .expect("the owner, from another address, logs in");

    // Per-address budgets count the named client, not the proxy.
    let busy = "198.51.100.9";
    for _ in 0..5 {
        let status = login_via(&sandbox, busy, &email(), PASSWORD)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let status = login_via(&sandbox, busy, &email(), PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let status = login_via(&sandbox, "198.51.100.10", &email(), PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::Unauthenticated,
        "another client behind the same proxy has its own budget"
    );
    sandbox.stop().await;
}

/// Without trusted proxies (the default) `x-forwarded-for` is the client's own word and is
/// ignored: naming a new address on every try does not buy a new budget.
#[tokio::test]
async fn a_forwarded_for_header_from_an_untrusted_peer_buys_no_new_budget() {
    let sandbox = Sandbox::start_with(&Backend::Sqlite, |config| {
        config.rate_limit.login_per_address = 3;
    })
    .await;
    for n in 0..3 {
        let status = login_via(&sandbox, &format!("198.51.100.{n}"), &email(), PASSWORD)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let status = login_via(&sandbox, "198.51.100.99", &email(), PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    sandbox.stop().await;
}
