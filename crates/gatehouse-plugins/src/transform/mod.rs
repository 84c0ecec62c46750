//! Transformation plugins.

pub mod correlation_id;
pub mod grpc_web;
pub mod request_transformer;
pub mod response_transformer;
