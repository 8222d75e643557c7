//! Simulation, never used by `pbxlink run`: the built-in peers `pbxlink demo` runs against
//! and the tests judge with. The AMI simulator plays an Asterisk Manager Interface; the
//! event-socket simulator a FreeSWITCH `mod_event_socket`, fed with legs ([`fs_leg`]) whose
//! mod_json_cdr files the json_cdr writer writes; the CRM stand-in checks every request as LeadSquared would and can fail, stall, redirect,
//! rate-limit and answer with garbage. (The real-PBX tests use the real Asterisk and
//! FreeSWITCH rigs, not these.)

pub mod ami;
pub mod crm_standin;
pub mod esl;
pub mod fs_leg;
pub mod json_cdr;
