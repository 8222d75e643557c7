//! FreeSWITCH as a PBX source: the event socket (ESL) wire layer, the live call tracker that
//! turns ESL events into call facts, and the actions (click to call, freeing a mod_callcenter
//! agent) as ESL commands.

pub mod control;
pub mod esl;
pub mod tracker;
