//! Fault injection for tests that kill or stall a process at an exact point, in any Sneakernet
//! process (services and the kiosk agent alike), so the kiosk agent need not link the server
//! runtime for it.
//!
//! A pause point is inert unless the build includes fail-rs's `failpoints` feature (only builds
//! that contain the `integration-tests` crate do) *and* the process armed it through the
//! `FAILPOINTS` environment variable (`name=return(<action>)`). Actions:
//!
//! - `hang:<marker file>`: write the marker, then never continue: the test kills the process
//!   here, in the middle of whatever the point sits in (an open transaction, an unsent reply).
//! - `pause:<milliseconds>:<marker file>`: write the marker, wait, then continue normally: the
//!   test acts (sends SIGTERM, cuts a stream) while the operation is provably in flight.
//! - `panic:<marker file>`: write the marker, then panic: the test sees how the task's
//!   supervisor copes (`fail`'s count prefix, `1*return(panic:...)`, makes it happen once).
//!
//! An error point ([`injected_error`]) is the other kind: where a point is armed with
//! `return(error)` (or `return(error:<what>)`), the operation there fails as if its storage
//! had; `3*return(error)` fails the first three times only.

use std::time::Duration;

/// Reaches pause point `name`: returns at once unless a test armed it (see the module docs).
pub async fn pause_point(name: &str) {
    if !fail::has_failpoints() {
        return;
    }
    let Some(Some(action)) = fail::eval(name, |argument| argument) else {
        return;
    };
    if let Some(marker) = action.strip_prefix("hang:") {
        announce(name, marker);
        std::future::pending::<()>().await;
    } else if let Some(rest) = action.strip_prefix("pause:") {
        let (millis, marker) = rest.split_once(':').unwrap_or((rest, ""));
        announce(name, marker);
        let millis = millis.parse().unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(millis)).await;
    } else if let Some(marker) = action.strip_prefix("panic:") {
        announce(name, marker);
        panic!("failpoint {name} panicked on purpose");
    } else {
        tracing::error!(point = name, action = %action, "unknown failpoint action; ignored");
    }
}

/// Reaches error point `name`: `Some(what)` when a test armed it to fail here (see the module
/// docs), `None` otherwise (always, in production builds).
pub fn injected_error(name: &str) -> Option<String> {
    if !fail::has_failpoints() {
        return None;
    }
    let Some(Some(action)) = fail::eval(name, |argument| argument) else {
        return None;
    };
    match action.split_once(':') {
        None if action == "error" => Some(format!("failpoint {name} failed on purpose")),
        Some(("error", what)) => Some(format!("failpoint {name} failed on purpose: {what}")),
        _ => {
            tracing::error!(point = name, action = %action, "unknown error point action; ignored");
            None
        }
    }
}

fn announce(name: &str, marker: &str) {
    tracing::warn!(point = name, "failpoint reached");
    if !marker.is_empty() {
        let _ = std::fs::write(marker, name);
    }
}
