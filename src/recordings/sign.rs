//! The signed part of a recording link: which file (relative to `[recordings] dir`) and
//! until when, authenticated with HMAC-SHA256.
//!
//! A link is `{payload}.{tag}`, both base64url without padding: `payload` is
//! `1:{expires_unix}:{file}` and `tag` is the HMAC-SHA256 of the payload's bytes under the
//! site's key. Verification decodes, checks the tag in constant time (`Mac::verify_slice`)
//! and only then reads the payload, so nothing of an unsigned link is trusted.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The shortest key accepted, in bytes (the HMAC-SHA256 block's security level).
pub const MIN_KEY_BYTES: usize = 32;

/// A signed link longer than this is refused before it is decoded.
pub const MAX_SIGNED_LEN: usize = 4096;

const VERSION: &str = "1";

type HmacSha256 = Hmac<Sha256>;

/// Signs and verifies links with one key. `Debug` does not show the key.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

/// Two signers are equal when their keys are (compared in constant time), so settings
/// structs holding one can derive `PartialEq`.
impl PartialEq for Signer {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.key.ct_eq(&other.key).into()
    }
}

impl Eq for Signer {}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key", &"<redacted>")
            .finish()
    }
}

/// What a verified link names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedFile {
    /// The file, relative to `[recordings] dir`, `/`-separated.
    pub file: String,
    /// The link is valid before this time (Unix seconds).
    pub expires: i64,
}

/// Why a link was refused; logged, never told to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not two base64url parts, too long, or a payload that does not parse.
    #[error("malformed link")]
    Malformed,
    /// The tag does not match the payload (tampered, or signed with another key).
    #[error("bad signature")]
    BadSignature,
    /// Signed, but past its expiry.
    #[error("expired link")]
    Expired,
    /// The file named is not a plain relative path under the directory (`..`, absolute).
    #[error("path outside the recordings directory")]
    OutsideDir,
    /// A component of the path is a symbolic link.
    #[error("symbolic link in the path")]
    Symlink,
    /// The file does not exist (yet).
    #[error("no such file")]
    NotFound,
    /// The path names something other than a regular file (directory, FIFO, device).
    #[error("not a regular file")]
    NotRegular,
    /// Opening or reading the file failed otherwise (permissions, I/O).
    #[error("cannot open the file")]
    Unreadable,
}

impl Refusal {
    /// Every reason, in the order `/metrics` lists them.
    pub const ALL: [Refusal; 8] = [
        Refusal::Malformed,
        Refusal::BadSignature,
        Refusal::Expired,
        Refusal::OutsideDir,
        Refusal::Symlink,
        Refusal::NotFound,
        Refusal::NotRegular,
        Refusal::Unreadable,
    ];

    /// The `reason` label on `/metrics` (`pbxlink_recordings_refused_total{reason=...}`);
    /// never told to the caller.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::BadSignature => "bad_signature",
            Refusal::Expired => "expired",
            Refusal::OutsideDir => "outside_dir",
            Refusal::Symlink => "symlink",
            Refusal::NotFound => "not_found",
            Refusal::NotRegular => "not_regular",
            Refusal::Unreadable => "unreadable",
        }
    }

    /// Its place in [`Refusal::ALL`].
    pub fn index(self) -> usize {
        Refusal::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or(Refusal::ALL.len() - 1)
    }
}

/// The key is too short to sign with.
#[derive(Debug, thiserror::Error)]
#[error("the recordings key has {0} bytes; at least {MIN_KEY_BYTES} are needed")]
pub struct ShortKey(pub usize);

