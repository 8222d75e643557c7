//! FreeSWITCH as a PBX source: the event socket (ESL) wire layer, and call logs from its CDR
//! files (mod_json_cdr, mod_cdr_csv) grouped into calls.

pub mod assemble;
pub mod cdr;
pub mod esl;
pub mod json_cdr;
