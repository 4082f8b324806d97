//! The bodies of the fuzz targets (one binary each under `fuzz_targets/`). Each feeds
//! arbitrary bytes to the project's own decoding and checking code, exactly as the program
//! that receives that input would, and asserts what that code promises. A target must never
//! panic: a panic, an abort or a sanitizer report is a bug in the project, fixed there with a
//! regression test in the owning crate (docs/fuzzing.md).
//!
//! The seed corpus under `corpus/<target>/` is written by the ignored test
//! `seeds::write_seed_corpus` (`cargo test --manifest-path fuzz/Cargo.toml -- --ignored`),
//! except the config files, which are copied from the README.

use std::path::PathBuf;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use prost::Message;
use sneakernet_gateway::commands;
use sneakernet_kiosk_agent::clock::KioskClock;
use sneakernet_kiosk_agent::command::{self, Action};
use sneakernet_kiosk_agent::config::AgentConfig;
use sneakernet_kiosk_agent::content_source::Manifest;
use sneakernet_kiosk_agent::drive;
use sneakernet_kiosk_agent::wire::{from_duration, from_timestamp};
use sneakernet_proto::content::v1 as content_pb;
use sneakernet_proto::content_rules;
use sneakernet_proto::gateway::v1 as pb;
use sneakernet_proto::gateway::v1::open_request::Body as Up;
use sneakernet_proto::gateway::v1::open_response::Body as Down;
use sneakernet_proto::link_rules;
use sneakernet_runtime::Config;
use sneakernet_runtime::caller::{Caller, PublicKey, TokenVerifier};
use sneakernet_runtime::clock::Clock;
use sneakernet_runtime::qr;
use sneakernet_runtime::{DeviceId, KioskId};

/// The gateway's clock in every target (2027-01-15T08:00:00Z): fixed, so a run replays.
pub const NOW_SECONDS: i64 = 1_800_000_000;

/// The QR secret the `qr_payload` target verifies codes against (20 bytes, the fewest allowed).
pub const QR_SECRET: &[u8; 20] = b"fuzz-qr-secret-20byt";

/// [`NOW_SECONDS`] as a time.
pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(NOW_SECONDS, 0).expect("NOW_SECONDS is a valid time")
}

/// The Ed25519 seed of the one signing key the gateway's verifier trusts in the
/// `kiosk_message` target (the seeds' RenewToken is signed with it).
pub const TOKEN_KEY_SEED: [u8; 32] = *b"fuzz-token-signing-key-seed-32by";
/// The key id of [`TOKEN_KEY_SEED`], as in a token's header.
pub const TOKEN_KEY_ID: &str = "fuzz-key";
/// The `aud` and `iss` the verifier wants: the configuration's defaults (README).
pub const TOKEN_AUDIENCE: &str = "sneakernet";
/// See [`TOKEN_AUDIENCE`].
pub const TOKEN_ISSUER: &str = "sneakernet-auth";
/// The kiosk whose link the `kiosk_message` target plays: a renewal must name it.
pub const LINK_KIOSK: &str = "K-0001";

/// "Now" for the token verifier: [`NOW_SECONDS`], so a run replays.
#[derive(Debug)]
struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        now()
    }
}

/// The verifier a gateway session checks a RenewToken with, trusting [`TOKEN_KEY_SEED`]'s key
/// with the configuration's default audience, issuer and leeway (60 s).
fn link_verifier() -> &'static TokenVerifier {
    static VERIFIER: OnceLock<TokenVerifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let verifier = TokenVerifier::with_clock(
            TOKEN_AUDIENCE,
            TOKEN_ISSUER,
            std::time::Duration::from_secs(60),
            std::sync::Arc::new(FixedClock),
        );
        let public = ed25519_dalek::SigningKey::from_bytes(&TOKEN_KEY_SEED)
            .verifying_key()
            .to_bytes();
        verifier.install_keys(&[PublicKey {
            kid: TOKEN_KEY_ID.into(),
            ed25519: public,
            retired_at: None,
        }]);
        verifier
    })
}

