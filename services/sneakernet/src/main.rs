//! `sneakernet`: see `sneakernet --help`.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    sneakernet_runtime::tls::install_crypto_provider();
    let cli = sneakernet::cli::Cli::parse();
    match sneakernet::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // One line a person can act on; no backtrace for a configuration mistake.
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
