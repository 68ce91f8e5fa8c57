//! Validation errors: each names the field by its path in the document.

use std::fmt;

/// One problem in a config, at one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Where, e.g. `applications[0].deployments[1].max_ongoing_requests`; empty for the document.
    pub path: String,
    /// What is wrong, e.g. `must be > 0`.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one document; a config with any of them is rejected as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in document order.
    pub errors: Vec<FieldError>,
}

impl ConfigError {
    /// An error at one field.
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { errors: vec![FieldError { path: path.into(), message: message.into() }] }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(f, "invalid serve config ({n} error{}):", if n == 1 { "" } else { "s" })?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}
