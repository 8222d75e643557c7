//! How click to call writes the lead's number for the PBX to dial; shared by
//! `[asterisk.originate]` and `[freeswitch.originate]`.

use serde::Deserialize;

/// How the lead's number is dialled.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DialFormat {
    /// `+919611795983`
    E164,
    /// `919611795983`
    E164Digits,
    /// `9611795983`
    National,
}

impl DialFormat {
    /// The name the config file uses for it.
    pub fn name(self) -> &'static str {
        match self {
            DialFormat::E164 => "e164",
            DialFormat::E164Digits => "e164_digits",
            DialFormat::National => "national",
        }
    }
}
