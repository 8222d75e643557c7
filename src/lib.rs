//! pbxlink connects a self-hosted PBX (Asterisk, later FreeSWITCH) to the LeadSquared CRM.
//!
//! Data flows one way: a PBX source (CDR file, live events) → the PBX-neutral call model
//! ([`call`]) → the durable SQLite outbox ([`outbox`]) → the CRM client ([`crm`]).

pub mod tail;
