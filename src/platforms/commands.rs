//! The operator commands a platform adds to the `chatbridge` binary (`chatbridge matrix …`),
//! part of the registry: the CLI flattens [`PlatformCommand`] into its own commands.

use crate::config::Config;

/// A platform's own command group.
#[derive(Debug, clap::Subcommand)]
pub enum PlatformCommand {
    /// What a Matrix homeserver needs from chatbridge.
    Matrix {
        #[command(subcommand)]
        action: super::matrix::cli::MatrixAction,
    },
}

impl PlatformCommand {
    /// Runs the command on `config` (none needs Redis): what it prints, or why it cannot.
    pub fn run(&self, config: &Config) -> Result<String, String> {
        match self {
            Self::Matrix { action } => action.run(config),
        }
    }
}
