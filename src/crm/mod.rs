//! CRM clients. LeadSquared's Generic Telephony Connector is the one CRM pbxlink speaks.

pub mod leadsquared;
