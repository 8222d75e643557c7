//! LeadSquared: payloads, the HTTP client and its answer classification, and a local stand-in.

pub mod client;
pub mod lead;
pub mod payload;
pub mod popup;
pub mod route;
/// The CRM stand-in the demo and the tests use (it lives in [`crate::simulation`]).
pub use crate::simulation::crm_standin as standin;

pub use client::LeadSquaredClient;
pub use payload::PayloadFormat;
