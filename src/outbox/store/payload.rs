//! How a payload (a call body, the CRM's answer) is kept in the store: ONE copy, as a BLOB
//! of a format byte and raw DEFLATE with a preset dictionary of what call bodies and CRM
//! answers look like. A 630-byte call body keeps ~110 bytes. A TEXT value (written before
//! schema 3) is read as it is, so old rows stay deliverable.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use rusqlite::types::ValueRef;

/// Format byte: the text's UTF-8 bytes as they are.
const PLAIN: u8 = 0;
/// Format byte: raw DEFLATE with [`DICTIONARY_V1`].
const DEFLATE_DICTIONARY_V1: u8 = 1;

/// The largest payload inflated back (a call body is under 2 KiB; a CRM answer is kept
/// bounded by the client): a corrupt BLOB never makes the store allocate without bound.
const MAX_INFLATED: usize = 1 << 20;

/// What DEFLATE may refer back to from the first byte: the keys and common values of a call
/// body and of LeadSquared's answer. NEVER change it: rows written with it must stay
/// readable; a new dictionary gets a new format byte.
const DICTIONARY_V1: &[u8] = br#"{"Status":"Error","ExceptionType":"MXInvalidInputException","ExceptionMessage":"Lead could not be created"}{"Status":"Success","Message":{"Id":"187a2b3c4d5e6f70","Message":"Call log saved"}}{"call_id":"1700000000.12","source":"asterisk-cdr","direction":"Outbound","outcome":"Missed","lead_number":{"raw":"+919611795983","e164":{"country_code":91,"national":"9611795983"}},"agent":null,"agent_extension":null,"display_number":null,"tag":null,"recording_url":"https://","segments":[{"agent":"101","answer":"2026-01-01T00:00:00Z","talk_seconds":0}],"lead_id":"","legs":2,"call_id":"1700000000.1","source":"asterisk-cdr","direction":"Inbound","outcome":"Voicemail","lead_number":{"raw":"+919611700001","e164":{"country_code":91,"national":"9611700001"}},"agent":{"extension":"100","phone":{"country_code":91,"national":"9876500100"},"user_id":null,"email":null,"name":null,"queue_interface":null},"agent_extension":"100","display_number":{"raw":"918044556677","e164":{"country_code":91,"national":"8044556677"}},"tag":"sales","start":"2026-12-02T00:47:35Z","answer":"2026-12-02T00:47:40Z","end":"2026-12-02T00:48:35Z","talk_seconds":55,"caller_name":"Lead 1","recording_url":null,"lead_id":null,"legs":1}"#;

thread_local! {
    /// This thread's compressor, reset for every payload: building one allocates and
    /// clears its window and hash tables (some 300 KiB), which cost more than compressing
    /// a call body.
    static DEFLATE: std::cell::RefCell<Compress> =
        std::cell::RefCell::new(Compress::new(Compression::best(), false));
}

/// The stored form of `text`.
pub(super) fn pack(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() / 2 + 64);
    out.push(DEFLATE_DICTIONARY_V1);
    // Raw DEFLATE never grows a text by more than a few bytes per 16 KiB block.
    out.reserve(text.len() + 64);
    let packed = DEFLATE.with(|cell| {
        let Ok(mut deflate) = cell.try_borrow_mut() else {
            return false;
        };
        deflate.reset();
        if deflate.set_dictionary(DICTIONARY_V1).is_err() {
            return false;
        }
        matches!(
            deflate.compress_vec(text.as_bytes(), &mut out, FlushCompress::Finish),
            Ok(Status::StreamEnd)
        )
    });
    if packed { out } else { stored_as_text(text) }
}

/// Compression failed (it does not, with enough room): keep the text itself.
fn stored_as_text(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 1);
    out.push(PLAIN);
    out.extend_from_slice(text.as_bytes());
    out
}

/// Why a stored payload could not be read back.
#[derive(Debug, thiserror::Error)]
pub(super) enum PayloadError {
    /// The BLOB's first byte names no format this pbxlink knows.
    #[error("unknown payload format {0}")]
    UnknownFormat(u8),
    /// The compressed bytes are damaged or inflate past the bound.
    #[error("damaged payload: {0}")]
    Damaged(String),
}

