//! Security plugins: who may pass, and answers the gateway gives on its own.

pub mod acl;
pub mod cors;
pub mod ip_restriction;
pub mod request_termination;
pub mod request_validator;
