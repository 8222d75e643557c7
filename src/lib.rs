//! pbxlink connects a self-hosted PBX (Asterisk, later FreeSWITCH) to the LeadSquared CRM.
//!
//! Data flows one way: a PBX source ([`pbx`]: CDR files, live events) → the PBX-neutral
//! call model ([`call`]) → the durable SQLite outbox ([`outbox`]) → the CRM client ([`crm`]).
//! [`pipeline`] is the file-tailing path shared by every PBX; [`daemon`] wires it all.

pub mod backoff;
pub mod call;
pub mod config;
pub mod crm;
pub mod daemon;
pub mod demo;
pub mod http;
pub mod import;
pub mod logtext;
pub mod metrics;
pub mod outbox;
pub mod pbx;
pub mod phone;
pub mod pipeline;
pub mod recordings;
pub mod service;
pub mod simulation;
pub mod tail;
