//! The `chatbridge` binary: parse the command line, set up logging, hand over to the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use chatbridge::cli::{self, Cli, Command};
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let outcome = match cli.command {
        Command::Check => cli::check(&cli),
        _ => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(dispatch(&cli)),
            Err(e) => Err(cli::CliError::Failed(format!(
                "cannot start the runtime: {e}"
            ))),
        },
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chatbridge: {e}");
            e.exit_code()
        }
    }
}

async fn dispatch(cli: &Cli) -> Result<(), cli::CliError> {
    match cli.command {
        Command::Run => {
            let config = cli::load_config(cli)?;
            chatbridge::daemon::run(config, terminated())
                .await
                .map_err(cli::CliError::from)
        }
        _ => cli::execute(cli).await,
    }
}

/// Completes on the first SIGTERM or SIGINT.
async fn terminated() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
