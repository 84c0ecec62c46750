//! Gatehouse's admin REST API, its OpenAPI document and the config controller behind it.

pub mod api;
pub mod calls;
pub mod control;
pub mod creds;
pub mod entity;
pub mod error;
mod form;
pub mod input;
pub mod openapi;

pub use api::{build, AdminState};
pub use control::{Control, ControlError};