/// What a gateway session decides about a RenewToken on [`LINK_KIOSK`]'s link: the token's
/// expiry, or why it is refused. The same steps as `Session::renew_token`: the verifier (the
/// auth layer's checks), the caller its claims name, the same device, an expiry in range.
pub fn judge_renewal(renew: &pb::RenewToken) -> Result<DateTime<Utc>, String> {
    let link_device = DeviceId::Kiosk(KioskId::parse(LINK_KIOSK).expect("LINK_KIOSK parses"));
    let claims = link_verifier()
        .verify(&renew.access_token)
        .map_err(|error| error.to_string())?;
    let caller = Caller::from_claims(&claims).map_err(|error| error.to_string())?;
    match caller.device() {
        Some(device) if device == link_device => {}
        Some(_) => return Err("access token is for another device".into()),
        None => return Err("access token is not a kiosk's or a drive's".into()),
    }
    DateTime::<Utc>::from_timestamp(claims.exp, 0)
        .ok_or_else(|| "access token expiry is out of range".into())
}

/// Bytes from a kiosk into the gateway's session.
///
/// The input is decoded as one `OpenRequest` and checked by `link_rules` as the session checks
/// every message (with Hello also as a drive's Hello, a result matched against every command
/// kind, as the session does against the command it names, and a RenewToken's token judged as
/// the session judges it, [`judge_renewal`]). The same bytes are then
/// read as a stream of length-delimited messages, which the session folds as it does a link:
/// Hello first, then each accepted full inventory replaces and each partial one is merged
/// (`session::merge`) into what the store kept (encoded and decoded again) and checked by
/// `check_merged_inventory`. Asserted: an inventory the gateway keeps never holds more than
/// `MAX_BAYS` bays, a bay id twice, or more than `MAX_INVENTORY_BYTES`.
pub fn kiosk_message(data: &[u8]) {
    let now = now();
    if let Ok(message) = pb::OpenRequest::decode(data) {
        one_kiosk_message(&message, now);
    }
    let mut stream = data;
    let mut kept: Option<Vec<u8>> = None;
    while !stream.is_empty() {
        let Ok(message) = pb::OpenRequest::decode_length_delimited(&mut stream) else {
            break;
        };
        one_kiosk_message(&message, now);
        let Some(body) = &message.body else { continue };
        let Some(known) = &kept else {
            // The link's first message must be a Hello the rules accept; else it is closed.
            match body {
                Up::Hello(hello) if link_rules::check_hello(hello).is_ok() => {
                    let inventory = hello.inventory.clone().unwrap_or_default();
                    assert_kept_inventory_is_bounded(&inventory);
                    kept = Some(inventory.encode_to_vec());
                    continue;
                }
                _ => break,
            }
        };
        if link_rules::check_message(&message, now).is_err() {
            continue;
        }
        let Up::InventoryChanged(changed) = body else {
            continue;
        };
        let merged = match &changed.change {
            Some(pb::inventory_changed::Change::Full(full)) => full.clone(),
            Some(pb::inventory_changed::Change::Partial(partial)) => {
                let known = pb::Inventory::decode(known.as_slice()).unwrap_or_default();
                let merged = sneakernet_gateway::session::merge(known, partial.clone());
                if link_rules::check_merged_inventory(&merged).is_err() {
                    continue;
                }
                merged
            }
            None => continue,
        };
        assert_kept_inventory_is_bounded(&merged);
        kept = Some(merged.encode_to_vec());
    }
}

fn one_kiosk_message(message: &pb::OpenRequest, now: DateTime<Utc>) {
    let checked = link_rules::check_message(message, now);
    if let Err(refusal) = &checked {
        // What the session logs and puts in the REJECTED receipt.
        assert!(!refusal.field.is_empty() && !refusal.reason.is_empty());
        let _ = refusal.to_string();
    }
    let _ = link_rules::check_message_id(&message.message_id);
    match &message.body {
        Some(Up::Hello(hello)) => {
            let _ = link_rules::check_hello(hello);
            let _ = link_rules::check_drive_hello(hello);
        }
        Some(Up::Result(result)) if checked.is_ok() => {
            if let Some(outcome) = &result.outcome {
                for payload in every_command_kind() {
                    let _ = commands::result_matches(&payload, outcome);
                }
            }
        }
        Some(Up::RenewToken(renew)) if checked.is_ok() => {
            if let Err(refusal) = judge_renewal(renew) {
                // The text the session sends back in TokenRenewal.error.
                assert!(!refusal.is_empty());
            }
        }
        _ => {}
    }
}

