//! `chatbridge matrix …`: what a Matrix homeserver needs from chatbridge.

use super::config::MatrixLinkConfig;
use crate::config::Config;

/// The `matrix` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum MatrixAction {
    /// Print the application-service registration (YAML) of a Matrix link, for the
    /// homeserver to load (Synapse: `app_service_config_files`). It holds both tokens.
    Registration {
        /// The Matrix link (needed when there are several).
        #[arg(long)]
        link: Option<String>,
    },
}

impl MatrixAction {
    /// What the command prints, or why it cannot.
    pub fn run(&self, config: &Config) -> Result<String, String> {
        match self {
            Self::Registration { link } => {
                let (name, matrix) = pick(config, link.as_deref())?;
                // A Matrix link always starts the HTTP server: `[http]`'s address or the default.
                let listen = config.http_server().unwrap_or_default().listen;
                Ok(super::registration::yaml(name, matrix, listen))
            }
        }
    }
}

/// The Matrix link named `link`, or the only one.
fn pick<'a>(
    config: &'a Config,
    link: Option<&str>,
) -> Result<(&'a str, &'a MatrixLinkConfig), String> {
    let matrix: Vec<_> = config
        .links
        .iter()
        .filter_map(|(name, l)| Some((name.as_str(), l.kind.matrix()?)))
        .collect();
    let names = || {
        matrix
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (link, matrix.as_slice()) {
        (Some(wanted), _) => matrix
            .iter()
            .find(|(n, _)| *n == wanted)
            .copied()
            .ok_or_else(|| match names().as_str() {
                "" => format!("no link {wanted:?} of kind \"matrix\": the configuration has none"),
                all => format!("no link {wanted:?} of kind \"matrix\" (Matrix links: {all})"),
            }),
        (None, [one]) => Ok(*one),
        (None, []) => Err("the configuration has no link of kind \"matrix\"".into()),
        (None, _) => Err(format!(
            "several Matrix links ({}): say which with --link",
            names()
        )),
    }
}
