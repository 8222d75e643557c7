//! `[[virtual_numbers]]` and `[[agents]]`: the company's DIDs and who its agents are, on the
//! PBX and in LeadSquared. Both lists are applied live on reload.

use serde::Deserialize;

use super::Problems;
use crate::phone::PhoneNormalizer;

/// `[[virtual_numbers]]`: a DID the company owns, and the tag LeadSquared files its calls under.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VirtualNumber {
    /// The number, in any form the normaliser understands.
    pub number: String,
    /// Sent as `Tag` with calls on this number.
    #[serde(default)]
    pub tag: Option<String>,
}

/// `[[agents]]`: one agent's PBX extension and LeadSquared identity.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    /// The agent's extension on the PBX (e.g. "100").
    pub extension: String,
    /// The agent's phone number as LeadSquared knows the user.
    #[serde(default)]
    pub phone: Option<String>,
    /// The agent's LeadSquared login e-mail.
    #[serde(default)]
    pub email: Option<String>,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// LeadSquared user id, sent as `UserId`.
    #[serde(default)]
    pub user_id: Option<String>,
    /// The agent's queue member interface (for unpausing after a disposition);
    /// default: the originate agent channel, e.g. `PJSIP/100`.
    #[serde(default)]
    pub queue_interface: Option<String>,
    /// The agent's name in FreeSWITCH's mod_callcenter (a disposition sets it Available);
    /// default: the extension.
    #[serde(default)]
    pub callcenter_agent: Option<String>,
}

impl Agent {
    /// The mod_callcenter agent name: `callcenter_agent`, else the extension.
    pub fn callcenter_agent_name(&self) -> &str {
        self.callcenter_agent.as_deref().unwrap_or(&self.extension)
    }
}

/// Every problem of the virtual numbers and agents; numbers are checked with `normalizer`
/// when the default country is valid (else that is the problem reported).
pub(crate) fn check(
    virtual_numbers: &[VirtualNumber],
    agents: &[Agent],
    normalizer: Option<&PhoneNormalizer>,
    problems: &mut Problems,
) {
    for (i, vn) in virtual_numbers.iter().enumerate() {
        if let Some(n) = normalizer {
            if n.normalize(&vn.number).is_none() {
                problems.add(
                    format!("virtual_numbers[{i}].number"),
                    format!("{:?} is not a valid phone number", vn.number),
                );
            }
        }
    }
    let mut extensions = std::collections::HashSet::new();
    // mod_callcenter name → whether an agent set it explicitly (a clash of two defaults is
    // the duplicate extension already reported).
    let mut callcenter_agents = std::collections::HashMap::new();
    for (i, agent) in agents.iter().enumerate() {
        if agent.extension.trim().is_empty() {
            problems.add(format!("agents[{i}].extension"), "is required");
        } else if !extensions.insert(agent.extension.as_str()) {
            problems.add(
                format!("agents[{i}].extension"),
                format!("extension {:?} is listed twice", agent.extension),
            );
        }
        if let (Some(phone), Some(n)) = (&agent.phone, normalizer) {
            if n.normalize(phone).is_none() {
                problems.add(
                    format!("agents[{i}].phone"),
                    format!("{phone:?} is not a valid phone number"),
                );
            }
        }
        if let Some(name) = &agent.callcenter_agent {
            if name.trim().is_empty() {
                problems.add(
                    format!("agents[{i}].callcenter_agent"),
                    "must not be empty (leave it out to use the extension)",
                );
                continue;
            }
            if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                problems.add(
                    format!("agents[{i}].callcenter_agent"),
                    format!(
                        "\"{}\" has a space or control character, which would end the agent's \
                         name in a callcenter_config command",
                        crate::logtext::Escaped(name)
                    ),
                );
                continue;
            }
        }
        let callcenter = agent.callcenter_agent_name();
        let explicit = agent.callcenter_agent.is_some();
        if callcenter.trim().is_empty() {
            continue;
        }
        match callcenter_agents.insert(callcenter, explicit) {
            Some(earlier) if earlier || explicit => problems.add(
                format!("agents[{i}].callcenter_agent"),
                format!("mod_callcenter agent {callcenter:?} belongs to two agents"),
            ),
            _ => {}
        }
    }
}
