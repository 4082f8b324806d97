//! The `sneakernet` binary with fault injection: tests run it as a child process they can kill.
//! `FAILPOINTS=name=action;...` arms fail-rs failpoints compiled into the services (the
//! `failpoints` feature is on only in builds that include this crate).

fn main() -> std::process::ExitCode {
    let cli = sneakernet::cli::parse();
    sneakernet_integration_tests::child_main(sneakernet::cli::run(cli))
}
