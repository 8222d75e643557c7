//! FreeSWITCH as a PBX source: the event socket (ESL) wire layer, the live call tracker that
//! turns ESL events into call facts, call logs from its CDR files (mod_json_cdr, mod_cdr_csv)
//! grouped into calls, and the actions (click to call, freeing a mod_callcenter agent) as ESL
//! commands.

pub mod assemble;
pub mod cdr;
pub mod control;
pub mod esl;
pub mod json_cdr;
pub mod tracker;
pub mod wiring;
