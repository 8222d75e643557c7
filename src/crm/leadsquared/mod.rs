//! LeadSquared: payloads, the HTTP client and its answer classification, and a local stand-in.

pub mod client;
pub mod lead;
pub mod payload;
pub mod popup;
pub mod route;
pub mod standin;

pub use client::LeadSquaredClient;
pub use payload::PayloadFormat;
