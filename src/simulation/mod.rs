//! Simulation, never used by `pbxlink run`: the built-in peers `pbxlink demo` runs against
//! and the tests judge with. The AMI simulator plays an Asterisk Manager Interface; the CRM
//! stand-in checks every request as LeadSquared would and can fail, stall, redirect,
//! rate-limit and answer with garbage. (The real-PBX tests use the real Asterisk and
//! FreeSWITCH rigs, not these.)

pub mod ami;
pub mod crm_standin;
