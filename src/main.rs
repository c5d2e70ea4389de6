//! The `chatbridge` binary: parse the command line, set up logging, hand over to the library.

use std::process::ExitCode;

use chatbridge::cli::{self, Cli, Command};
use clap::Parser;
use tokio::signal::unix::{Signal, SignalKind, signal};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `run` logs as `[log]` says; a configuration that does not load is reported below.
    let log = matches!(cli.command, Command::Run)
        .then(|| cli::load_config(&cli).ok().map(|config| config.log))
        .flatten();
    chatbridge::logging::init(log.as_ref());
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
            eprintln!(
                "chatbridge: {}",
                chatbridge::printable::escape_lines(&e.to_string())
            );
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

/// Completes on the first signal that asks the daemon to stop (TERM, INT, QUIT: each drains
/// the same way), after logging it. HUP, USR1 and USR2 are logged and ignored (reloading is not
/// supported yet): no signal a service manager or an operator commonly sends ends the process
/// without a line in the log.
///
/// The handlers are installed before this returns, so a signal arriving while the daemon
/// starts is already handled.
fn terminated() -> impl std::future::Future<Output = ()> {
    let mut term = install(SignalKind::terminate(), "SIGTERM");
    let mut int = install(SignalKind::interrupt(), "SIGINT");
    let mut quit = install(SignalKind::quit(), "SIGQUIT");
    let mut hup = install(SignalKind::hangup(), "SIGHUP");
    let mut usr1 = install(SignalKind::user_defined1(), "SIGUSR1");
    let mut usr2 = install(SignalKind::user_defined2(), "SIGUSR2");
    async move {
        loop {
            tokio::select! {
                () = received(&mut term) => return tracing::info!("SIGTERM received; stopping"),
                () = received(&mut int) => return tracing::info!("SIGINT received; stopping"),
                () = received(&mut quit) => return tracing::info!("SIGQUIT received; stopping"),
                () = received(&mut hup) => {
                    tracing::warn!("reload is not supported yet; ignoring SIGHUP");
                }
                () = received(&mut usr1) => tracing::warn!("SIGUSR1 has no meaning here; ignoring it"),
                () = received(&mut usr2) => tracing::warn!("SIGUSR2 has no meaning here; ignoring it"),
            }
        }
    }
}

/// Listens for `kind`; `None` (logged) when the handler cannot be installed.
fn install(kind: SignalKind, name: &str) -> Option<Signal> {
    signal(kind)
        .inspect_err(|e| tracing::error!(signal = name, error = %e, "cannot handle this signal"))
        .ok()
}

/// Completes when the signal arrives; never when it could not be installed.
async fn received(signal: &mut Option<Signal>) {
    match signal {
        Some(signal) => {
            if signal.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}
