//! `calltrail simulate` without building the server:
//! `cargo run --release -p calltrail-sim --example simulate -- --scenario scenarios/small.toml`.

use clap::Parser;

#[derive(Parser)]
#[command(name = "simulate")]
struct Cli {
    #[command(flatten)]
    args: calltrail_sim::SimulateArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match calltrail_sim::run(Cli::parse().args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
