//! The binary as a process: configuration mistakes stop it with one clear line, and killing it
//! in the middle of a write leaves nothing half-written.

use std::time::Duration;

use sneakernet_integration_tests::{
    Backend, Child, PASSWORD, backends, binary, connect, eventually, run_binary, test_config,
};
use sneakernet_proto::auth::v1 as pb;
use sneakernet_proto::auth::v1::auth_service_client::AuthServiceClient;
use tonic::Code;

/// A user mistake is one `error:` line naming what is wrong, exit code 1, and no panic.
fn assert_one_clear_line(code: Option<i32>, stderr: &str, names: &[&str]) {
    assert_eq!(code, Some(1), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    for name in names {
        assert!(lines[0].contains(name), "{name:?} missing from: {stderr}");
    }
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

#[tokio::test]
async fn unknown_config_key_stops_startup_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let (code, stderr) = run_binary(
        binary!(),
        &["standalone", "--listen", "127.0.0.1:0", "--data-dir", data],
        &[("SNEAKERNET_RATE_LIMIT__LOGIN_PER_MINUTE", "5")],
    )
    .await;
    assert_one_clear_line(code, &stderr, &["login_per_minute"]);

    let file = dir.path().join("sneakernet.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:0\"\n[auth]\naccess_token_tll = \"5m\"\n",
    )
    .unwrap();
    let (code, stderr) = run_binary(
        binary!(),
        &[
            "--config",
            file.to_str().unwrap(),
            "standalone",
            "--data-dir",
            data,
        ],
        &[],
    )
    .await;
    assert_one_clear_line(code, &stderr, &["access_token_tll"]);
}

#[tokio::test]
async fn unparsable_database_url_stops_startup_naming_the_key_not_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = run_binary(
        binary!(),
        &[
            "standalone",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[(
            "SNEAKERNET_DATABASE_URL",
            "postgres://admin:s3cret@[::1:5432/db",
        )],
    )
    .await;
    assert_one_clear_line(code, &stderr, &["database_url", "SNEAKERNET_DATABASE_URL"]);
    assert!(!stderr.contains("s3cret"), "the password leaked: {stderr}");
}

#[tokio::test]
async fn unreachable_database_stops_startup_naming_the_url() {
    let dir = tempfile::tempdir().unwrap();
    // Port 1 on loopback: nothing listens there, the connection is refused at once.
    let (code, stderr) = run_binary(
        binary!(),
        &[
            "standalone",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[(
            "SNEAKERNET_DATABASE_URL",
            "postgres://admin:s3cret@127.0.0.1:1/sneakernet",
        )],
    )
    .await;
    assert_one_clear_line(
        code,
        &stderr,
        &["postgres://admin:***@127.0.0.1:1/sneakernet", "refused"],
    );
    assert!(!stderr.contains("s3cret"), "the password leaked: {stderr}");
}

#[tokio::test]
async fn malformed_values_stop_startup_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    for (var, value, names) in [
        ("SNEAKERNET_LISTEN", "not-an-address", &["listen"][..]),
        (
            "SNEAKERNET_AUTH__ACCESS_TOKEN_TTL",
            "fifteen minutes",
            &["access_token_ttl"][..],
        ),
        (
            "SNEAKERNET_REDIS_URL",
            "http://127.0.0.1:6379",
            &["redis_url"][..],
        ),
        ("SNEAKERNET_LOG__FORMAT", "xml", &["format"][..]),
    ] {
        let (code, stderr) = run_binary(
            binary!(),
            &["standalone", "--data-dir", data],
            &[(var, value)],
        )
        .await;
        assert_one_clear_line(code, &stderr, names);
    }
}

#[tokio::test]
async fn killing_the_server_mid_register_leaves_no_half_created_account() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(&backend, dir.path());
        let marker = dir.path().join("mid-register");
        let failpoint = format!(
            "auth::create_account::after_user_insert=return(hang:{})",
            marker.display()
        );
        let child = Child::standalone(binary!(), &config, &[("FAILPOINTS", &failpoint)])
            .await
            .expect("start");

        let email = format!("half-{}@example.com", uuid::Uuid::new_v4().simple());
        let mut auth = AuthServiceClient::new(connect(child.address).await);
        let request = pb::RegisterRequest {
            email: email.clone(),
            password: PASSWORD.into(),
        };
        let register = tokio::spawn(async move { auth.register(request).await });

        // The user row is inserted and the transaction is still open when the marker appears.
        eventually(
            Duration::from_secs(30),
            "the server to reach the failpoint",
            || async { marker.exists() },
        )
        .await;
        child.kill().await;
        let outcome = register.await.unwrap();
        assert!(
            outcome.is_err(),
            "{backend}: the killed server cannot have answered"
        );

        let restarted = Child::standalone(binary!(), &config, &[])
            .await
            .expect("restart on the same data");
        let mut auth = AuthServiceClient::new(connect(restarted.address).await);
        let login = auth
            .login(pb::LoginRequest {
                email: email.clone(),
                password: PASSWORD.into(),
            })
            .await;
        assert_eq!(
            login.unwrap_err().code(),
            Code::Unauthenticated,
            "{backend}: no account survived the kill"
        );
        auth.register(pb::RegisterRequest {
            email: email.clone(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap_or_else(|s| panic!("{backend}: the email must still be free: {s:?}"));
        auth.login(pb::LoginRequest {
            email,
            password: PASSWORD.into(),
        })
        .await
        .expect("and now it works");
        restarted.kill().await;
        if let Backend::Postgres(_) = backend {
            sneakernet_integration_tests::drop_schemas(&config).await;
        }
    }
}

#[tokio::test]
async fn a_role_without_auth_needs_auth_url_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stderr) = run_binary(
        binary!(),
        &["serve", "--role", "orders"],
        &[
            ("SNEAKERNET_LISTEN", "127.0.0.1:0"),
            ("SNEAKERNET_DATA_DIR", dir.path().to_str().unwrap()),
        ],
    )
    .await;
    assert_one_clear_line(code, &stderr, &["auth.url", "SNEAKERNET_AUTH__URL"]);

    let (code, stderr) = run_binary(binary!(), &["serve", "--role", "billing"], &[]).await;
    assert_eq!(code, Some(2), "clap's usage error: {stderr}");
    assert!(stderr.contains("unknown role \"billing\""), "{stderr}");
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_call_finish_then_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(&Backend::Sqlite, dir.path());
    let marker = dir.path().join("in-flight");
    // Register pauses 1.5 s inside its transaction: the signal arrives while it is in flight.
    let failpoint = format!(
        "auth::create_account::after_user_insert=return(pause:1500:{})",
        marker.display()
    );
    let mut child = Child::standalone(binary!(), &config, &[("FAILPOINTS", &failpoint)])
        .await
        .expect("start");
    let mut auth = AuthServiceClient::new(connect(child.address).await);
    let register = tokio::spawn(async move {
        auth.register(pb::RegisterRequest {
            email: "term@example.com".into(),
            password: PASSWORD.into(),
        })
        .await
    });
    eventually(
        Duration::from_secs(30),
        "Register to be in flight",
        || async { marker.exists() },
    )
    .await;

    let pid = child.process.id().expect("pid").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
    let answered = register.await.unwrap();
    assert!(
        answered.is_ok(),
        "the in-flight call is drained, not cut: {answered:?}"
    );
    let exit = tokio::time::timeout(Duration::from_secs(30), child.process.wait())
        .await
        .expect("exited within the grace period")
        .expect("exit status");
    assert!(exit.success(), "graceful shutdown exits 0, got {exit:?}");

    // What the drained call wrote is there after a restart.
    let restarted = Child::standalone(binary!(), &config, &[])
        .await
        .expect("restart");
    let mut auth = AuthServiceClient::new(connect(restarted.address).await);
    auth.login(pb::LoginRequest {
        email: "term@example.com".into(),
        password: PASSWORD.into(),
    })
    .await
    .expect("account persisted");
    restarted.kill().await;
}

#[tokio::test]
async fn config_file_named_by_environment_is_read_as_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sneakernet.toml");
    std::fs::write(&file, "[log]\nformatt = \"json\"\n").unwrap();
    let (code, stderr) = run_binary(
        binary!(),
        &["standalone", "--data-dir", dir.path().to_str().unwrap()],
        &[("SNEAKERNET_CONFIG_FILE", file.to_str().unwrap())],
    )
    .await;
    assert_one_clear_line(code, &stderr, &["log.formatt", "sneakernet.toml"]);
}