fn assert_kept_inventory_is_bounded(inventory: &pb::Inventory) {
    assert!(inventory.bays.len() <= link_rules::MAX_BAYS);
    assert!(inventory.encoded_len() <= link_rules::MAX_INVENTORY_BYTES);
    let mut ids = std::collections::HashSet::new();
    for bay in &inventory.bays {
        assert!(
            ids.insert(bay.bay_id.as_str()),
            "bay {} kept twice",
            bay.bay_id
        );
    }
}

fn every_command_kind() -> Vec<pb::CommandPayload> {
    use pb::command_payload::Kind;
    [
        Kind::Lend(pb::LendCommand::default()),
        Kind::Provision(pb::ProvisionCommand::default()),
        Kind::SetWriteProtect(pb::SetWriteProtectCommand::default()),
        Kind::Wipe(pb::WipeCommand::default()),
        Kind::ForceEject(pb::ForceEjectCommand::default()),
        Kind::RequestInventory(pb::RequestInventoryCommand::default()),
        Kind::Release(pb::ReleaseCommand::default()),
    ]
    .into_iter()
    .map(|kind| pb::CommandPayload { kind: Some(kind) })
    .chain([pb::CommandPayload { kind: None }])
    .collect()
}

/// Bytes from the gateway into the kiosk agent's link: an `OpenResponse` decoded and handled
/// as `link.rs` does before anything touches the journal or the bays: a command's id
/// (`command::is_command_id`), deadline and payload (`command::validate`, then a drive
/// module's `drive::accept`); a Welcome's server time (the clock's skew correction) and
/// durations; a Reconnect's wait; a Receipt's status; a TokenRenewal's expiry, as the time
/// left on the agent's clock. Asserted: a refused payload says why.
pub fn gateway_message(data: &[u8]) {
    let Ok(message) = pb::OpenResponse::decode(data) else {
        return;
    };
    match message.body {
        Some(Down::Command(command)) => {
            let _ = command::is_command_id(&command.command_id);
            let _ = command.deadline.as_ref().and_then(from_timestamp);
            match command::validate(command.payload.as_ref()) {
                Ok(action) => {
                    let own = match &action {
                        Action::SetWriteProtect { item_id, .. } => item_id.as_str(),
                        _ => "D-0001",
                    };
                    let _ = drive::accept(own, &action);
                    let _ = drive::accept("D-0001", &action);
                }
                Err(reason) => assert!(!reason.is_empty()),
            }
        }
        Some(Down::Welcome(welcome)) => {
            if let Some(server_time) = welcome.server_time.as_ref().and_then(from_timestamp) {
                let _ = KioskClock::new().correct(server_time);
            }
            let _ = welcome.heartbeat_interval.as_ref().and_then(from_duration);
            let _ = welcome.offline_after.as_ref().and_then(from_duration);
        }
        Some(Down::Reconnect(reconnect)) => {
            let _ = reconnect.retry_after.as_ref().and_then(from_duration);
            let _ = pb::ReconnectReason::try_from(reconnect.reason).unwrap_or_default();
        }
        Some(Down::Receipt(receipt)) => {
            let _ = pb::ReceiptStatus::try_from(receipt.status);
        }
        Some(Down::TokenRenewal(answer)) => {
            // The link's new end as the agent reads it (`on_token_renewal`), against its clock.
            if let Some(expires_at) = answer.expires_at.as_ref().and_then(from_timestamp) {
                let _ = (expires_at - KioskClock::new().now()).to_std();
            }
        }
        Some(Down::Heartbeat(_)) | None => {}
    }
}

/// A scanned QR payload (`ScanKiosk.qr_payload`, `CollectReservation.qr_payload`) as orders
/// reads it: `qr::parse`, then `qr::verify` of its code at, before and after [`NOW_SECONDS`]
/// and at the ends of time. Asserted: a refusal says why; for every kiosk id that parses, the
/// payload a kiosk shows now parses back to that id and its code verifies.
pub fn qr_payload(data: &[u8]) {
    // The payload is a proto3 string: only UTF-8 reaches orders.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match qr::parse(text) {
        Ok(parsed) => {
            if let Some(code) = &parsed.code {
                for at in [
                    now(),
                    DateTime::<Utc>::MIN_UTC,
                    DateTime::<Utc>::MAX_UTC,
                    DateTime::<Utc>::UNIX_EPOCH,
                ] {
                    let _ = qr::verify(QR_SECRET, code, at);
                }
            }
            let shown = qr::payload(&parsed.kiosk_id, QR_SECRET, now());
            let back = qr::parse(&shown).expect("the payload a kiosk shows parses");
            assert_eq!(back.kiosk_id, parsed.kiosk_id);
            let code = back.code.expect("the payload a kiosk shows has a code");
            assert!(qr::verify(QR_SECRET, &code, now()));
        }
        Err(reason) => assert!(!reason.is_empty()),
    }
}

