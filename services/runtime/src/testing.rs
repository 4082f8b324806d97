//! What tests of every crate share to run on each database backend (compiled only with the
//! `testing` feature, which only test builds enable).
//!
//! SQLite always; Postgres when `DATABASE_URL` is set. A backend or service a test cannot reach
//! is skipped with a loud message, and with `TEST_REQUIRE_SERVICES=1` (CI sets it) the skip is
//! a failure, so CI never passes by skipping.

use crate::config::Config;

/// Turns a skipped backend into a failure when set to `1` (CI).
pub const REQUIRE_SERVICES_VAR: &str = "TEST_REQUIRE_SERVICES";

/// A database backend a test runs against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: SQLite files in the test's data dir.
    Sqlite,
    /// Postgres at this URL, in fresh schemas.
    Postgres(String),
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres(_) => "postgres",
        })
    }
}

impl Backend {
    /// Points `config` at this backend: for Postgres, the URL and schemas no other test uses.
    pub fn configure(&self, config: &mut Config) {
        if let Backend::Postgres(url) = self {
            config.database_url = Some(url.clone());
            config.database_schema_prefix = unique_schema_prefix();
        }
    }
}

/// Every backend this run can reach. SQLite always; Postgres if `DATABASE_URL` is set.
pub fn backends() -> Vec<Backend> {
    let mut backends = vec![Backend::Sqlite];
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => backends.push(Backend::Postgres(url)),
        _ => skip_or_fail("Postgres", "DATABASE_URL"),
    }
    backends
}

/// Prints a loud skip message for the `what` part of a test whose `var` is unset, or fails
/// under `TEST_REQUIRE_SERVICES=1`.
pub fn skip_or_fail(what: &str, var: &str) {
    let message = format!("SKIPPED: {what} part of this test: {var} is not set");
    if std::env::var(REQUIRE_SERVICES_VAR).is_ok_and(|v| v == "1") {
        panic!("{message}, and {REQUIRE_SERVICES_VAR}=1 requires it");
    }
    eprintln!("\n*** {message} ***\n");
}

/// A schema prefix no other test uses.
pub fn unique_schema_prefix() -> String {
    format!("t{}_", &uuid::Uuid::new_v4().simple().to_string()[..12])
}
