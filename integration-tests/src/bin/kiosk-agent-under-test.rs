//! The `kiosk-agent` program with fault injection: tests run it as a child process they can
//! kill. `FAILPOINTS=name=action;...` arms the pause points compiled into the agent.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let _scenario = fail::FailScenario::setup();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
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
    let cli = sneakernet_kiosk_agent::cli::Cli::parse();
    match runtime.block_on(sneakernet_kiosk_agent::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", format!("{error:#}").replace('\n', "; "));
            std::process::ExitCode::FAILURE
        }
    }
}
