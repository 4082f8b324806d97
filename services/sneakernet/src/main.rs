//! `sneakernet`: see `sneakernet --help`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    sneakernet_runtime::tls::install_crypto_provider();
    let cli = sneakernet::cli::parse();
    match sneakernet::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // One line a person can act on; no backtrace for a configuration mistake.
            eprintln!("error: {error:#}");
            std::process::ExitCode::from(sneakernet::cli::exit_code(&error))
        }
    }
}
