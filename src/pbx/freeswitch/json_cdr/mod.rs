//! FreeSWITCH call logs from mod_json_cdr: one JSON document per leg in a directory.
//!
//! - [`parse`]: one document → [`crate::pbx::freeswitch::cdr::FsLeg`] ([`parse_json_cdr`]),
//!   URL-encoded values decoded as json_cdr writes them.
//! - [`source`]: the directory as a source ([`JsonCdrDirSource`]): new files are picked up,
//!   remembered in the store by name and identity, left in place.

pub mod parse;
pub mod source;

pub use parse::{JsonCdrError, decode_value, parse_json_cdr};
pub use source::{JsonCdrDirSource, ScanError, ScanReport, StagedLegParser, json_counters};

#[cfg(test)]
mod tests;
