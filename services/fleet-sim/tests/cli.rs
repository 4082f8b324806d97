//! The command line refuses mistakes with one line and exit code 2, before touching the
//! network. (Also makes `cargo test --workspace` build the binary CI's smoke step runs.)

use std::process::Command;

fn fleet_sim(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_fleet-sim"))
        .args(args)
        .output()
        .expect("run fleet-sim");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn mistakes_are_one_line_and_exit_2() {
    for (args, says) in [
        (&["hold", "--bogus"][..], "--bogus"),
        (
            &["hold", "--gateway", "not a url", "--kiosks", "1"][..],
            "--gateway",
        ),
        (
            &["hold", "--gateway", "ftp://x:1", "--kiosks", "1"][..],
            "http://",
        ),
        (
            &["hold", "--echo", "http://127.0.0.1:1", "--kiosks", "0"][..],
            "--kiosks",
        ),
        (
            &["hold", "--echo", "http://127.0.0.1:1", "--kiosks", "20000"][..],
            "--kiosks",
        ),
        (
            &["hold", "--echo", "http://10.0.0.1:1", "--sources", "3"][..],
            "--sources",
        ),
        (
            &[
                "hold",
                "--gateway",
                "http://127.0.0.1:1",
                "--echo",
                "http://127.0.0.1:2",
            ][..],
            "--echo",
        ),
        (
            &["hold", "--gateway", "http://127.0.0.1:1", "--prefix", "a b"][..],
            "--prefix",
        ),
        (
            &["hold", "--gateway", "http://127.0.0.1:1", "--kiosks", "1"][..],
            "operator",
        ),
        (
            &["hold", "--echo", "http://127.0.0.1:1", "--pid", "999999999"][..],
            "--pid",
        ),
        (
            &["hold", "--echo", "http://127.0.0.1:1", "--metrics-url", "x"][..],
            "--metrics-url",
        ),
        (
            &["compare", "/nonexistent/fleet-sim.json"][..],
            "/nonexistent",
        ),
    ] {
        let (code, stderr) = fleet_sim(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.contains(says),
            "{args:?} should name {says}: {stderr}"
        );
    }
}

#[test]
fn an_unreachable_echo_fails_with_errors_not_a_hang() {
    // Nothing listens on port 1: every link fails to connect, the run ends by its timeouts.
    let (code, stderr) = fleet_sim(&[
        "hold",
        "--echo",
        "http://127.0.0.1:1",
        "--kiosks",
        "3",
        "--hold",
        "1s",
        "--connect-timeout",
        "2s",
        "--settle",
        "0s",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("connect"), "{stderr}");
}
