//! Parses one mod_json_cdr document (one leg) into an [`FsLeg`].
//!
//! The document is an object with `variables` (the channel variables; URL-encoded when
//! json_cdr's `encode-values` is on, the default), `callflow` (the leg's caller profiles,
//! newest first: an array since 2015, the key repeated in older versions, of which the last
//! is kept), each with `caller_profile` and `times` (epoch microseconds), `app_log` (the
//! applications run) and `channel_data`.
//!
//! A value is URL-decoded only when it could have been written by FreeSWITCH's URL encoder:
//! a value holding a character that encoder always escapes (space, `@`, `:`, `"` ...) was
//! written with `encode-values=false` and is kept as it is.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::{Map, Value};

use crate::call::TimeWindow;
use crate::pbx::freeswitch::cdr::leg::{FsLeg, push_unique};
use crate::pbx::freeswitch::cdr::vars::{LegError, VarReader};

/// Why a json_cdr document is not a leg.
#[derive(Debug, thiserror::Error)]
pub enum JsonCdrError {
    /// Not JSON (or cut short: a file still being written).
    #[error("not a JSON document: {0}")]
    Json(#[from] serde_json::Error),
    /// JSON, but not a json_cdr document.
    #[error("not a json_cdr document: {0}")]
    Shape(&'static str),
    /// A json_cdr document whose leg is unusable.
    #[error("json_cdr leg: {0}")]
    Leg(#[from] LegError),
}

/// Characters FreeSWITCH's URL encoder (`SWITCH_URL_UNSAFE`, switch_utils.h) always
/// escapes, `%` aside.
const ALWAYS_ESCAPED: &[u8] = b"\r\n #&+:;<=>?@[\\]^`{|}\"";

/// `value` URL-decoded when it can be an encoded value (see the module documentation).
pub fn decode_value(value: &str) -> String {
    let raw = value
        .bytes()
        .any(|b| ALWAYS_ESCAPED.contains(&b) || !(b' '..=b'~').contains(&b));
    if raw || !value.contains('%') {
        return value.to_owned();
    }
    percent_encoding::percent_decode_str(value)
        .decode_utf8_lossy()
        .into_owned()
}

fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(decode_value(s)),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// One caller profile of the leg's callflow.
struct Profile<'a> {
    index: Option<u32>,
    profile: &'a Map<String, Value>,
    ran_dialplan: bool,
    times: Option<&'a Map<String, Value>>,
}

impl Profile<'_> {
    fn text(&self, key: &str) -> Option<String> {
        self.profile
            .get(key)
            .and_then(value_text)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn micros(&self, key: &str) -> Option<DateTime<Utc>> {
        let v = self.times?.get(key).and_then(value_text)?;
        let micros = v.trim().parse::<i64>().ok().filter(|m| *m > 0)?;
        DateTime::<Utc>::from_timestamp_micros(micros)
    }
}

/// The callflow's profiles, oldest first.
fn profiles(doc: &Map<String, Value>) -> Vec<Profile<'_>> {
    let entries: Vec<&Map<String, Value>> = match doc.get("callflow") {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_object).collect(),
        Some(Value::Object(one)) => vec![one],
        _ => Vec::new(),
    };
    let mut out: Vec<Profile<'_>> = entries
        .into_iter()
        .filter_map(|entry| {
            let profile = entry.get("caller_profile")?.as_object()?;
            Some(Profile {
                index: entry
                    .get("profile_index")
                    .and_then(value_text)
                    .and_then(|i| i.trim().parse().ok()),
                profile,
                ran_dialplan: entry.get("extension").is_some_and(Value::is_object),
                times: entry.get("times").and_then(Value::as_object),
            })
        })
        .collect();
    // json_cdr writes the newest profile first; profile_index counts from the oldest.
    out.reverse();
    if out.iter().all(|p| p.index.is_some()) {
        out.sort_by_key(|p| p.index);
    }
    out
}

/// `"name" <number>` (the `caller_id` variable) → (name, number).
fn split_caller_id(caller_id: &str) -> (Option<String>, Option<String>) {
    let number = caller_id
        .rsplit_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(n, _)| n.trim().to_owned())
        .filter(|n| !n.is_empty());
    let name = caller_id
        .split_once('<')
        .map(|(n, _)| n.trim().trim_matches('"').trim().to_owned())
        .filter(|n| !n.is_empty());
    (name, number)
}

/// Parses one json_cdr document (the bytes of one file) read at a time inside `window`,
/// stamps being in `time_zone`.
pub fn parse_json_cdr(
    bytes: &[u8],
    time_zone: Tz,
    window: TimeWindow,
) -> Result<FsLeg, JsonCdrError> {
    let doc: Value = serde_json::from_slice(bytes)?;
    let doc = doc
        .as_object()
        .ok_or(JsonCdrError::Shape("not an object"))?;
    let vars = doc
        .get("variables")
        .and_then(Value::as_object)
        .ok_or(JsonCdrError::Shape("no \"variables\" object"))?;
    let profiles = profiles(doc);
    let get = |name: &str| vars.get(name).and_then(value_text);
    let reader = VarReader::new(&get, time_zone, window);
    let fallback = (
        profiles.first().and_then(|p| {
            p.micros("profile_created_time")
                .or_else(|| p.micros("created_time"))
        }),
        profiles.iter().find_map(|p| p.micros("answered_time")),
        profiles.last().and_then(|p| p.micros("hangup_time")),
    );
    let mut leg = reader.leg(fallback)?;

    if leg.direction.is_none() {
        leg.direction = doc
            .get("channel_data")
            .and_then(|c| c.get("direction"))
            .and_then(Value::as_str)
            .and_then(crate::pbx::freeswitch::cdr::leg::LegDirection::parse);
    }
    if !profiles.is_empty() {
        leg.contexts.clear();
        leg.destinations.clear();
        for p in &profiles {
            if let Some(c) = p.text("context") {
                push_unique(&mut leg.contexts, &c);
            }
            if let Some(d) = p.text("destination_number") {
                push_unique(&mut leg.destinations, &d);
            }
        }
        leg.dialplan_destination = profiles
            .iter()
            .find(|p| p.ran_dialplan)
            .and_then(|p| p.text("destination_number"));
        if let Some(first) = profiles.first() {
            leg.caller_id_number = first.text("caller_id_number");
            leg.caller_id_name = first.text("caller_id_name");
            leg.ani = leg.ani.take().or_else(|| first.text("ani"));
        }
    }
    if leg.caller_id_number.is_none() {
        if let Some(cid) = reader.text("caller_id") {
            let (name, number) = split_caller_id(&cid);
            leg.caller_id_number = number;
            leg.caller_id_name = leg.caller_id_name.take().or(name);
        }
    }
    let mut applications = Vec::new();
    if let Some(apps) = doc
        .get("app_log")
        .and_then(|a| a.get("applications"))
        .and_then(Value::as_array)
    {
        for app in apps {
            if let Some(name) = app.get("app_name").and_then(value_text) {
                push_unique(&mut applications, name.trim());
            }
        }
    }
    for app in &leg.applications {
        push_unique(&mut applications, app);
    }
    leg.applications = applications;
    Ok(leg)
}
