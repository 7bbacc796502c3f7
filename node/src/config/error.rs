//! Configuration errors: every message names the setting it is about.

use std::fmt;
use std::path::PathBuf;

/// One refused setting: the dotted field name (`s3.bucket`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the setting, e.g. `http.listen`.
    pub field: String,
    /// What is wrong, e.g. `must not be empty`.
    pub message: String,
}

impl FieldError {
    /// Builds a field error.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML.
    #[error("config file {} is not valid TOML: {message}", path.display())]
    Syntax {
        /// The file (or `<string>` for in-memory text).
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A `CAS_NODE__…` environment variable could not be applied.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable's name.
        var: String,
        /// What is wrong with it.
        message: String,
    },
    /// One or more settings were refused; each names its field.
    #[error("invalid configuration:{}", list(.0))]
    Invalid(Vec<FieldError>),
}

impl ConfigError {
    /// The refused settings, if this error is about settings (empty otherwise).
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            ConfigError::Invalid(errors) => errors,
            _ => &[],
        }
    }

    /// A single refused setting.
    pub(crate) fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid(vec![FieldError::new(field, message)])
    }
}

fn list(errors: &[FieldError]) -> String {
    errors.iter().map(|e| format!("\n  {e}")).collect()
}
