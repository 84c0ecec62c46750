//! Transformation plugins.

pub mod correlation_id;
