//! The `sneakernet` binary with fault injection: tests run it as a child process they can kill.
//! `FAILPOINTS=name=action;...` arms fail-rs failpoints compiled into the services (the
//! `failpoints` feature is on only in builds that include this crate).

use clap::Parser;

fn main() -> std::process::ExitCode {
    let _scenario = fail::FailScenario::setup();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let cli = sneakernet::cli::Cli::parse();
    match runtime.block_on(sneakernet::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
