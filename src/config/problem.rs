//! What can be wrong with a configuration: one problem with the key it concerns, and why a
//! file could not be loaded.

use std::path::PathBuf;

/// One problem found in a configuration, with the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigProblem {
    /// Dotted key path, e.g. `leadsquared.call_log_url` or `agents[2].phone`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigProblem {
    /// A problem with `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema (the message names the key).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, naming the key and line.
        message: String,
    },
    /// The file parsed but has invalid values.
    #[error("{} problem(s) in {path}:\n  {}", problems.len(), problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n  "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<ConfigProblem>,
    },
}

/// The problems a validation pass collects, in the order found.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<ConfigProblem>);

impl Problems {
    /// Records a problem with `key`.
    pub(crate) fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem::new(key, message));
    }

    /// Records the problem of `result`, if any.
    pub(crate) fn check<T>(&mut self, result: Result<T, ConfigProblem>) {
        if let Err(problem) = result {
            self.0.push(problem);
        }
    }

    /// Every problem recorded.
    pub(crate) fn into_vec(self) -> Vec<ConfigProblem> {
        self.0
    }
}