/// The text of a stored payload: TEXT as it is (rows from before schema 3), a BLOB inflated.
pub(super) fn unpack(value: ValueRef<'_>) -> Result<Option<String>, PayloadError> {
    match value {
        ValueRef::Null => Ok(None),
        ValueRef::Text(t) => Ok(Some(String::from_utf8_lossy(t).into_owned())),
        ValueRef::Blob(b) => inflate(b).map(Some),
        ValueRef::Integer(i) => Ok(Some(i.to_string())),
        ValueRef::Real(f) => Ok(Some(f.to_string())),
    }
}

fn inflate(blob: &[u8]) -> Result<String, PayloadError> {
    let Some((&format, data)) = blob.split_first() else {
        return Err(PayloadError::Damaged("empty".into()));
    };
    match format {
        DEFLATE_DICTIONARY_V1 => {}
        PLAIN => return Ok(String::from_utf8_lossy(data).into_owned()),
        other => return Err(PayloadError::UnknownFormat(other)),
    }
    let mut inflate = Decompress::new(false);
    inflate
        .set_dictionary(DICTIONARY_V1)
        .map_err(|e| PayloadError::Damaged(e.to_string()))?;
    let mut out = Vec::with_capacity(data.len() * 6);
    loop {
        if out.len() == out.capacity() {
            if out.len() >= MAX_INFLATED {
                return Err(PayloadError::Damaged(format!(
                    "inflates past {MAX_INFLATED} bytes"
                )));
            }
            out.reserve(out.len().max(1024));
        }
        let consumed = inflate.total_in() as usize;
        let status = inflate
            .decompress_vec(
                &data[consumed.min(data.len())..],
                &mut out,
                FlushDecompress::Finish,
            )
            .map_err(|e| PayloadError::Damaged(e.to_string()))?;
        match status {
            Status::StreamEnd => break,
            Status::Ok | Status::BufError => {
                if inflate.total_in() as usize >= data.len() && out.len() < out.capacity() {
                    return Err(PayloadError::Damaged("truncated".into()));
                }
            }
        }
    }
    String::from_utf8(out).map_err(|e| PayloadError::Damaged(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_round_trips_small() {
        let body = r#"{"call_id":"1700000000.77","source":"asterisk-cdr","direction":"Inbound","outcome":"Answered","lead_number":{"raw":"+919611700077","e164":{"country_code":91,"national":"9611700077"}},"agent":{"extension":"100","phone":{"country_code":91,"national":"9876500100"},"user_id":null,"email":null,"name":null,"queue_interface":null},"agent_extension":"100","display_number":{"raw":"918044556677","e164":{"country_code":91,"national":"8044556677"}},"tag":"sales","start":"2026-12-02T00:47:35Z","answer":"2026-12-02T00:47:40Z","end":"2026-12-02T00:48:35Z","talk_seconds":55,"caller_name":"Lead 77","recording_url":null,"lead_id":null,"legs":1}"#;
        let packed = pack(body);
        assert!(packed.len() < 200, "{} bytes", packed.len());
        let back = unpack(ValueRef::Blob(&packed)).expect("unpack");
        assert_eq!(back.as_deref(), Some(body));
        let text = unpack(ValueRef::Text(body.as_bytes())).expect("text");
        assert_eq!(text.as_deref(), Some(body));
        assert_eq!(unpack(ValueRef::Null).expect("null"), None);
    }

    #[test]
    fn large_and_empty_payloads_round_trip() {
        let big: String = (0..20_000).map(|i| format!("{i:x}")).collect();
        for text in ["", "x", big.as_str()] {
            let back = unpack(ValueRef::Blob(&pack(text))).expect("unpack");
            assert_eq!(back.as_deref(), Some(text));
        }
    }

    #[test]
    fn damaged_payloads_are_errors_not_panics() {
        let packed = pack("{\"call_id\":\"x\"}");
        assert!(unpack(ValueRef::Blob(&packed[..packed.len() / 2])).is_err());
        assert!(unpack(ValueRef::Blob(&[9, 1, 2, 3])).is_err());
        assert!(unpack(ValueRef::Blob(&[])).is_err());
        assert_eq!(
            unpack(ValueRef::Blob(&stored_as_text("[cut] x")))
                .expect("plain")
                .as_deref(),
            Some("[cut] x")
        );
        // A bomb (many zero bytes) stops at the bound.
        let zeros = "0".repeat(4 << 20);
        assert!(unpack(ValueRef::Blob(&pack(&zeros))).is_err());
    }
}
