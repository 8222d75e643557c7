//! Values written as text in the file and parsed once, when the file is read: time zones,
//! the networks of `allow_from` and CDR column lists.
//!
//! A value that does not parse is kept with its error instead of failing the whole parse, so
//! that `Config::problems` (and `pbxlink check-config`) names every bad key at once; a
//! configuration that `Config::load` returns has none. Each type dereferences to the text as
//! written, so code that still reads the text keeps compiling; new code reads the parsed
//! value (`zone()`, `networks()`, `names()`).

use std::net::IpAddr;

use chrono_tz::Tz;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

use super::Problems;

/// An IANA time zone (`UTC`, `Asia/Kolkata`), parsed when the file is read.
#[derive(Clone, PartialEq, Eq)]
pub struct TimeZone {
    name: String,
    zone: Option<Tz>,
}

impl TimeZone {
    /// The zone named `name` (kept unparsed, and reported by the check, when unknown).
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            zone: name.parse().ok(),
        }
    }

    /// The name as written.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The zone; None only when the file names an unknown zone (a validated configuration
    /// never does).
    pub fn zone(&self) -> Option<Tz> {
        self.zone
    }

    /// Reports an unknown zone under `key`.
    pub(crate) fn check(&self, key: &str, problems: &mut Problems) {
        if self.zone.is_none() {
            problems.add(key, format!("unknown IANA time zone {:?}", self.name));
        }
    }
}

impl Default for TimeZone {
    fn default() -> Self {
        Self::new("UTC")
    }
}

impl<'de> Deserialize<'de> for TimeZone {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|name| Self::new(&name))
    }
}

impl std::fmt::Debug for TimeZone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.name, f)
    }
}

impl std::fmt::Display for TimeZone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl std::ops::Deref for TimeZone {
    type Target = str;
    fn deref(&self) -> &str {
        &self.name
    }
}

impl PartialEq<str> for TimeZone {
    fn eq(&self, other: &str) -> bool {
        self.name == other
    }
}

impl PartialEq<&str> for TimeZone {
    fn eq(&self, other: &&str) -> bool {
        self.name == *other
    }
}

/// A network of an allow-list: `10.0.0.0/8`, `192.168.1.7` or `::1` (a single address is
/// a network of one).
pub fn parse_network(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

/// A list of networks (`[http] allow_from`), parsed when the file is read.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NetworkList {
    written: Vec<String>,
    networks: Vec<IpNet>,
    unparsed: Vec<usize>,
}

impl NetworkList {
    /// The list from the entries as written.
    pub fn new(written: Vec<String>) -> Self {
        let mut networks = Vec::with_capacity(written.len());
        let mut unparsed = Vec::new();
        for (i, text) in written.iter().enumerate() {
            match parse_network(text) {
                Some(net) => networks.push(net),
                None => unparsed.push(i),
            }
        }
        Self {
            written,
            networks,
            unparsed,
        }
    }

    /// The networks (those that parsed; a validated configuration has no others).
    pub fn networks(&self) -> &[IpNet] {
        &self.networks
    }

    /// Reports every entry that is not a network, as `key[i]`.
    pub(crate) fn check(&self, key: &str, problems: &mut Problems) {
        for &i in &self.unparsed {
            problems.add(
                format!("{key}[{i}]"),
                format!("{:?} is not an address or CIDR network", self.written[i]),
            );
        }
    }
}

impl<'de> Deserialize<'de> for NetworkList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Vec::<String>::deserialize(deserializer).map(Self::new)
    }
}

impl std::fmt::Debug for NetworkList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.written, f)
    }
}

impl std::ops::Deref for NetworkList {
    type Target = [String];
    fn deref(&self) -> &[String] {
        &self.written
    }
}

/// What a CDR writer's column list must satisfy: the columns every call log needs (each
/// requirement is met by any one of its names) and how names are compared.
#[derive(Debug)]
pub struct ColumnRules {
    /// Each entry: one of these names must be among the columns.
    pub required: &'static [&'static [&'static str]],
    /// Names are compared lower-cased (Asterisk's CDR variables are case-insensitive).
    pub lowercase: bool,
    /// A name may be written as the template writes it, `${name}`.
    pub variable_syntax: bool,
}

/// A CDR column list (`cdr_columns`): every name trimmed and normalised by its section's
/// [`ColumnRules`], duplicates and missing required columns found when the file is read.
#[derive(Clone, PartialEq, Eq)]
pub struct CdrColumns {
    written: Vec<String>,
    names: Vec<String>,
    error: Option<String>,
}

impl CdrColumns {
    /// The list as written, checked against `rules`.
    pub fn new(written: Vec<String>, rules: &ColumnRules) -> Self {
        let names: Vec<String> = written
            .iter()
            .map(|name| normalise_column(name, rules))
            .collect();
        let error = column_error(&names, rules);
        Self {
            written,
            names,
            error,
        }
    }

