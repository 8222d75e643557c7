//! The TOML configuration: its schema, defaults, secret resolution and validation, one file
//! per section with its checks and its reload classification beside its types.
//!
//! Every table denies unknown keys, so a typo is an error that names the key instead of a
//! setting silently ignored. Secrets can be written inline, read from a `*_file` key (so the
//! main file can be world-readable) or taken from an environment variable. Values such as
//! time zones, CIDR networks and CDR column lists are parsed once, when the file is read
//! ([`parsed`]); [`Config::problems`] names every bad key at once.
//!
//! Sections: [`store`], [`leadsquared`], [`directory`] (virtual numbers and agents),
//! [`asterisk`], [`freeswitch`], [`http`], [`recordings`]; [`reload`] says which keys a SIGHUP applies live.

pub mod asterisk;
pub mod dialing;
pub mod directory;
pub mod freeswitch;
pub mod http;
pub mod leadsquared;
pub mod parsed;
mod problem;
pub mod recordings;
pub mod reload;
mod secret;
pub mod store;

use std::path::Path;

use serde::Deserialize;

pub use crate::call::TransferLogs;
use crate::phone::PhoneNormalizer;
pub use crate::tail::StartAt;
pub use asterisk::{
    ASTERISK_CDR_COLUMNS, AmiLogin, AmiSettings, AsteriskConfig, CallLogSource, CdrFormat,
    FreeAgent, OriginateConfig,
};
pub use dialing::DialFormat;
pub use directory::{Agent, VirtualNumber};
pub use freeswitch::{
    CdrCsvTemplate, EslConfig, FREESWITCH_CDR_COLUMNS, FreeSwitchCallLogSource, FreeSwitchConfig,
    FreeSwitchFileSource, FreeSwitchFreeAgent, FreeSwitchOriginateConfig,
};
pub use http::{HttpConfig, ParamNames};
pub use leadsquared::{
    Credentials, ENV_ACCESS_KEY, ENV_SECRET_KEY, LeadSquaredConfig, StatusNames,
};
pub use parsed::{CdrColumns, ColumnRules, NetworkList, TimeZone, parse_network};
pub(crate) use problem::Problems;
pub use problem::{ConfigError, ConfigProblem};
pub use recordings::RecordingsConfig;
use reload::{KeyChanges, ReloadKeys};
pub use store::{StoreConfig, Synchronous};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The SQLite store.
    #[serde(default)]
    pub store: StoreConfig,
    /// The LeadSquared side.
    #[serde(default)]
    pub leadsquared: LeadSquaredConfig,
    /// The virtual numbers (DIDs) the company owns.
    #[serde(default)]
    pub virtual_numbers: Vec<VirtualNumber>,
    /// The agents: their PBX extension and their identity in LeadSquared.
    #[serde(default)]
    pub agents: Vec<Agent>,
    /// The Asterisk side; absent when no Asterisk is connected.
    pub asterisk: Option<AsteriskConfig>,
    /// The FreeSWITCH side; absent when no FreeSWITCH is connected.
    pub freeswitch: Option<FreeSwitchConfig>,
    /// The HTTP API LeadSquared and the dialplan call; absent: no HTTP server.
    pub http: Option<HttpConfig>,
    /// Signed links to the PBX's recordings; absent: ResourceURL only from a URL template.
    pub recordings: Option<RecordingsConfig>,
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config = Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })?;
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }

    /// Parses TOML text without validating values.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// Every problem with the values, each with its key. Empty means valid.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut problems = Problems::default();
        self.leadsquared.check(&mut problems);
        let normalizer = self.phone_normalizer().ok();
        directory::check(
            &self.virtual_numbers,
            &self.agents,
            normalizer.as_ref(),
            &mut problems,
        );
        if self.asterisk.is_none() && self.freeswitch.is_none() {
            problems.add(
                "asterisk",
                "no PBX configured: add an [asterisk] table with cdr_csv (or a [freeswitch] table)",
            );
        }
        if let Some(ast) = &self.asterisk {
            ast.check(normalizer.as_ref(), &mut problems);
        }
        if let Some(fs) = &self.freeswitch {
            fs.check(&mut problems);
        }
        if let Some(http) = &self.http {
            http.check(&mut problems);
        }
        if let Some(recordings) = &self.recordings {
            recordings.check(self.http.is_some(), &mut problems);
        }
        problems.into_vec()
    }

    /// The single sign-on password: inline, from `sso_password_file`, or none.
    pub fn sso_password(&self) -> Result<Option<String>, ConfigProblem> {
        self.leadsquared.sso_password()
    }

    /// Resolves the CRM credentials: inline value, else `*_file`, else the environment.
    pub fn credentials(&self) -> Result<Credentials, ConfigProblem> {
        self.leadsquared.credentials()
    }

    /// The phone normaliser for this configuration's default country.
    pub fn phone_normalizer(&self) -> Result<PhoneNormalizer, crate::phone::PhoneError> {
        self.leadsquared.phone_normalizer()
    }
}

/// Live: the agents and virtual numbers, and what `[leadsquared]` says is live; a PBX or
/// HTTP table appearing or going away needs a restart.
impl ReloadKeys for Config {
    fn compare(&self, new: &Self, changes: &mut KeyChanges) {
        let Config {
            store,
            leadsquared,
            virtual_numbers,
            agents,
            asterisk,
            freeswitch,
            http,
            recordings,
        } = self;
        store.compare(&new.store, changes);
        leadsquared.compare(&new.leadsquared, changes);
        changes.live("virtual_numbers", virtual_numbers, &new.virtual_numbers);
        changes.live("agents", agents, &new.agents);
        changes.optional("asterisk", asterisk, &new.asterisk);
        changes.optional("freeswitch", freeswitch, &new.freeswitch);
        changes.optional("http", http, &new.http);
        changes.optional("recordings", recordings, &new.recordings);
    }
}

#[cfg(test)]
mod tests;
