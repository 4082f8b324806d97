//! What every request and every scan pays before any handler runs (docs/benchmarks.md,
//! scenario 4): the local access-token check (`TokenVerifier::verify`: header, key lookup,
//! Ed25519 signature, claims) and the kiosk QR payload check (`qr::parse` + `qr::verify`).
//! Under `cargo test --benches` each body runs once.
//!
//! Baselines in the same run: the bare Ed25519 signature check of the same token's signing
//! input (what no JWT library can go under), and one HMAC-SHA-256 of a step counter (a QR
//! check computes four: the current step, two before, one after).

use std::hint::black_box;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::{Signature, SigningKey, Verifier};
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sha2::Sha256;
use sneakernet_runtime::caller::{Claims, PublicKey};
use sneakernet_runtime::{KioskId, Role, TokenVerifier, qr};

/// A user's access token signed as auth signs one (EdDSA, `kid` in the header).
fn signed_token(signing: &SigningKey) -> String {
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: "00000000-0000-0000-0000-000000000001".into(),
        role: Role::User,
        aud: "sneakernet".into(),
        iss: "sneakernet-auth".into(),
        exp: now + 3600,
        nbf: now,
        iat: now,
        jti: "0190f0d4-7b6c-7cc3-a2a4-7f4c2b8e9d10".into(),
    };
    let der = signing.to_pkcs8_der().expect("an Ed25519 key encodes");
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("k1".into());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(der.as_bytes()))
        .expect("the claims encode")
}

fn token_verification(c: &mut Criterion) {
    let signing = SigningKey::from_bytes(&[1; 32]);
    let verifier = TokenVerifier::new("sneakernet", "sneakernet-auth", Duration::from_secs(5));
    verifier.install_keys(&[
        PublicKey {
            kid: "k0".into(),
            ed25519: SigningKey::from_bytes(&[2; 32]).verifying_key().to_bytes(),
            retired_at: Some(0),
        },
        PublicKey {
            kid: "k1".into(),
            ed25519: signing.verifying_key().to_bytes(),
            retired_at: None,
        },
    ]);
    let token = signed_token(&signing);
    assert!(verifier.verify(&token).is_ok(), "the bench token verifies");
    let (input, signature) = token.rsplit_once('.').expect("a JWT has three parts");
    let signature = Signature::from_slice(
        &URL_SAFE_NO_PAD
            .decode(signature)
            .expect("the signature is base64url"),
    )
    .expect("64 bytes");
    let public = signing.verifying_key();

    let mut group = c.benchmark_group("runtime_token_verify");
    group.bench_function("token_verifier_verify", |b| {
        b.iter(|| verifier.verify(black_box(&token)))
    });
    group.bench_function("baseline_ed25519_verify_only", |b| {
        b.iter(|| public.verify(black_box(input.as_bytes()), black_box(&signature)))
    });
    group.finish();
}

fn qr_check(c: &mut Criterion) {
    let kiosk = KioskId::parse("K-0042").expect("a valid kiosk id");
    let secret = [7u8; 32];
    let now = chrono::Utc::now();
    let payload = qr::payload(&kiosk, &secret, now);
    let mut group = c.benchmark_group("runtime_qr_check");
    group.bench_function("parse_and_verify", |b| {
        b.iter(|| {
            let parsed = qr::parse(black_box(&payload)).expect("a valid payload");
            qr::verify(&secret, parsed.code.as_deref().unwrap_or_default(), now)
        })
    });
    group.bench_function("baseline_one_hmac_sha256", |b| {
        b.iter(|| {
            let mut mac =
                Hmac::<Sha256>::new_from_slice(black_box(&secret)).expect("any key length");
            mac.update(&black_box(now.timestamp() / 30).to_be_bytes());
            mac.finalize().into_bytes()
        })
    });
    group.finish();
}

criterion_group!(benches, token_verification, qr_check);
criterion_main!(benches);
