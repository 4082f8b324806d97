//! The `sneakernet` client commands as a script drives them: a `standalone` child process on a
//! free port, the CLI with `--json` through a rental (register, deposit, scan, rent, watch
//! until LENT, `sim return` at another kiosk, watch until CLOSED) and a reservation (kiosks
//! near, reserve, watch until READY_FOR_PICKUP, collect); and each mistake a person makes at
//! the command line as one clear line with its documented exit code.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use sneakernet_integration_tests::rentals::{SimKiosk, drive, start_priced};
use sneakernet_integration_tests::{Child, backends, binary, eventually, free_port, test_config};
use sneakernet_proto::common::v1::ItemKind;
use tokio::io::AsyncBufReadExt;

/// How long one command may take (a loaded CI machine); never a timed assertion.
const COMMAND_WAIT: Duration = Duration::from_secs(180);
/// How long the simulated kiosks may take to come up and offer something.
const FLEET_WAIT: Duration = Duration::from_secs(180);

const HERE: &str = "K-BER-HBF";
const THERE: &str = "K-BER-ALEX";
const CARD: &str = "4242424242424242";

/// What one run of the CLI did.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    /// Every line of standard output as JSON.
    fn json(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect()
    }

    /// The one JSON object the command printed, asserting it succeeded.
    fn ok(&self) -> Value {
        assert_eq!(self.code, Some(0), "{self:?}");
        self.json()
            .pop()
            .unwrap_or_else(|| panic!("no output: {self:?}"))
    }

    /// Asserts one `error:` line on standard error containing `names`, and exit `code`.
    fn refused(&self, code: i32, names: &[&str]) {
        assert_eq!(self.code, Some(code), "{self:?}");
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(lines.len(), 1, "expected one line: {self:?}");
        assert!(lines[0].starts_with("error: "), "{self:?}");
        for name in names {
            assert!(lines[0].contains(name), "{name:?} missing: {self:?}");
        }
        assert!(!self.stderr.contains("panicked"), "{self:?}");
    }
}

/// The CLI of one user on one machine: a profile directory of its own.
struct User {
    address: String,
    data_dir: PathBuf,
    profile: tempfile::TempDir,
}

impl User {
    fn new(address: impl ToString, data_dir: &Path) -> Self {
        Self {
            address: address.to_string(),
            data_dir: data_dir.to_owned(),
            profile: tempfile::tempdir().expect("profile dir"),
        }
    }

    /// Runs `sneakernet --json --address ... --profile-dir ... ARGS`.
    async fn run(&self, args: &[&str]) -> Ran {
        let mut all = vec![
            "--json",
            "--address",
            &self.address,
            "--profile-dir",
            self.profile.path().to_str().expect("utf-8 path"),
        ];
        all.extend_from_slice(args);
        run(&all).await
    }

    /// `sim qr KIOSK` of this node, once the kiosk exists.
    async fn qr(&self, kiosk: &str) -> String {
        let data_dir = self.data_dir.to_str().expect("utf-8 path").to_owned();
        let ran = until_ok(FLEET_WAIT, || {
            let data_dir = data_dir.clone();
            async move {
                self.run(&["sim", "qr", kiosk, "--data-dir", &data_dir])
                    .await
            }
        })
        .await;
        ran.ok()["qr"].as_str().expect("qr text").to_owned()
    }

    /// Watches `order` until `state`; returns the last watch message.
    async fn watch_until(&self, order: &str, state: &str) -> Value {
        let ran = self.run(&["watch", order, "--until", state]).await;
        let last = ran.ok();
        assert_eq!(
            last["state"],
            format!("ORDER_STATE_{state}"),
            "{:?}",
            ran.stdout
        );
        last
    }
}

async fn run(args: &[&str]) -> Ran {
    run_within(COMMAND_WAIT, args).await
}

