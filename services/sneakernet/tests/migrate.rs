//! `sneakernet migrate`: the chart's pre-install/pre-upgrade job. It applies the migrations of
//! the roles it is given (every role by default) and exits, and running it twice changes
//! nothing.

use std::path::Path;

use clap::Parser;
use sneakernet::cli::{Cli, Command};
use sneakernet::node::NodeRole;
use sneakernet_runtime::config::Config;

fn config(data_dir: &Path) -> Config {
    Config {
        data_dir: data_dir.to_owned(),
        ..Config::default()
    }
}

/// The SQLite file of `service` holds sea-orm's migration table (the schema is stored as text
/// in the file; closing the pool checkpointed the write-ahead log into it).
fn migrated(data_dir: &Path, service: &str) -> bool {
    let file = data_dir.join(format!("{service}.db"));
    let Ok(bytes) = std::fs::read(&file) else {
        return false;
    };
    bytes
        .windows(b"seaql_migrations".len())
        .any(|w| w == b"seaql_migrations")
}

#[test]
fn roles_default_to_every_role_and_parse_comma_separated() {
    let cli = Cli::try_parse_from(["sneakernet", "migrate"]).expect("parse");
    assert!(matches!(cli.command, Command::Migrate { role } if role.is_empty()));
    let cli = Cli::try_parse_from(["sneakernet", "migrate", "--role", "orders,auth"]).unwrap();
    assert!(
        matches!(cli.command, Command::Migrate { role } if role == [NodeRole::Orders, NodeRole::Auth])
    );
    assert!(Cli::try_parse_from(["sneakernet", "migrate", "--role", "billing"]).is_err());
}

#[tokio::test]
async fn migrates_the_named_roles_only_then_every_role_twice() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config(dir.path());

    sneakernet::cli::migrate(&config, &[NodeRole::Orders])
        .await
        .expect("migrate orders");
    assert!(migrated(dir.path(), "orders"));
    for other in ["auth", "content", "gateway"] {
        assert!(!dir.path().join(format!("{other}.db")).exists(), "{other}");
    }

    for _ in 0..2 {
        sneakernet::cli::migrate(&config, &[])
            .await
            .expect("migrate every role");
        for service in ["auth", "orders", "content", "gateway"] {
            assert!(migrated(dir.path(), service), "{service} not migrated");
        }
    }
}