impl Signer {
    /// A signer with `key` (at least [`MIN_KEY_BYTES`] bytes).
    pub fn new(key: Vec<u8>) -> Result<Signer, ShortKey> {
        if key.len() < MIN_KEY_BYTES {
            return Err(ShortKey(key.len()));
        }
        Ok(Signer { key })
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes a key of any length; new_from_slice cannot fail for it.
        match HmacSha256::new_from_slice(&self.key) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of any length"),
        }
    }

    /// The signed link naming `file` (relative to the directory) until `expires` (Unix s).
    pub fn sign(&self, file: &str, expires: i64) -> String {
        let payload = format!("{VERSION}:{expires}:{file}");
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let tag = mac.finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload.as_bytes()),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// The file a link names, if its tag is right and it has not expired at `now` (Unix s).
    pub fn verify(&self, signed: &str, now: i64) -> Result<SignedFile, Refusal> {
        if signed.len() > MAX_SIGNED_LEN {
            return Err(Refusal::Malformed);
        }
        let (payload, tag) = signed.split_once('.').ok_or(Refusal::Malformed)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| Refusal::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| Refusal::Malformed)?;
        let mut mac = self.mac();
        mac.update(&payload);
        mac.verify_slice(&tag).map_err(|_| Refusal::BadSignature)?;
        let payload = String::from_utf8(payload).map_err(|_| Refusal::Malformed)?;
        let mut parts = payload.splitn(3, ':');
        let (Some(VERSION), Some(expires), Some(file)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(Refusal::Malformed);
        };
        let expires: i64 = expires.parse().map_err(|_| Refusal::Malformed)?;
        if now >= expires {
            return Err(Refusal::Expired);
        }
        Ok(SignedFile {
            file: file.to_owned(),
            expires,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer::new(vec![7; 32]).expect("32 bytes")
    }

    #[test]
    fn a_signed_link_verifies_until_it_expires() {
        let s = signer();
        let link = s.sign("2026/12/02/out-100-1.wav", 1_000);
        assert!(
            link.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "{link}"
        );
        let named = s.verify(&link, 999).expect("valid before expiry");
        assert_eq!(named.file, "2026/12/02/out-100-1.wav");
        assert_eq!(named.expires, 1_000);
        assert_eq!(s.verify(&link, 1_000), Err(Refusal::Expired));
        assert_eq!(s.verify(&link, i64::MAX), Err(Refusal::Expired));
    }

    #[test]
    fn a_changed_byte_anywhere_is_refused() {
        let s = signer();
        let link = s.sign("a.wav", 1_000);
        for i in 0..link.len() {
            let mut bytes = link.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).expect("ascii");
            let result = s.verify(&tampered, 0);
            assert!(
                matches!(result, Err(Refusal::BadSignature | Refusal::Malformed)),
                "byte {i}: {tampered} gave {result:?}"
            );
        }
    }

    #[test]
    fn a_payload_re_signed_with_another_key_or_extended_is_refused() {
        let s = signer();
        let other = Signer::new(vec![8; 32]).expect("32 bytes");
        let forged = other.sign("a.wav", i64::MAX);
        assert_eq!(s.verify(&forged, 0), Err(Refusal::BadSignature));
        // The payload of a real link with a later expiry, keeping the real tag.
        let link = s.sign("a.wav", 1_000);
        let (_, tag) = link.split_once('.').expect("two parts");
        let later = URL_SAFE_NO_PAD.encode(b"1:99999999999:a.wav");
        assert_eq!(
            s.verify(&format!("{later}.{tag}"), 0),
            Err(Refusal::BadSignature)
        );
        // Another file under the same tag.
        let other_file = URL_SAFE_NO_PAD.encode(b"1:1000:../etc/shadow");
        assert_eq!(
            s.verify(&format!("{other_file}.{tag}"), 0),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn unsigned_and_malformed_links_are_refused() {
        let s = signer();
        for bad in [
            "",
            ".",
            "a.wav",
            "YS53YXY",
            "YS53YXY.",
            "!!!.???",
            &"A".repeat(MAX_SIGNED_LEN + 1),
        ] {
            let result = s.verify(bad, 0);
            assert!(
                matches!(result, Err(Refusal::Malformed | Refusal::BadSignature)),
                "{bad:?} gave {result:?}"
            );
        }
    }

    #[test]
    fn a_signed_payload_of_another_version_or_shape_is_refused() {
        let s = signer();
        for payload in ["2:1000:a.wav", "1:soon:a.wav", "1:1000"] {
            let mut mac = s.mac();
            mac.update(payload.as_bytes());
            let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
            let link = format!("{}.{tag}", URL_SAFE_NO_PAD.encode(payload));
            assert_eq!(s.verify(&link, 0), Err(Refusal::Malformed), "{payload}");
        }
    }

    #[test]
    fn a_short_key_is_refused_and_debug_hides_the_key() {
        assert!(Signer::new(vec![1; 31]).is_err());
        let s = Signer::new(b"0123456789abcdef0123456789abcdef".to_vec()).expect("32");
        assert!(!format!("{s:?}").contains("0123"));
    }
}
