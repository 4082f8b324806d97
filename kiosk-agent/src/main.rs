//! `kiosk-agent`: see `kiosk-agent --help`. Every error is one `error: ...` line and exit 1.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = sneakernet_kiosk_agent::cli::Cli::parse();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    match sneakernet_kiosk_agent::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            let line = format!("{error:#}").replace('\n', "; ");
            eprintln!("error: {line}");
            std::process::ExitCode::FAILURE
        }
    }
}
