//! The company's agents and virtual numbers, indexed for the call builders of every PBX.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::Number;
use crate::config::Config;
use crate::phone::{E164, PhoneNormalizer};

/// An agent as the call log needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// PBX extension.
    pub extension: String,
    /// The agent's phone, as LeadSquared knows the user.
    pub phone: Option<E164>,
    /// LeadSquared user id.
    pub user_id: Option<String>,
    /// Login e-mail.
    pub email: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Queue member interface to unpause after a disposition.
    #[serde(default)]
    pub queue_interface: Option<String>,
}

/// A virtual number (DID) of the company.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualNumberInfo {
    /// The normalised number.
    pub number: E164,
    /// Its tag.
    pub tag: Option<String>,
}

/// Looks up agents by extension and virtual numbers by number; normalises numbers.
#[derive(Debug, Clone)]
pub struct Directory {
    normalizer: PhoneNormalizer,
    agents: HashMap<String, AgentInfo>,
    virtual_numbers: Vec<VirtualNumberInfo>,
}

impl Directory {
    /// Builds the directory from a validated configuration.
    pub fn from_config(config: &Config) -> Result<Self, crate::phone::PhoneError> {
        let normalizer = config.phone_normalizer()?;
        let agents = config
            .agents
            .iter()
            .map(|a| {
                (
                    a.extension.clone(),
                    AgentInfo {
                        extension: a.extension.clone(),
                        phone: a.phone.as_deref().and_then(|p| normalizer.normalize(p)),
                        user_id: a.user_id.clone(),
                        email: a.email.clone(),
                        name: a.name.clone(),
                        queue_interface: a.queue_interface.clone(),
                    },
                )
            })
            .collect();
        let virtual_numbers = config
            .virtual_numbers
            .iter()
            .filter_map(|v| {
                normalizer
                    .normalize(&v.number)
                    .map(|number| VirtualNumberInfo {
                        number,
                        tag: v.tag.clone(),
                    })
            })
            .collect();
        Ok(Self {
            normalizer,
            agents,
            virtual_numbers,
        })
    }

    /// A number as written by the PBX, with its E.164 form when it has one.
    pub fn number(&self, raw: &str) -> Number {
        Number {
            raw: raw.to_owned(),
            e164: self.normalizer.normalize(raw),
        }
    }

    /// The agent with this extension.
    pub fn agent(&self, extension: &str) -> Option<&AgentInfo> {
        self.agents.get(extension)
    }

    /// The agent whose phone is this number (any form the normaliser understands).
    pub fn agent_by_phone(&self, raw: &str) -> Option<&AgentInfo> {
        let number = self.normalizer.normalize(raw)?;
        self.agents
            .values()
            .find(|a| a.phone.as_ref() == Some(&number))
    }

    /// The agent with this e-mail (case-insensitive).
    pub fn agent_by_email(&self, email: &str) -> Option<&AgentInfo> {
        let email = email.trim();
        self.agents.values().find(|a| {
            a.email
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(email))
        })
    }

    /// The agent with this LeadSquared user id.
    pub fn agent_by_user_id(&self, user_id: &str) -> Option<&AgentInfo> {
        self.agents
            .values()
            .find(|a| a.user_id.as_deref() == Some(user_id.trim()))
    }

    /// Normalises a raw number (None when it is not a phone number).
    pub fn normalize(&self, raw: &str) -> Option<E164> {
        self.normalizer.normalize(raw)
    }

    /// Whether this text is a configured agent extension.
    pub fn is_agent_extension(&self, extension: &str) -> bool {
        self.agents.contains_key(extension)
    }

    /// The virtual number this raw number is, if any.
    pub fn virtual_number(&self, raw: &str) -> Option<&VirtualNumberInfo> {
        let e164 = self.normalizer.normalize(raw)?;
        self.virtual_numbers.iter().find(|v| v.number == e164)
    }

    /// The first configured virtual number (the fallback DisplayNumber).
    pub fn first_virtual_number(&self) -> Option<&VirtualNumberInfo> {
        self.virtual_numbers.first()
    }

    /// Whether a raw number is an outside phone number rather than an internal extension.
    pub fn is_external(&self, raw: &str) -> bool {
        !self.is_agent_extension(raw) && self.normalizer.normalize(raw).is_some()
    }
}