/// Runs `sneakernet ARGS`, failing the test if it takes longer than `wait`.
async fn run_within(wait: Duration, args: &[&str]) -> Ran {
    let mut command = tokio::process::Command::new(binary!());
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = tokio::time::timeout(wait, command.output())
        .await
        .unwrap_or_else(|_| panic!("sneakernet {args:?} did not finish"))
        .expect("sneakernet ran");
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `command` until it exits 0 (the node still coming up), failing after `within`.
async fn until_ok<F, Fut>(within: Duration, mut command: F) -> Ran
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Ran>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let ran = command().await;
        if ran.code == Some(0) {
            return ran;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still failing after {within:?}: {ran:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn password_file(dir: &Path) -> String {
    let file = dir.join("password");
    std::fs::write(&file, "correct horse battery staple\n").expect("password file");
    file.to_str().expect("utf-8 path").to_owned()
}

#[tokio::test]
async fn a_script_rents_returns_and_reserves_through_the_cli_against_standalone() {
    for backend in backends() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = test_config(&backend, dir.path());
        let node = Child::standalone(binary!(), &config, &[])
            .await
            .expect("standalone");
        let user = User::new(node.address, dir.path());
        let data_dir = dir.path().to_str().expect("utf-8 path");
        let password = password_file(user.profile.path());

        let registered = user
            .run(&[
                "register",
                "--email",
                "walker@example.com",
                "--password-file",
                &password,
            ])
            .await
            .ok();
        assert_eq!(registered["role"], "user", "{backend}");

        let paid = user.run(&["deposit", "pay", "--card", CARD]).await.ok();
        assert_eq!(paid["deposit"]["state"], "DEPOSIT_STATE_HELD", "{backend}");

        // The kiosks come up after the node: scan until the first one offers something.
        let offer = until_ok(FLEET_WAIT, || async {
            // A QR code is valid for about a minute: take the current one each try.
            let qr = user.qr(HERE).await;
            user.run(&["scan", &qr]).await
        })
        .await
        .ok();
        assert_eq!(offer["kioskId"], HERE, "{backend}");
        assert!(
            !offer["lines"].as_array().expect("lines").is_empty(),
            "{backend}: {offer}"
        );

        let qr = user.qr(HERE).await;
        let rented = user.run(&["rent", "--qr", &qr]).await.ok();
        let order = rented["order"]["orderId"]
            .as_str()
            .expect("order id")
            .to_owned();
        assert!(rented["idempotencyKey"].as_str().is_some(), "{rented}");

        let lent = user.watch_until(&order, "LENT").await;
        let item = lent["order"]["itemId"].as_str().expect("item").to_owned();
        assert!(!item.is_empty(), "{backend}: {lent}");

        // A person puts the drive into a free bay of another kiosk.
        let returned = user
            .run(&[
                "sim",
                "return",
                "--kiosk",
                THERE,
                "--item",
                &item,
                "--data-dir",
                data_dir,
            ])
            .await
            .ok();
        assert_eq!(returned["kioskId"], THERE);
        // The same drive cannot come back twice: it is in a bay now.
        user.run(&[
            "sim",
            "return",
            "--kiosk",
            HERE,
            "--item",
            &item,
            "--data-dir",
            data_dir,
        ])
        .await
        .refused(1, &[&item, "already"]);

        let closed = user.watch_until(&order, "CLOSED").await;
        assert_eq!(closed["order"]["returnedKioskId"], THERE, "{backend}");
        let listed = user.run(&["orders", "--state", "CLOSED"]).await;
        assert!(
            listed.json().iter().any(|o| o["orderId"] == order.as_str()),
            "{listed:?}"
        );

        // Flow 2: find a kiosk that can take a content package, reserve, collect.
        let found = user
            .run(&["kiosks", "near", "52.52", "13.40", "--radius", "20000"])
            .await
            .ok();
        let (kiosk, line) = found["kiosks"]
            .as_array()
            .expect("kiosks")
            .iter()
            .find_map(|k| {
                k["availability"]
                    .as_array()?
                    .iter()
                    .find(|a| {
                        a["reservable"].as_u64().unwrap_or(0) > 0
                            && a["itemType"]["contentPackageId"] != ""
                    })
                    .map(|a| {
                        (
                            k["kioskId"].as_str().unwrap_or_default().to_owned(),
                            a.clone(),
                        )
                    })
            })
            .unwrap_or_else(|| panic!("{backend}: nothing reservable near: {found}"));
        let capacity = line["itemType"]["capacityBytes"]
            .as_str()
            .expect("capacity as a string (uint64)")
            .to_owned();
        let package = line["itemType"]["contentPackageId"]
            .as_str()
            .expect("package")
            .to_owned();
        let reserved = user
            .run(&[
                "reserve",
                "--kiosk",
                &kiosk,
                "--capacity",
                &capacity,
                "--package",
                &package,
            ])
            .await
            .ok();
        let reservation = reserved["order"]["orderId"]
            .as_str()
            .expect("order id")
            .to_owned();
        user.watch_until(&reservation, "READY_FOR_PICKUP").await;
        let qr = user.qr(&kiosk).await;
        let collected = user.run(&["collect", &reservation, "--qr", &qr]).await.ok();
        assert_eq!(collected["order"]["orderId"], reservation.as_str());
        user.watch_until(&reservation, "LENT").await;

        // The operator's audit of it all is clean.
        let audit = run(&["--address", &user.address, "audit", "--data-dir", data_dir]).await;
        assert_eq!(audit.code, Some(0), "{backend}: {audit:?}");

        user.run(&["logout"]).await.ok();
        user.run(&["orders"])
            .await
            .refused(3, &["not logged in", &user.address]);
        node.kill().await;
    }
}

/// The server ends a watch at its token's expiry, judged by the server's clock. A `watch`
/// open across that moment renews the login (though the token still looks valid by this
/// machine's clock) and goes on: it ends at CLOSED with the return, printing no state twice.
#[tokio::test]
async fn a_watch_outlives_its_access_token_and_sees_the_return() {
    for backend in backends() {
        let (sandbox, _channel, operator) = start_priced(&backend, &[ItemKind::Drive]).await;
        let kiosk = SimKiosk::healthy(
            sandbox.node().address,
            &operator,
            "K-CLI",
            vec![Some(drive("D-1")), None],
        )
        .await;
        let dir = tempfile::tempdir().expect("temp dir");
        let user = User::new(sandbox.node().address, dir.path());
        let password = password_file(user.profile.path());
        user.run(&[
            "register",
            "--email",
            "long-watch@example.com",
            "--password-file",
            &password,
        ])
        .await
        .ok();
        user.run(&["deposit", "pay", "--card", CARD]).await.ok();
        until_ok(FLEET_WAIT, || async {
            let ran = user.run(&["scan", &kiosk.qr()]).await;
            let offered = ran.code == Some(0)
                && ran.ok()["lines"]
                    .as_array()
                    .is_some_and(|lines| !lines.is_empty());
            if offered {
                ran
            } else {
                Ran {
                    code: Some(1),
                    ..ran
                }
            }
        })
        .await;
        let rented = user.run(&["rent", "--qr", &kiosk.qr()]).await.ok();
        let order = rented["order"]["orderId"]
            .as_str()
            .expect("order id")
            .to_owned();
        let lent = user.watch_until(&order, "LENT").await;
        let item = lent["order"]["itemId"].as_str().expect("item").to_owned();

        let mut watch = tokio::process::Command::new(binary!())
            .args([
                "--json",
                "--address",
                &user.address,
                "--profile-dir",
                user.profile.path().to_str().expect("utf-8 path"),
                "watch",
                &order,
                "--until",
                "CLOSED",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("watch runs");
        let mut lines = tokio::io::BufReader::new(watch.stdout.take().expect("stdout")).lines();
        // The watch is open once it has replayed the order's first change.
        let mut printed = vec![
            tokio::time::timeout(COMMAND_WAIT, lines.next_line())
                .await
                .expect("the watch prints the order's history")
                .expect("read")
                .expect("a line"),
        ];
        // Past the token's lifetime (15 minutes) and the verifier's leeway, by the server's
        // clock: the server ends the watch, which renews the kept login (the file changes)
        // and watches on; only then does the drive come back.
        let logins = user.profile.path().join("logins");
        let kept = || {
            std::fs::read_dir(&logins)
                .expect("logins")
                .map(|f| std::fs::read(f.expect("entry").path()).expect("login"))
                .collect::<Vec<_>>()
        };
        let before = kept();
        sandbox.clock.advance(chrono::Duration::minutes(20));
        eventually(COMMAND_WAIT, "the watch renews the login", || async {
            kept() != before
        })
        .await;
        kiosk.insert("A2", drive(&item)).await;
        let rest = async {
            while let Some(line) = lines.next_line().await.expect("read") {
                printed.push(line);
            }
            watch.wait_with_output().await.expect("the watch ends")
        };
        let ended = tokio::time::timeout(COMMAND_WAIT, rest)
            .await
            .expect("the watch ends at CLOSED");
        let stderr = String::from_utf8_lossy(&ended.stderr);
        assert_eq!(
            ended.status.code(),
            Some(0),
            "{backend}: {printed:?} {stderr}"
        );
        let changes: Vec<Value> = printed
            .iter()
            .map(|line| serde_json::from_str(line).expect("json"))
            .filter(|change: &Value| change.get("progress").is_none())
            .collect();
        assert_eq!(
            changes.last().map(|c| c["state"].clone()),
            Some(Value::from("ORDER_STATE_CLOSED")),
            "{backend}: {printed:?}"
        );
        let states: Vec<&Value> = changes.iter().map(|c| &c["state"]).collect();
        let mut once = states.clone();
        once.dedup();
        assert_eq!(
            states, once,
            "{backend}: no change printed twice: {printed:?}"
        );
        sandbox.stop().await;
    }
}

#[tokio::test]
async fn command_line_mistakes_are_one_clear_line_with_their_exit_code() {
    let dir = tempfile::tempdir().expect("temp dir");
    let password = password_file(dir.path());
    // Nothing listens on port 1 of loopback: the connection is refused at once.
    let nobody = User::new("127.0.0.1:1", dir.path());

    // A wrong flag: clap's message on one line, exit 2.
    nobody
        .run(&["rent", "--qr", "x", "--bogus"])
        .await
        .refused(2, &["--bogus"]);
    nobody.run(&["rent"]).await.refused(2, &["--qr"]);
    nobody
        .run(&["kiosks", "near", "north", "13.4"])
        .await
        .refused(2, &["north"]);
    run(&["--address", "no-port", "orders"])
        .await
        .refused(2, &["no-port"]);

    // No password: no file, no terminal, nothing on standard input: exit 2 naming the flag.
    nobody
        .run(&["login", "--email", "ann@example.com"])
        .await
        .refused(2, &["--password-file"]);

    // Not logged in: exit 3, before anything is dialled.
    nobody
        .run(&["orders"])
        .await
        .refused(3, &["not logged in", "127.0.0.1:1", "sneakernet login"]);

    // An unreachable node: exit 4, naming the address.
    nobody
        .run(&[
            "login",
            "--email",
            "ann@example.com",
            "--password-file",
            &password,
        ])
        .await
        .refused(4, &["cannot reach 127.0.0.1:1"]);

    // An expired login (both tokens past their time): exit 3, saying to log in again.
    let logins = nobody.profile.path().join("logins");
    std::fs::create_dir_all(&logins).expect("logins dir");
    std::fs::write(
        logins.join("127_0_0_1_1.json"),
        serde_json::json!({
            "address": "127.0.0.1:1",
            "email": "ann@example.com",
            "user_id": "u-1",
            "role": "user",
            "access_token": "expired",
            "access_expires_at": 1,
            "refresh_token": "expired",
            "refresh_expires_at": 2,
        })
        .to_string(),
    )
    .expect("write login");
    nobody
        .run(&["orders"])
        .await
        .refused(3, &["expired", "sneakernet login"]);

    // `sim return` for a node that has no such kiosk: exit 1, naming it.
    let data_dir = dir.path().to_str().expect("utf-8 path");
    nobody
        .run(&[
            "sim",
            "return",
            "--kiosk",
            "K-NOPE",
            "--item",
            "D-1",
            "--data-dir",
            data_dir,
        ])
        .await
        .refused(1, &["K-NOPE"]);
}

/// An operator sets a new kiosk up and tends a bay of a running one, all from the CLI with
/// `--json`: `kiosk add` keeps the QR secret it made in a file only the operator reads,
/// `kiosk credential` writes a secret the kiosk can log in with (and a second one revokes
/// it), `kiosk inventory` prints what the kiosk reports and `kiosk force-eject` opens a bay,
/// which the next inventory shows empty. A user may do none of it.
#[tokio::test]
async fn an_operator_adds_a_kiosk_issues_its_credential_and_tends_a_bay_from_the_cli() {
    use sneakernet_proto::auth::v1 as auth;
    for backend in backends() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = test_config(&backend, dir.path());
        let node = Child::standalone(binary!(), &config, &[])
            .await
            .expect("standalone");
        let operator = User::new(node.address, dir.path());
        let operator_password = dir.path().join("operator.password");
        let operator_password = operator_password.to_str().expect("utf-8 path");
        // Standalone creates its operator after the node listens.
        until_ok(FLEET_WAIT, || async {
            operator
                .run(&[
                    "login",
                    "--email",
                    "operator@sneakernet.example",
                    "--password-file",
                    operator_password,
                ])
                .await
        })
        .await;

        // A split deployment's flags, against the one node: logins go to --auth-address
        // (here the node as a URL, so its kept login is told apart from --address's) and
        // every other call to --address with that login's token.
        let auth_url = format!("http://{}", node.address);
        let split = User::new(node.address, dir.path());
        split
            .run(&[
                "--auth-address",
                &auth_url,
                "login",
                "--email",
                "operator@sneakernet.example",
                "--password-file",
                operator_password,
            ])
            .await
            .ok();
        // (Its kiosks may not be registered yet: an empty list prints nothing.)
        let listed = split
            .run(&["--auth-address", &auth_url, "kiosk", "list"])
            .await;
        assert_eq!(listed.code, Some(0), "{backend}: {listed:?}");
        split
            .run(&["kiosk", "list"])
            .await
            .refused(3, &["not logged in"]);
        // `audit` logs in at --auth-address too: clean there, unreachable (exit 4, naming it)
        // where nothing listens, though --address is right.
        let audit_at = |auth: String| {
            let address = node.address.to_string();
            async move {
                run(&[
                    "--address",
                    &address,
                    "--auth-address",
                    &auth,
                    "audit",
                    "--email",
                    "operator@sneakernet.example",
                    "--password-file",
                    operator_password,
                ])
                .await
            }
        };
        let clean = audit_at(auth_url.clone()).await;
        assert_eq!(clean.code, Some(0), "{backend}: {clean:?}");
        let nowhere = format!("127.0.0.1:{}", free_port());
        audit_at(nowhere.clone())
            .await
            .refused(4, &["log in", &nowhere]);

        let qr_file = operator.profile.path().join("K-CLI-NEW.qr");
        let added = operator
            .run(&[
                "kiosk",
                "add",
                "K-CLI-NEW",
                "--site",
                "S-CLI",
                "--site-name",
                "CLI corner",
                "--lat",
                "52.5",
                "--lon",
                "-13.4",
                "--qr-secret-file",
                qr_file.to_str().expect("utf-8 path"),
            ])
            .await
            .ok();
        assert_eq!(
            added["kiosk"]["profile"]["kioskId"], "K-CLI-NEW",
            "{backend}"
        );
        assert_eq!(added["kiosk"]["profile"]["siteId"], "S-CLI", "{backend}");
        let qr_secret = std::fs::read(&qr_file).expect("the QR secret is kept");
        assert_eq!(qr_secret.len(), 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&qr_file)
                .expect("qr file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
        let shown = operator.run(&["kiosk", "show", "K-CLI-NEW"]).await.ok();
        assert_eq!(shown["profile"]["siteName"], "CLI corner", "{backend}");

        let credential_file = operator.profile.path().join("K-CLI-NEW.secret");
        let issued = operator
            .run(&[
                "kiosk",
                "credential",
                "K-CLI-NEW",
                "--credential-file",
                credential_file.to_str().expect("utf-8 path"),
            ])
            .await
            .ok();
        assert_eq!(issued["kioskId"], "K-CLI-NEW", "{backend}");
        let secret = std::fs::read_to_string(&credential_file).expect("credential file");
        let secret = secret.trim_end().to_owned();
        assert_eq!(issued["secret"], secret.as_str());
        let mut auth_client =
            sneakernet_proto::auth::v1::auth_service_client::AuthServiceClient::connect(format!(
                "http://{}",
                node.address
            ))
            .await
            .expect("connect");
        let kiosk_login = |secret: String| auth::KioskLoginRequest {
            kiosk_id: "K-CLI-NEW".into(),
            secret,
        };
        auth_client
            .kiosk_login(kiosk_login(secret.clone()))
            .await
            .expect("the kiosk logs in with the written secret");
        // Without --json and a file: the secret and the kiosk.toml keys for the agent.
        let mut human = vec![
            "--address",
            &operator.address,
            "--profile-dir",
            operator.profile.path().to_str().expect("utf-8 path"),
        ];
        human.extend(["kiosk", "credential", "K-CLI-NEW"]);
        let printed = run(&human).await;
        assert_eq!(printed.code, Some(0), "{printed:?}");
        for key in [
            "kiosk_id = \"K-CLI-NEW\"",
            "credential_file = ",
            "gateway_url = \"http://",
        ] {
            assert!(printed.stdout.contains(key), "{key}: {printed:?}");
        }
        let status = auth_client
            .kiosk_login(kiosk_login(secret))
            .await
            .expect_err("a new credential revokes the one before");
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{backend}");

        // A running kiosk: its inventory, then one bay opened by force.
        let reported = operator.run(&["kiosk", "inventory", HERE]).await.ok();
        assert_eq!(reported["state"], "COMMAND_STATE_SUCCEEDED", "{backend}");
        let bays = reported["result"]["requestInventory"]["inventory"]["bays"]
            .as_array()
            .expect("bays")
            .clone();
        let full = bays
            .iter()
            .find(|b| b["state"] == "BAY_STATE_READY")
            .unwrap_or_else(|| panic!("{backend}: no ready bay in {reported}"));
        let bay = full["bayId"].as_str().expect("bay id").to_owned();
        let item = full["item"]["itemId"].as_str().expect("item id").to_owned();
        let ejected = operator
            .run(&[
                "kiosk",
                "force-eject",
                HERE,
                "--bay",
                &bay,
                "--key",
                "eject-once",
            ])
            .await
            .ok();
        assert_eq!(ejected["result"]["forceEject"]["itemId"], item.as_str());
        assert_eq!(ejected["idempotencyKey"], "eject-once", "{backend}");
        // A rerun with the same key (a retry after a timeout) is the same request: the same
        // command, answered with its result, not a second eject of whatever is there now.
        let again = operator
            .run(&[
                "kiosk",
                "force-eject",
                HERE,
                "--bay",
                &bay,
                "--key",
                "eject-once",
            ])
            .await
            .ok();
        assert_eq!(again["commandId"], ejected["commandId"], "{backend}");
        assert_eq!(again["result"]["forceEject"]["itemId"], item.as_str());
        // A run without --key is a new request with a key of its own: a new command, which
        // finds the bay empty.
        let anew = operator
            .run(&["kiosk", "force-eject", HERE, "--bay", &bay])
            .await
            .ok();
        assert_ne!(anew["commandId"], ejected["commandId"], "{backend}");
        assert_eq!(
            anew["result"]["forceEject"]["itemId"], "",
            "{backend}: {anew}"
        );
        let fresh_key = anew["idempotencyKey"].as_str().expect("key").to_owned();
        assert!(
            !fresh_key.is_empty() && fresh_key != "eject-once",
            "{backend}: {anew}"
        );
        // The same key for another request is refused, naming the key.
        operator
            .run(&["kiosk", "inventory", HERE, "--key", "eject-once"])
            .await
            .refused(1, &["inventory", "idempotency_key"]);
        operator
            .run(&["kiosk", "inventory", HERE, "--key", ""])
            .await
            .refused(2, &["--key"]);
        let after = operator.run(&["kiosk", "inventory", HERE]).await.ok();
        let emptied = after["result"]["requestInventory"]["inventory"]["bays"]
            .as_array()
            .expect("bays")
            .iter()
            .find(|b| b["bayId"] == bay.as_str())
            .cloned()
            .expect("the bay");
        assert_eq!(emptied["state"], "BAY_STATE_EMPTY", "{backend}: {after}");
        // A bay the kiosk does not have: the kiosk's refusal, exit 1.
        operator
            .run(&["kiosk", "force-eject", HERE, "--bay", "Z99"])
            .await
            .refused(1, &["force-eject bay Z99", "FAILED"]);
        // Bad input is named.
        operator
            .run(&[
                "kiosk",
                "add",
                "K NEW",
                "--site",
                "S",
                "--site-name",
                "S",
                "--lat",
                "1",
                "--lon",
                "1",
                "--qr-secret-file",
                qr_file.to_str().expect("utf-8 path"),
            ])
            .await
            .refused(1, &["add kiosk", "kiosk_id"]);
        operator
            .run(&[
                "kiosk",
                "add",
                "K-2",
                "--site",
                "S",
                "--site-name",
                "S",
                "--lat",
                "north",
            ])
            .await
            .refused(2, &["north"]);

        // A user is refused every operator command.
        let user = User::new(node.address, dir.path());
        let password = password_file(user.profile.path());
        user.run(&[
            "register",
            "--email",
            "not-an-operator@example.com",
            "--password-file",
            &password,
        ])
        .await
        .ok();
        user.run(&["kiosk", "credential", "K-CLI-NEW"])
            .await
            .refused(1, &["K-CLI-NEW", "PermissionDenied"]);

        // The new kiosk's screen: its agent shows the code made from the file `kiosk add`
        // made (named in kiosk.toml as `kiosk add` printed it), and orders takes that code.
        let mut said = vec![
            "--address",
            &operator.address,
            "--profile-dir",
            operator.profile.path().to_str().expect("utf-8 path"),
        ];
        let qr_path = qr_file.to_str().expect("utf-8 path");
        said.extend([
            "kiosk",
            "add",
            "K-CLI-NEW",
            "--site",
            "S-CLI",
            "--site-name",
            "CLI corner",
            "--lat",
            "52.5",
            "--lon",
            "-13.4",
            "--qr-secret-file",
            qr_path,
        ]);
        let said = run(&said).await;
        let qr_line = format!("qr_secret_file = {qr_path:?}");
        assert!(said.stdout.contains(&qr_line), "{backend}: {said:?}");
        let kiosk_toml = dir.path().join("K-CLI-NEW.toml");
        std::fs::write(
            &kiosk_toml,
            format!(
                "kiosk_id = \"K-CLI-NEW\"\ncredential_file = {:?}\nauth_url = \"http://{addr}\"\ngateway_url = \"http://{addr}\"\ndata_dir = {:?}\n{qr_line}\n",
                credential_file.to_str().expect("utf-8 path"),
                dir.path().join("K-CLI-NEW").to_str().expect("utf-8 path"),
                addr = node.address,
            ),
        )
        .expect("kiosk.toml");
        let shown = tokio::process::Command::new(env!("CARGO_BIN_EXE_kiosk-agent-under-test"))
            .arg("--config")
            .arg(&kiosk_toml)
            .arg("qr")
            .output()
            .await
            .expect("kiosk-agent qr ran");
        assert!(shown.status.success(), "{backend}: {shown:?}");
        let screen = String::from_utf8_lossy(&shown.stdout).trim().to_owned();
        assert!(
            screen.starts_with("sneakernet://kiosk/K-CLI-NEW?c="),
            "{screen}"
        );
        // The user has no deposit, so the scan is refused; but not for the code.
        let scanned = user.run(&["scan", &screen]).await;
        scanned.refused(1, &["NO_DEPOSIT"]);
        assert!(!scanned.stderr.contains("QR_CODE_STALE"), "{scanned:?}");
        let forged = format!("{}00000000", &screen[..screen.len() - 8]);
        if forged != screen {
            user.run(&["scan", &forged])
                .await
                .refused(1, &["QR_CODE_STALE"]);
        }
        user.run(&["kiosk", "inventory", HERE])
            .await
            .refused(1, &["PermissionDenied"]);
        node.kill().await;
    }
}

/// Standalone answers health SERVING (overall and per service) only once its operator, users
/// and simulated kiosks are ready, and then prints one line saying it is ready, with its
/// address: when health first says SERVING, and when the line appears, every simulated kiosk
/// is online.
#[tokio::test]
async fn standalone_serves_health_and_says_ready_only_once_its_kiosks_are_online() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    for backend in backends() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = test_config(&backend, dir.path());
        let data_dir = dir.path().to_str().expect("utf-8 path");
        let mut command = tokio::process::Command::new(binary!());
        command
            .args([
                "standalone",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                data_dir,
            ])
            .env("SNEAKERNET_LOG__FILTER", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(url) = &config.database_url {
            command.env("SNEAKERNET_DATABASE_URL", url).env(
                "SNEAKERNET_DATABASE_SCHEMA_PREFIX",
                &config.database_schema_prefix,
            );
        }
        let mut node = command.spawn().expect("standalone runs");
        let mut lines = tokio::io::BufReader::new(node.stdout.take().expect("stdout")).lines();
        let next_line = async |lines: &mut tokio::io::Lines<_>| {
            tokio::time::timeout(FLEET_WAIT, lines.next_line())
                .await
                .expect("standalone prints on")
                .expect("read")
                .expect("standalone is still running")
        };
        let address = loop {
            let line: String = next_line(&mut lines).await;
            if let Some((_, address)) = line
                .strip_prefix("sneakernet: serving ")
                .and_then(|rest| rest.rsplit_once(" on "))
            {
                break address.to_owned();
            }
        };
        let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))
            .expect("url")
            .connect()
            .await
            .expect("the node listens");
        let mut health = HealthClient::new(channel);
        let orders = health
            .check(HealthCheckRequest {
                service: "sneakernet.orders.v1.OrderService".into(),
            })
            .await
            .expect("health answers")
            .into_inner()
            .status;
        let mut watch = health
            .watch(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health watch")
            .into_inner();
        let first = watch.message().await.expect("status").expect("a status");
        assert_eq!(
            (orders, first.status),
            (
                ServingStatus::NotServing as i32,
                ServingStatus::NotServing as i32
            ),
            "{backend}: serving before the kiosks exist"
        );

        // The operator is one of what standalone makes ready; once SERVING it logs in.
        let operator = User::new(&address, dir.path());
        let operator_password = dir.path().join("operator.password");
        let every_kiosk_online = async || {
            operator
                .run(&[
                    "login",
                    "--email",
                    "operator@sneakernet.example",
                    "--password-file",
                    operator_password.to_str().expect("utf-8 path"),
                ])
                .await
                .ok();
            let listed = operator.run(&["kiosk", "list", "--online"]).await;
            assert_eq!(listed.code, Some(0), "{listed:?}");
            let mut online: Vec<String> = listed
                .json()
                .iter()
                .map(|k| k["profile"]["kioskId"].as_str().unwrap_or("?").to_owned())
                .collect();
            online.sort();
            online
        };
        let serving = tokio::time::timeout(FLEET_WAIT, async {
            while let Some(change) = watch.message().await.expect("status") {
                if change.status == ServingStatus::Serving as i32 {
                    return true;
                }
            }
            false
        })
        .await
        .expect("SERVING in time");
        assert!(serving, "{backend}: the health watch ended");
        let all = vec![
            "K-BER-ALEX".to_owned(),
            "K-BER-HBF".to_owned(),
            "K-BER-OSTKREUZ".to_owned(),
        ];
        assert_eq!(every_kiosk_online().await, all, "{backend}: at SERVING");

        let ready = loop {
            let line: String = next_line(&mut lines).await;
            if line.starts_with("sneakernet: ready") {
                break line;
            }
        };
        assert!(ready.contains(&address), "{backend}: {ready}");
        assert!(ready.contains("3 simulated kiosks online"), "{ready}");
        assert_eq!(
            health
                .check(HealthCheckRequest {
                    service: "sneakernet.orders.v1.OrderService".into(),
                })
                .await
                .expect("health answers")
                .into_inner()
                .status,
            ServingStatus::Serving as i32
        );
        node.kill().await.expect("kill standalone");
    }
}

/// What keeps a node from starting is one line naming it, and a non-zero exit: a data
/// directory that cannot be written or is a file, a listen address already in use.
#[tokio::test]
async fn start_up_mistakes_are_one_line_naming_the_path_or_address() {
    let dir = tempfile::tempdir().expect("temp dir");
    // /sys refuses new files even to root (tests may run as root, which ignores modes).
    #[cfg(target_os = "linux")]
    run(&[
        "standalone",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        "/sys",
    ])
    .await
    .refused(1, &["data directory /sys", "not writable"]);
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").expect("file");
    let file = file.to_str().expect("utf-8 path");
    run(&["standalone", "--listen", "127.0.0.1:0", "--data-dir", file])
        .await
        .refused(1, &[file, "not a directory"]);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = taken.local_addr().expect("address").to_string();
    let data_dir = dir.path().join("data");
    run(&[
        "standalone",
        "--listen",
        &address,
        "--data-dir",
        data_dir.to_str().expect("utf-8 path"),
    ])
    .await
    .refused(1, &[&format!("cannot listen on {address}"), "in use"]);
    // A peer address left in a shared config file would send standalone's own calls away.
    let shared = dir.path().join("shared.toml");
    std::fs::write(
        &shared,
        "[orders]\ngateway_url = \"http://10.0.0.7:50051\"\n",
    )
    .expect("config file");
    run(&[
        "--config",
        shared.to_str().expect("utf-8 path"),
        "standalone",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data_dir.to_str().expect("utf-8 path"),
    ])
    .await
    .refused(
        1,
        &[
            "orders.gateway_url",
            "SNEAKERNET_ORDERS__GATEWAY_URL",
            "every role",
        ],
    );
}

#[tokio::test]
async fn the_demo_tells_a_walk_up_rental_then_a_reservation_and_ends_with_a_clean_audit() {
    // `demo` starts its own standalone node on a free port with a temporary data directory:
    // nothing to set up, which is what a newcomer runs first.
    // The demo gives itself a minute to bring its kiosks online and five for the story.
    let ran = run_within(Duration::from_secs(420), &["demo"]).await;
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let story = &ran.stdout;
    let in_order = [
        "simulated kiosks are online",
        "Paid the deposit",
        "Rented a",
        "Following the order (WatchOrder)",
        "Returned ",
        "Looked for kiosks within",
        "Following the reservation while the kiosk provisions a drive",
        "Collected the reservation (CollectReservation)",
        "On the road,",
        "Returned ",
        "demo complete: every step reached its state and the audit is clean",
    ];
    let mut from = 0;
    for step in in_order {
        let at = story[from..]
            .find(step)
            .unwrap_or_else(|| panic!("{step:?} missing, or out of order, in the demo:\n{story}"));
        from += at + step.len();
    }
    assert!(!ran.stderr.contains("panicked"), "{ran:?}");
}
