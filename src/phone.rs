//! Phone number normalisation to E.164 and the formats LeadSquared may want.
//!
//! Carriers hand numbers over as `+91…`, `91…`, `0091…` or `0…` with a trunk prefix;
//! libphonenumber's rules (the `phonenumber` crate) turn each into one E.164 number.
//! Anything that is not a dialable number (an extension, `anonymous`) stays as it was.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use phonenumber::country;
use serde::{Deserialize, Serialize};

/// How numbers are written in CRM payloads.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum NumberFormat {
    /// `+919611795983`
    #[default]
    E164,
    /// `%2b919611795983`, as the connector page's sample shows.
    E164UrlencodedPlus,
    /// `9611795983`: the national significant number, no country code, no trunk prefix.
    National,
    /// `+91-9611795983`, as LeadSquared's API pages show.
    E164Dashed,
    /// `919611795983`: country code and national number, no `+`.
    E164Digits,
}

/// Why a normaliser could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PhoneError {
    /// The default country code is missing, not a number, or not assigned to any country.
    #[error("{0:?} is not a country calling code (write it without '+', e.g. \"91\")")]
    UnknownCountryCode(String),
}

/// Turns numbers as the PBX saw them into E.164, using a default country for national forms.
///
/// Validation by libphonenumber's rules costs microseconds and one call asks about the same
/// few numbers several times, so results are cached (bounded; clones share the cache).
#[derive(Debug, Clone)]
pub struct PhoneNormalizer {
    region: Option<country::Id>,
    country_code: u16,
    cache: Arc<Mutex<HashMap<String, Option<E164>>>>,
}

/// Largest number of cached normalisations; the cache starts over when it is full.
const CACHE_LIMIT: usize = 10_000;

/// A number in E.164 form, split so every output format can be produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct E164 {
    /// Country calling code, e.g. 91.
    pub country_code: u16,
    /// National significant number, e.g. "9611795983".
    pub national: String,
}

impl E164 {
    /// `+<cc><national>`.
    pub fn to_e164(&self) -> String {
        format!("+{}{}", self.country_code, self.national)
    }

    /// `<cc><national>`, without the `+` (what a dialplan's `_X.` pattern matches).
    pub fn to_e164_digits(&self) -> String {
        format!("{}{}", self.country_code, self.national)
    }

    /// Writes the number in the given format.
    pub fn format(&self, format: NumberFormat) -> String {
        match format {
            NumberFormat::E164 => self.to_e164(),
            NumberFormat::E164UrlencodedPlus => {
                format!("%2b{}{}", self.country_code, self.national)
            }
            NumberFormat::National => self.national.clone(),
            NumberFormat::E164Dashed => format!("+{}-{}", self.country_code, self.national),
            NumberFormat::E164Digits => self.to_e164_digits(),
        }
    }

    /// Parses a string this module produced with [`E164::to_e164`].
    pub fn from_e164(text: &str) -> Option<E164> {
        let number = phonenumber::parse(None, text).ok()?;
        Some(Self::from_number(&number))
    }

    fn from_number(number: &phonenumber::PhoneNumber) -> E164 {
        let national = number.national();
        let zeros = "0".repeat(usize::from(national.zeros()));
        E164 {
            country_code: number.code().value(),
            national: format!("{zeros}{}", national.value()),
        }
    }
}

impl PhoneNormalizer {
    /// A normaliser whose national numbers belong to `default_country_code` (e.g. "91").
    pub fn new(default_country_code: &str) -> Result<Self, PhoneError> {
        let code: u16 = default_country_code
            .trim()
            .trim_start_matches('+')
            .parse()
            .map_err(|_| PhoneError::UnknownCountryCode(default_country_code.to_owned()))?;
        let regions = phonenumber::metadata::DATABASE
            .region(&code)
            .ok_or_else(|| PhoneError::UnknownCountryCode(default_country_code.to_owned()))?;
        let region = regions.first().and_then(|r| r.parse::<country::Id>().ok());
        Ok(Self {
            region,
            country_code: code,
            cache: Arc::default(),
        })
    }

    /// The default country calling code.
    pub fn country_code(&self) -> u16 {
        self.country_code
    }

    /// E.164 form of a number, or None when it is not a valid phone number (an extension,
    /// `anonymous`, an empty caller id).
    pub fn normalize(&self, raw: &str) -> Option<E164> {
        if let Some(hit) = self.lock_cache().get(raw) {
            return hit.clone();
        }
        let result = self.normalize_uncached(raw);
        let mut cache = self.lock_cache();
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(raw.to_owned(), result.clone());
        result
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<E164>>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn normalize_uncached(&self, raw: &str) -> Option<E164> {
        let cleaned: String = raw
            .trim()
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
            .collect();
        let digits = cleaned.strip_prefix('+').unwrap_or(&cleaned);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Extensions are short; no real subscriber number has fewer than 6 digits.
        if digits.len() < 6 {
            return None;
        }
        let candidates: Vec<String> = if cleaned.starts_with('+') {
            vec![cleaned.clone()]
        } else if let Some(rest) = digits.strip_prefix("00") {
            vec![format!("+{rest}"), cleaned.clone()]
        } else {
            vec![cleaned.clone(), format!("+{digits}")]
        };
        for candidate in candidates {
            let parsed = if candidate.starts_with('+') {
                phonenumber::parse(None, &candidate)
            } else {
                phonenumber::parse(self.region, &candidate)
            };
            if let Ok(number) = parsed {
                if phonenumber::is_valid(&number) {
                    return Some(E164::from_number(&number));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn india() -> PhoneNormalizer {
        PhoneNormalizer::new("91").expect("India")
    }

    #[test]
    fn every_carrier_form_becomes_one_e164() {
        let n = india();
        for raw in [
            "+919611795983",
            "919611795983",
            "09611795983",
            "9611795983",
            "00919611795983",
            "+91-96117 95983",
        ] {
            assert_eq!(
                n.normalize(raw).map(|e| e.to_e164()).as_deref(),
                Some("+919611795983"),
                "{raw}"
            );
        }
    }

    #[test]
    fn foreign_numbers_keep_their_country() {
        let n = india();
        let e = n.normalize("+14155552671").expect("US number");
        assert_eq!(e.to_e164(), "+14155552671");
        let uk = PhoneNormalizer::new("44").expect("UK");
        assert_eq!(
            uk.normalize("020 7946 0018")
                .map(|e| e.to_e164())
                .as_deref(),
            Some("+442079460018")
        );
    }

    #[test]
    fn extensions_and_garbage_are_not_numbers() {
        let n = india();
        for raw in ["100", "", "anonymous", "s", "Unknown", "12ab34567"] {
            assert_eq!(n.normalize(raw), None, "{raw}");
        }
    }

    #[test]
    fn output_formats() {
        let e = india().normalize("09611795983").expect("valid");
        assert_eq!(e.format(NumberFormat::E164), "+919611795983");
        assert_eq!(
            e.format(NumberFormat::E164UrlencodedPlus),
            "%2b919611795983"
        );
        assert_eq!(e.format(NumberFormat::National), "9611795983");
        assert_eq!(e.format(NumberFormat::E164Dashed), "+91-9611795983");
        assert_eq!(e.format(NumberFormat::E164Digits), "919611795983");
    }

    #[test]
    fn bad_country_codes_are_refused() {
        assert!(PhoneNormalizer::new("").is_err());
        assert!(PhoneNormalizer::new("999").is_err());
        assert!(PhoneNormalizer::new("+91").is_ok());
    }
}
