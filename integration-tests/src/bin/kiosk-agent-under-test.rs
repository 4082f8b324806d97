//! The `kiosk-agent` program with fault injection: tests run it as a child process they can
//! kill. `FAILPOINTS=name=action;...` arms the pause points compiled into the agent.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let cli = sneakernet_kiosk_agent::cli::Cli::parse();
    sneakernet_integration_tests::child_main(sneakernet_kiosk_agent::cli::run(cli))
}
