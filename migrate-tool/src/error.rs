//! `MigrateError`: what stops a command before or outside the per-object work, with a hint.

use std::path::PathBuf;

use crate::exit_code;
use crate::pin::PinError;
use crate::uri::UriError;

/// An error that ends a command. Per-object failures are not errors: they go in the report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// A command-line combination that cannot work.
    #[error("{0}")]
    Usage(String),
    /// The audit log cannot be opened, trusted or written.
    #[error("{0}")]
    Audit(#[from] crate::audit::AuditError),
    /// The journal cannot be read, parsed or written.
    #[error("journal {}: {reason}", path.display())]
    Journal {
        /// The journal file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// C_Login refused the PIN.
    #[error("login to {who} ({uri}) failed: {rv}")]
    Login {
        /// "--from", "--to".
        who: String,
        /// The token's URI.
        uri: String,
        /// The return code name.
        rv: String,
        /// The environment variable the PIN may come from.
        pin_env: String,
    },
    /// The PKCS#11 module cannot be loaded or initialised.
    #[error("module {}: {reason}", path.display())]
    Module {
        /// The module file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// No PIN could be read.
    #[error(transparent)]
    Pin(#[from] PinError),
    /// A PKCS#11 call outside any one object's work failed.
    #[error("{context}: {reason}")]
    Pkcs11 {
        /// What the tool was doing.
        context: String,
        /// The call and its return code.
        reason: String,
    },
    /// No token, or more than one, matches the URI.
    #[error("{who}: {reason}")]
    Token {
        /// "--from", "--to".
        who: String,
        /// What matched, or didn't.
        reason: String,
    },
    /// The URI does not parse.
    #[error("{who}: {source}")]
    Uri {
        /// "--from", "--to".
        who: String,
        /// The parse error.
        source: UriError,
    },
}

impl MigrateError {
    /// A line that says what to try.
    pub fn hint(&self) -> Option<String> {
        match self {
            Self::Usage(_) => Some("see keyferry --help".to_owned()),
            Self::Audit(_) => Some(
                "keyferry audit verify LOG shows the first bad line; move a broken log aside to start a new one".to_owned(),
            ),
            Self::Journal { .. } => Some(
                "pass the journal a run wrote (keyferry-RUN.journal in the directory it ran in) with --journal"
                    .to_owned(),
            ),
            Self::Login { who, pin_env, .. } => Some(format!(
                "check the PIN for {who}: pin-source=file:PATH in the URI, {pin_env}, or the prompt; every wrong PIN counts towards the token's lockout"
            )),
            Self::Module { .. } => Some(
                "give module-path=PATH in the URI (SoftHSMv2: /usr/lib/softhsm/libsofthsm2.so), or set KEYFERRY_MODULE"
                    .to_owned(),
            ),
            Self::Pin(_) => Some(
                "use pin-source=file:PATH in the URI, set the environment variable, or run on a terminal"
                    .to_owned(),
            ),
            Self::Pkcs11 { .. } => None,
            Self::Token { .. } => Some("list the tokens with: keyferry slots --module PATH".to_owned()),
            Self::Uri { source, .. } => match source {
                UriError::PinOnCommandLine => Some(
                    "use pin-source=file:PATH in the URI, set KEYFERRY_FROM_PIN / KEYFERRY_TO_PIN, or run on a terminal"
                        .to_owned(),
                ),
                _ => Some(
                    "a token URI looks like pkcs11:token=LABEL?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:pin.txt"
                        .to_owned(),
                ),
            },
        }
    }

    /// The exit code this error ends the process with.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Pkcs11 { .. } | Self::Audit(_) => exit_code::SOME_FAILED,
            Self::Usage(_)
            | Self::Journal { .. }
            | Self::Login { .. }
            | Self::Module { .. }
            | Self::Pin(_)
            | Self::Token { .. }
            | Self::Uri { .. } => exit_code::USAGE,
        }
    }

    /// Wraps a cryptoki error with what the tool was doing.
    pub fn pkcs11(context: impl Into<String>, error: &cryptoki::error::Error) -> Self {
        Self::Pkcs11 {
            context: context.into(),
            reason: crate::names::cryptoki_error(error),
        }
    }
}
