//! What loading can report: fatal errors ([`ConfigError`], each invalid value as a [`FieldError`]) and
//! non-fatal [`Warning`]s.

use std::fmt;
use std::path::PathBuf;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The file is not well-formed YAML (or JSON).
    #[error("{}: not valid YAML: {source}", file_name(path))]
    Syntax {
        /// The file, when the text came from one.
        path: Option<PathBuf>,
        /// The parser's message; it carries the line and column.
        source: serde_yaml::Error,
    },
    /// The file parsed, but some values are invalid. Every invalid value is listed, in key order of discovery.
    #[error("{}", FieldErrors(.0))]
    Invalid(Vec<FieldError>),
}

impl ConfigError {
    /// The individual invalid values, if this is [`ConfigError::Invalid`].
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            ConfigError::Invalid(errors) => errors,
            _ => &[],
        }
    }
}

fn file_name(path: &Option<PathBuf>) -> String {
    path.as_ref().map_or_else(|| "config".to_owned(), |p| p.display().to_string())
}

/// Displays a list of field errors one per line.
struct FieldErrors<'a>(&'a [FieldError]);

impl fmt::Display for FieldErrors<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// One invalid value: where it is and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The full key path, dotted, with `[i]` for list items: `prefixes.v4`, `dns.nameservers.global[1]`.
    pub path: String,
    /// Why the value was rejected, written to follow `path: ` on one line.
    pub message: String,
}

impl FieldError {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError { path: path.into(), message: message.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// How loud a [`Warning`] should be logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Informational: a setting is accepted for compatibility but has no effect.
    Info,
    /// Probably a mistake, or a setting that will stop working.
    Warn,
}

/// Something worth telling the operator that does not stop the server from starting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// The key path the warning is about (or the section, e.g. `database.gorm`).
    pub path: String,
    /// What the warning says.
    pub kind: WarningKind,
}

/// The kinds of [`Warning`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WarningKind {
    /// The key is not a Headscale or tailwarden setting; it is ignored.
    UnknownKey {
        /// A known key with a similar spelling, if there is one.
        suggestion: Option<&'static str>,
    },
    /// The key still works but has a replacement.
    Deprecated {
        /// What to use instead.
        replacement: &'static str,
    },
    /// A renamed key was given together with its replacement; the old one is ignored.
    Superseded {
        /// The key whose value is used.
        by: &'static str,
    },
    /// The key is accepted for compatibility with Headscale but tailwarden does nothing with it.
    NotActedOn {
        /// Why, and what to do instead if anything.
        reason: &'static str,
    },
    /// An address prefix lies outside the range Tailscale clients assume.
    NonStandardPrefix {
        /// The configured prefix.
        prefix: String,
        /// The standard range it should be a subset of.
        standard: &'static str,
    },
    /// A prefix had bits set beyond its length; the network address is used.
    HostBitsSet {
        /// As written.
        given: String,
        /// As used.
        used: String,
    },
    /// A duration was written as a bare number, which tailwarden reads as seconds (Headscale reads it as
    /// nanoseconds, which is never what anyone means).
    BareSeconds {
        /// The number as written.
        seconds: u64,
    },
    /// No DERP region would be offered to clients, so peers that cannot connect directly cannot talk.
    EmptyDerpMap,
    /// The embedded DERP server is enabled but clients can only reach it over TLS, and there is none.
    DerpWithoutTls,
    /// `derp.server.insecure_for_tests` is on with a certificate clients could verify.
    InsecureDerpWithRealCertificate,
}

impl Warning {
    pub(crate) fn new(path: impl Into<String>, kind: WarningKind) -> Warning {
        Warning { path: path.into(), kind }
    }

    /// How loud this warning should be logged.
    pub fn level(&self) -> Level {
        match self.kind {
            WarningKind::NotActedOn { .. } | WarningKind::Superseded { .. } => Level::Info,
            _ => Level::Warn,
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.path)?;
        match &self.kind {
            WarningKind::UnknownKey { suggestion: Some(s) } => write!(f, "unknown key, ignored (did you mean `{s}`?)"),
            WarningKind::UnknownKey { suggestion: None } => f.write_str("unknown key, ignored"),
            WarningKind::Deprecated { replacement } => write!(f, "deprecated; use {replacement}"),
            WarningKind::Superseded { by } => write!(f, "renamed to `{by}`, which is also set; this key is ignored"),
            WarningKind::NotActedOn { reason } => write!(f, "accepted but not acted on: {reason}"),
            WarningKind::NonStandardPrefix { prefix, standard } => write!(
                f,
                "{prefix} is not inside {standard}; Tailscale clients assume addresses from that range and may \
                 misbehave (Headscale does not support this either)"
            ),
            WarningKind::HostBitsSet { given, used } => write!(f, "{given} has host bits set; using {used}"),
            WarningKind::BareSeconds { seconds } => {
                write!(f, "bare number {seconds} read as seconds; write `{seconds}s` to be explicit")
            }
            WarningKind::EmptyDerpMap => f.write_str(
                "no DERP region is configured (embedded server off or not added, derp.urls and derp.paths empty); \
                 nodes that cannot connect directly will not reach each other",
            ),
            WarningKind::DerpWithoutTls => f.write_str(
                "the embedded DERP server is enabled but server_url is http:// and tls_listen_addr is empty; \
                 Tailscale clients speak DERP only over TLS, so the region will be unreachable",
            ),
            WarningKind::InsecureDerpWithRealCertificate => f.write_str(
                "clients are told not to verify the DERP server's certificate although a real one is configured",
            ),
        }
    }
}
