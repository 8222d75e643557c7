//! Writes mod_json_cdr's files for simulated legs, as FreeSWITCH 1.10 does with
//! `log-b-leg=true`, `prefix-a-leg=true` and `encode-values=true` (the captures in
//! `tests/fixtures/freeswitch/*/json_cdr`): one file per leg when it ends, A legs
//! `a_<uuid>.cdr.json`, B legs `<uuid>.cdr.json`, holding `core-uuid`, `switchname`,
//! `channel_data`, `variables` (values URL-encoded), `app_log` and `callflow` (the caller
//! profile with its `times` in epoch microseconds; `extension` with the dialplan applications
//! on a leg that ran the dialplan). Like mod_json_cdr it writes the file in place
//! (open, write, close): the reader must cope with a file it sees half written.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::esl::{CORE_UUID, HOSTNAME, url_encode};
use super::fs_leg::SimLeg;

/// mod_json_cdr's log directory.
#[derive(Debug, Clone)]
pub struct JsonCdrWriter {
    dir: PathBuf,
}

impl JsonCdrWriter {
    /// Writes into `dir` (created if missing).
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// The directory (`[freeswitch] json_cdr_dir`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file name mod_json_cdr gives `leg`.
    pub fn file_name(leg: &SimLeg) -> String {
        if leg.b_leg {
            format!("{}.cdr.json", leg.uuid)
        } else {
            format!("a_{}.cdr.json", leg.uuid)
        }
    }

    /// Writes `leg`'s file; returns its path.
    pub async fn write(&self, leg: &SimLeg) -> std::io::Result<PathBuf> {
        let path = self.dir.join(Self::file_name(leg));
        let text = serde_json::to_vec(&document(leg)).map_err(std::io::Error::other)?;
        tokio::fs::write(&path, text).await?;
        Ok(path)
    }
}

/// The json_cdr document of `leg`.
pub fn document(leg: &SimLeg) -> Value {
    let us = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or(0, |t| t.timestamp_micros()).to_string()
    };
    let variables: Map<String, Value> = leg
        .all_variables()
        .into_iter()
        .map(|(k, v)| (k, Value::String(url_encode(&v))))
        .collect();
    let applications: Vec<Value> = leg
        .applications
        .iter()
        .map(|(name, data)| json!({ "app_name": name, "app_data": data }))
        .collect();
    let mut callflow = json!({
        "dialplan": "XML",
        "profile_index": "1",
        "caller_profile": {
            "username": leg.caller_id_number,
            "dialplan": "XML",
            "caller_id_name": leg.caller_id_name,
            "ani": leg.caller_id_number,
            "aniii": "",
            "caller_id_number": leg.caller_id_number,
            "network_addr": "127.0.0.1",
            "rdnis": "",
            "destination_number": leg.destination,
            "uuid": leg.uuid,
            "source": "mod_sofia",
            "context": leg.context,
            "chan_name": leg.channel_name,
        },
        "times": {
            "created_time": us(Some(leg.created)),
            "profile_created_time": us(Some(leg.created)),
            "progress_time": "0",
            "progress_media_time": "0",
            "answered_time": us(leg.answered),
            "bridged_time": us(leg.bridged),
            "last_hold_time": "0",
            "hold_accum_time": "0",
            "hangup_time": us(Some(leg.ended)),
            "resurrect_time": "0",
            "transfer_time": "0",
        },
    });
    if !leg.placed && !leg.applications.is_empty() {
        callflow["extension"] = json!({
            "name": leg.destination,
            "number": leg.destination,
            "applications": applications,
        });
    }
    json!({
        "core-uuid": CORE_UUID,
        "switchname": HOSTNAME,
        "channel_data": {
            "state": "CS_REPORTING",
            "direction": leg.direction(),
            "state_number": "11",
            "flags": "0=1;1=1;3=1;36=1;37=1;39=1;42=1;47=1;53=1;112=1;113=1;114=1;123=1",
            "caps": "1=1;2=1;3=1;4=1;5=1;6=1",
        },
        "callStats": { "audio": { "inbound": {}, "outbound": {} } },
        "variables": variables,
        "app_log": { "applications": leg.applications.iter().map(|(name, data)| json!({
            "app_name": name,
            "app_data": data,
            "app_stamp": us(Some(leg.created)),
        })).collect::<Vec<_>>() },
        "callflow": [callflow],
    })
}
