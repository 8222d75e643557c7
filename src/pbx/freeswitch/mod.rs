//! FreeSWITCH as a PBX source: the event socket (ESL) wire layer for now; the client, call
//! tracking and CDR sources build on it.

pub mod esl;