    /// The normalised names, in file order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Why the list is unusable, if it is.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Reports an unusable list under `key`.
    pub(crate) fn check(&self, key: &str, problems: &mut Problems) {
        if let Some(error) = &self.error {
            problems.add(key, error.clone());
        }
    }
}

fn normalise_column(name: &str, rules: &ColumnRules) -> String {
    let mut name = name.trim();
    if rules.variable_syntax {
        if let Some(inner) = name.strip_prefix("${").and_then(|n| n.strip_suffix('}')) {
            name = inner.trim();
        }
    }
    if rules.lowercase {
        name.to_ascii_lowercase()
    } else {
        name.to_owned()
    }
}

fn column_error(names: &[String], rules: &ColumnRules) -> Option<String> {
    let mut seen = std::collections::HashSet::new();
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() {
            return Some(format!("column {i} has no name"));
        }
        if !seen.insert(name.as_str()) {
            return Some(format!("column {name:?} is listed twice"));
        }
    }
    for any_of in rules.required {
        if !any_of.iter().any(|wanted| seen.contains(wanted)) {
            let wanted = any_of
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(" or ");
            return Some(format!(
                "the column list lacks {wanted}, which every call log needs"
            ));
        }
    }
    None
}

impl std::fmt::Debug for CdrColumns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.written, f)
    }
}

impl std::ops::Deref for CdrColumns {
    type Target = [String];
    fn deref(&self) -> &[String] {
        &self.written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: ColumnRules = ColumnRules {
        required: &[&["src"], &["start", "start_epoch"]],
        lowercase: true,
        variable_syntax: true,
    };

    fn columns(names: &[&str]) -> CdrColumns {
        CdrColumns::new(names.iter().map(|n| (*n).to_owned()).collect(), &RULES)
    }

    #[test]
    fn a_time_zone_is_parsed_once_and_an_unknown_one_is_reported() {
        let kolkata = TimeZone::new("Asia/Kolkata");
        assert_eq!(kolkata.zone(), Some(chrono_tz::Asia::Kolkata));
        assert_eq!(kolkata, "Asia/Kolkata");
        assert_eq!(format!("{kolkata:?}"), "\"Asia/Kolkata\"");
        assert_eq!(TimeZone::default().zone(), Some(chrono_tz::UTC));
        let mars = TimeZone::new("Mars/Olympus");
        assert_eq!(mars.zone(), None);
        let mut problems = Problems::default();
        mars.check("leadsquared.time_zone", &mut problems);
        kolkata.check("asterisk.cdr_time_zone", &mut problems);
        assert_eq!(
            problems.into_vec(),
            vec![crate::config::ConfigProblem::new(
                "leadsquared.time_zone",
                "unknown IANA time zone \"Mars/Olympus\""
            )]
        );
    }

    #[test]
    fn networks_are_parsed_once_and_each_bad_entry_is_named() {
        let list = NetworkList::new(vec![
            "10.0.0.0/8".into(),
            "nonsense".into(),
            " ::1 ".into(),
            "192.168.1.7".into(),
        ]);
        let parsed: Vec<String> = list.networks().iter().map(|n| n.to_string()).collect();
        assert_eq!(parsed, ["10.0.0.0/8", "::1/128", "192.168.1.7/32"]);
        let mut problems = Problems::default();
        list.check("http.allow_from", &mut problems);
        let problems = problems.into_vec();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "http.allow_from[1]");
        assert_eq!(list.len(), 4, "the text as written stays readable");
    }

    #[test]
    fn column_lists_are_normalised_and_checked_once() {
        let ok = columns(&[" SRC ", "${start_epoch}", "other"]);
        assert_eq!(ok.error(), None);
        assert_eq!(ok.names(), ["src", "start_epoch", "other"]);
        assert_eq!(ok[0], " SRC ", "the text as written stays readable");
        assert_eq!(
            columns(&["src", "Src", "start"]).error(),
            Some("column \"src\" is listed twice")
        );
        assert_eq!(
            columns(&["src", " ", "start"]).error(),
            Some("column 1 has no name")
        );
        assert_eq!(
            columns(&["src"]).error(),
            Some("the column list lacks \"start\" or \"start_epoch\", which every call log needs")
        );
        assert_eq!(
            columns(&[]).error(),
            Some("the column list lacks \"src\", which every call log needs")
        );
    }
}
