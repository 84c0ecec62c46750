//! Validation errors that name the entity, the field path and (for files) line and column.

use std::fmt;

use serde::Serialize;
use utoipa::ToSchema;

/// One problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// Which entity, e.g. `route 'orders-api'`.
    pub entity: String,
    /// Field path, e.g. `services[0].routes[1].paths[0]`.
    pub path: String,
    /// What is wrong, and what would be right.
    pub message: String,
    /// 1-based line in the source file, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// 1-based column in the source file, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

impl FieldError {
    /// Builds an error without a source position.
    pub fn new(
        entity: impl Into<String>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        FieldError {
            entity: entity.into(),
            path: path.into(),
            message: message.into(),
            line: None,
            column: None,
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, "line {l}, column {c}: ")?;
        }
        let path = if self.path.is_empty() {
            "(root)"
        } else {
            &self.path
        };
        write!(f, "{}: {}: {}", self.entity, path, self.message)
    }
}

/// A configuration that was rejected, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// All problems, in document order.
    pub errors: Vec<FieldError>,
    /// The document itself is malformed (YAML syntax, a value of the wrong type, an
    /// unknown field) rather than well-formed but breaking a rule: the admin API answers
    /// 400 for the first, 422 for the second.
    pub malformed: bool,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.errors.len();
        write!(
            f,
            "invalid configuration ({n} error{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl From<Vec<FieldError>> for ConfigError {
    fn from(errors: Vec<FieldError>) -> Self {
        ConfigError {
            errors,
            malformed: false,
        }
    }
}