/// A content package's manifest from the content service (`GetManifest`), as the kiosk reads
/// it before it downloads or writes anything: the contract's path rules
/// (`content_rules::check_path`, `file_and_directory_clash`) and the agent's checked
/// `Manifest::try_from`. Asserted for an accepted manifest: every path passes the contract, the
/// sizes add up, every chunk length is at most the chunk size, and it survives the round trips
/// to proto and to the on-drive JSON unchanged.
pub fn content_manifest(data: &[u8]) {
    let Ok(proto) = content_pb::Manifest::decode(data) else {
        return;
    };
    for file in &proto.files {
        let _ = content_rules::check_path(&file.path);
    }
    let paths: Vec<&str> = proto.files.iter().map(|f| f.path.as_str()).collect();
    let _ = content_rules::file_and_directory_clash(&paths);
    match Manifest::try_from(proto) {
        Ok(manifest) => {
            assert_accepted_manifest(&manifest);
            let again = Manifest::try_from(content_pb::Manifest::from(&manifest))
                .expect("an accepted manifest, sent again, is accepted");
            assert_eq!(again, manifest);
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
}

/// The on-drive manifest (`.sneakernet/manifest.json`), outside input because a drive comes
/// back from a renter: `Manifest::from_json`, which `drive_content::read_manifest` applies to
/// the file's bytes. Asserted for an accepted manifest as in [`content_manifest`].
pub fn drive_manifest(data: &[u8]) {
    match Manifest::from_json(data) {
        Ok(manifest) => assert_accepted_manifest(&manifest),
        Err(error) => assert!(!error.to_string().is_empty()),
    }
}

fn assert_accepted_manifest(manifest: &Manifest) {
    let mut total = 0u64;
    for file in &manifest.files {
        assert_eq!(content_rules::check_path(&file.path), Ok(()));
        total = total.checked_add(file.size).expect("sizes were checked");
        for index in 0..file.chunks.len() {
            assert!(manifest.chunk_len(file, index) <= u64::from(manifest.chunk_size));
        }
    }
    assert_eq!(total, manifest.total_bytes);
    let _ = manifest.unique_chunks_with_len();
    let back = Manifest::from_json(manifest.to_json().as_bytes())
        .expect("an accepted manifest written onto a drive reads back");
    assert_eq!(&back, manifest);
}

/// The one binary's config file (`sneakernet --config FILE`): TOML text through
/// `Config::load` (defaults, the file, the environment, `validate`). Asserted: a refusal says
/// why, and a loaded config validates again.
pub fn service_config(data: &[u8]) {
    let Some(file) = write_temp_toml(data, "service") else {
        return;
    };
    match Config::load(Some(file.as_path())) {
        Ok(config) => {
            config.validate().expect("a loaded config validates again");
            let _ = config.database_target();
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
}

/// The kiosk agent's config file (`kiosk-agent --config FILE`): TOML text through
/// `AgentConfig::load`. Asserted: a refusal says why, and a loaded config validates again.
pub fn agent_config(data: &[u8]) {
    let Some(file) = write_temp_toml(data, "agent") else {
        return;
    };
    match AgentConfig::load(&file) {
        Ok(config) => {
            config.validate().expect("a loaded config validates again");
            let _ = config.cache_dir();
            let _ = config.cache_budget_bytes();
            let _ = config.provision_retries();
        }
        Err(error) => assert!(!error.to_string().is_empty()),
    }
}

/// Writes UTF-8 `data` to this process's temp file for `which` (the loaders read paths only);
/// `None` for bytes that are not UTF-8 (no TOML file is).
fn write_temp_toml(data: &[u8], which: &str) -> Option<PathBuf> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let text = std::str::from_utf8(data).ok()?;
    let dir = DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sneakernet-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("the temp dir is writable");
        dir
    });
    let file = dir.join(format!("{which}.toml"));
    std::fs::write(&file, text).expect("the temp dir is writable");
    Some(file)
}

#[cfg(test)]
mod seeds;

#[cfg(test)]
mod replay;
