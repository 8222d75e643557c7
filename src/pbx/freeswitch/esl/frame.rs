//! The ESL framer: bytes from the event socket in, whole [`Frame`]s out.
//!
//! Like mini-redis' `Connection` and the Asterisk AMI framer, the framer
//! owns the read buffer and works in two steps: [`Framer::next_frame`] first *checks* that a
//! whole message is buffered (the header block up to its empty line, then `Content-Length`
//! bytes of body) without allocating, and only then *parses* it. An incomplete message is the
//! normal `Ok(None)`: read more bytes and call again. Checking resumes where it stopped.
//!
//! The wire format, as `mod_event_socket.c` writes it: a header block of `Name: value` lines
//! ended by an empty line, `Content-Type` naming the message, and a body of exactly
//! `Content-Length` bytes when that header is present, e.g. (`api_exec`)
//! `"Content-Type: api/response\nContent-Length: %zd\n\n"` followed by the reply. The envelope's
//! values are written verbatim (never URL-encoded); the body of a `text/event-plain` message is
//! itself a header block whose values *are* URL-encoded (see [`Event`]).
//!
//! Tolerances: CRLF as well as LF, empty lines between messages (FreeSWITCH's own reader skips
//! them too: `read_packet`, `if (*mbuf == '\r' || *mbuf == '\n') /* bah */`). Errors, which must
//! end the connection: a header block over [`FrameLimits::max_header_bytes`], a body over
//! [`FrameLimits::max_body_bytes`], a line that is not `Name: value`, a `Content-Length` that is
//! not a plain decimal number or is repeated, a message without `Content-Type`, and a
//! `text/event-plain` body that is not an event.

use std::borrow::Cow;

use percent_encoding::percent_decode;

use crate::pbx::framing::{BlockEnd, LineFramer, block_end, clip, lines, split_header};

/// Default bound of one header block (envelope or event headers are far smaller: FreeSWITCH
/// formats every envelope into a 512- or 1024-byte buffer).
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;

/// Default bound of one body: 16 MiB, FreeSWITCH's own client limit
/// (`libs/esl/src/include/esl.h`: `#define ESL_MAX_CONTENT_LENGTH (16 * 1024 * 1024)`), so a
/// large `show channels as json` reply still fits.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// The value FreeSWITCH writes for an empty header value (`switch_event_serialize`:
/// `*encode_buf == '\0' ? "_undef_" : encode_buf`).
pub const UNDEF: &str = "_undef_";

/// Size limits of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Most bytes in the envelope's header block, its empty line included.
    pub max_header_bytes: usize,
    /// Largest `Content-Length` accepted.
    pub max_body_bytes: usize,
}

impl Default for FrameLimits {
    fn default() -> Self {
        Self {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// Why a message could not be read. The connection that produced it must be closed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The header block grew past its bound without ending.
    #[error("ESL header block larger than {limit} bytes")]
    HeadersTooLarge {
        /// The limit.
        limit: usize,
    },
    /// `Content-Length` is larger than the body bound.
    #[error("ESL Content-Length {length} over the limit of {limit} bytes")]
    BodyTooLarge {
        /// The announced length (saturated at `usize::MAX`).
        length: usize,
        /// The limit.
        limit: usize,
    },
    /// `Content-Length` is not a decimal number.
    #[error("ESL Content-Length is not a number: {0:?}")]
    BadContentLength(String),
    /// `Content-Length` appears twice: the framing is ambiguous.
    #[error("ESL message with two Content-Length headers")]
    RepeatedContentLength,
    /// A line of the header block is not `Name: value`.
    #[error("line {line} of an ESL header block is not `Name: value`: {text:?}")]
    Malformed {
        /// 1-based line number within the block.
        line: usize,
        /// The line (at most 80 characters of it).
        text: String,
    },
    /// The message has no `Content-Type`.
    #[error("ESL message without Content-Type")]
    MissingContentType,
    /// A `text/event-plain` body is not an event.
    #[error("bad ESL event body: {0}")]
    BadEvent(String),
}

/// One message read from FreeSWITCH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `auth/request`: the server waits for `auth <password>`.
    AuthRequest,
    /// `command/reply`: the answer to a command (`Reply-Text: +OK ...` / `-ERR ...`).
    CommandReply(Reply),
    /// `api/response`: the output of an `api` command.
    ApiResponse {
        /// The command's output.
        body: Vec<u8>,
    },
    /// `text/event-plain`: an event.
    Event(Event),
    /// `text/event-json`: an event in JSON (parse with [`Event::from_json`]).
    EventJson {
        /// The JSON text.
        body: Vec<u8>,
    },
    /// `text/disconnect-notice`: the server is closing the connection (or, with
    /// `Content-Disposition: linger`, the controlled channel hung up).
    DisconnectNotice {
        /// The envelope (e.g. `Content-Disposition`).
        headers: Headers,
        /// The notice text (e.g. `Disconnected, goodbye.`).
        body: Vec<u8>,
    },
    /// `text/rude-rejection`: refused by the server's ACL before authentication.
    RudeRejection {
        /// The reason text (`Access Denied, go away.`).
        body: Vec<u8>,
    },
    /// Any other content type (`log/data`, `text/event-xml`): passed on unparsed.
    Other {
        /// The envelope.
        headers: Headers,
        /// The body, if any.
        body: Vec<u8>,
    },
}

/// A header block: `Name: value` lines kept as one buffer with offsets, values decoded only
/// when read.
///
/// Lookup is case-insensitive and returns the first occurrence, as FreeSWITCH's
/// `switch_event_get_header` does. Values of an event (`encoded`) are URL-decoded and
/// [`UNDEF`] reads as empty; envelope values are returned as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    text: Vec<u8>,
    /// (name start, name end, value start, value end) into `text`.
    spans: Vec<[u32; 4]>,
    encoded: bool,
}

impl Headers {
    /// The first value of `name` (case-insensitive), decoded.
    pub fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        self.get_raw(name).map(|v| self.decode(v))
    }

    /// The first value of `name` as it came on the wire (not URL-decoded, `_undef_` kept).
    pub fn get_raw(&self, name: &str) -> Option<&[u8]> {
        let name = name.as_bytes();
        self.spans.iter().find_map(|s| {
            let n = &self.text[s[0] as usize..s[1] as usize];
            (n.len() == name.len() && n.eq_ignore_ascii_case(name))
                .then(|| &self.text[s[2] as usize..s[3] as usize])
        })
    }

    /// Every value of `name` (case-insensitive), decoded, in wire order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = Cow<'a, str>> + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Every header in wire order: name (lossy UTF-8) and decoded value.
    pub fn iter(&self) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> + '_ {
        self.spans.iter().map(|s| {
            (
                String::from_utf8_lossy(&self.text[s[0] as usize..s[1] as usize]),
                self.decode(&self.text[s[2] as usize..s[3] as usize]),
            )
        })
    }

    /// How many header lines.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True when there are no headers.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    fn decode<'a>(&self, raw: &'a [u8]) -> Cow<'a, str> {
        if !self.encoded {
            return String::from_utf8_lossy(raw);
        }
        if raw == UNDEF.as_bytes() {
            return Cow::Borrowed("");
        }
        match percent_decode(raw).into() {
            Cow::Borrowed(b) => String::from_utf8_lossy(b),
            Cow::Owned(v) => Cow::Owned(String::from_utf8_lossy(&v).into_owned()),
        }
    }

    /// Parses a header block (lines, no empty line inside), each line `Name: value`.
    fn parse(block: &[u8], encoded: bool) -> Result<Self, FrameError> {
        let mut spans = Vec::with_capacity(block.len() / 32 + 1);
        for (i, line) in lines(block).enumerate() {
            if line.is_empty() {
                continue;
            }
            let Some((name, value)) = split_header(line) else {
                return Err(FrameError::Malformed {
                    line: i + 1,
                    text: clip(line),
                });
            };
            let off = |s: &[u8]| (s.as_ptr() as usize - block.as_ptr() as usize) as u32;
            spans.push([
                off(name),
                off(name) + name.len() as u32,
                off(value),
                off(value) + value.len() as u32,
            ]);
        }
        Ok(Self {
            text: block.to_vec(),
            spans,
            encoded,
        })
    }

    /// Headers built from pairs (for `text/event-json` and tests): values stored decoded.
    pub fn from_pairs<N: AsRef<str>, V: AsRef<str>>(pairs: &[(N, V)]) -> Self {
        let mut text = Vec::new();
        let mut spans = Vec::with_capacity(pairs.len());
        for (n, v) in pairs {
            let ns = text.len() as u32;
            text.extend_from_slice(n.as_ref().as_bytes());
            let vs = text.len() as u32;
            text.extend_from_slice(v.as_ref().as_bytes());
            spans.push([ns, vs, vs, text.len() as u32]);
        }
        Self {
            text,
            spans,
            encoded: false,
        }
    }
}

/// A `command/reply` (`Reply-Text` plus, for `bgapi`, `Job-UUID`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The envelope headers.
    pub headers: Headers,
}

impl Reply {
    /// `Reply-Text` (e.g. `+OK accepted`, `-ERR invalid`), empty when absent.
    pub fn text(&self) -> Cow<'_, str> {
        self.headers.get("Reply-Text").unwrap_or_default()
    }

    /// True when `Reply-Text` starts with `+OK`.
    pub fn is_ok(&self) -> bool {
        self.text().starts_with("+OK")
    }

    /// The text after `-ERR ` when the reply is an error.
    pub fn error(&self) -> Option<String> {
        let text = self.text();
        text.strip_prefix("-ERR").map(|rest| rest.trim().to_owned())
    }

    /// The `Job-UUID` of a `bgapi` reply (mod_event_socket: `"~Reply-Text: +OK Job-UUID:
    /// %s\nJob-UUID: %s\n\n"`).
    pub fn job_uuid(&self) -> Option<Cow<'_, str>> {
        self.headers.get("Job-UUID")
    }
}

/// A FreeSWITCH event: its headers (URL-encoded on the wire, decoded when read) and, when it
/// has one, its own body.
///
/// `switch_event_serialize` writes each header as `"%s: %s\n"` with the value URL-encoded
/// (`switch_url_encode`), then either an empty line, or `"Content-Length: %d\n\n%s"` and the
/// event's body (a BACKGROUND_JOB's result, a CUSTOM event's payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The headers (`Event-Name`, `Unique-ID`, `variable_*` ...).
    pub headers: Headers,
    /// The event's own body, when it has one.
    pub body: Option<Vec<u8>>,
}

impl Event {
    /// The first value of `name` (case-insensitive), URL-decoded, `_undef_` as empty.
    pub fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        self.headers.get(name)
    }

    /// `Event-Name` (`CHANNEL_ANSWER`, `BACKGROUND_JOB`, `CUSTOM`...), empty when absent.
    pub fn name(&self) -> Cow<'_, str> {
        self.get("Event-Name").unwrap_or_default()
    }

    /// `Event-Subclass` of a CUSTOM event (e.g. `callcenter::info`).
    pub fn subclass(&self) -> Option<Cow<'_, str>> {
        self.get("Event-Subclass")
    }

    /// The body as text (lossy UTF-8), empty when none.
    pub fn body_text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(self.body.as_deref().unwrap_or_default())
    }

    /// The job this BACKGROUND_JOB event reports, or None for any other event.
    pub fn background_job(&self) -> Option<BackgroundJob> {
        if !self.name().eq_ignore_ascii_case("BACKGROUND_JOB") {
            return None;
        }
        Some(BackgroundJob {
            job_uuid: self.get("Job-UUID")?.into_owned(),
            command: self.get("Job-Command").unwrap_or_default().into_owned(),
            result: self.body_text().into_owned(),
        })
    }

    /// Parses a `text/event-plain` body.
    pub fn parse_plain(body: &[u8]) -> Result<Self, FrameError> {
        let Some(BlockEnd {
            lines_end: block_end,
            next: rest_start,
        }) = block_end(body, 0)
        else {
            // FreeSWITCH always ends the block with an empty line; be lenient about a last
            // header line without it.
            return Ok(Self {
                headers: Headers::parse(body, true)?,
                body: None,
            });
        };
        let headers = Headers::parse(&body[..block_end], true)?;
        let own_body = match headers.get_raw("Content-Length") {
            None => None,
            Some(raw) => {
                let len = parse_length(raw)?;
                let rest = &body[rest_start..];
                if len > rest.len() {
                    return Err(FrameError::BadEvent(format!(
                        "event body announced as {len} bytes, {} present",
                        rest.len()
                    )));
                }
                Some(rest[..len].to_vec())
            }
        };
        Ok(Self {
            headers,
            body: own_body,
        })
    }

    /// Parses a `text/event-json` body (`switch_event_serialize_json`: one object, header
    /// names to strings, arrays for multi-valued headers, the body under `_body`).
    pub fn from_json(body: &[u8]) -> Result<Self, FrameError> {
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| FrameError::BadEvent(e.to_string()))?;
        let serde_json::Value::Object(map) = value else {
            return Err(FrameError::BadEvent("JSON event is not an object".into()));
        };
        let mut pairs = Vec::with_capacity(map.len());
        let mut own_body = None;
        for (k, v) in map {
            let text = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            if k == "_body" {
                own_body = Some(text.into_bytes());
            } else {
                pairs.push((k, text));
            }
        }
        Ok(Self {
            headers: Headers::from_pairs(&pairs),
            body: own_body,
        })
    }
}

/// The result of a `bgapi` command, from its BACKGROUND_JOB event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackgroundJob {
    /// `Job-UUID` (the one the `bgapi` reply named, or the one the client chose).
    pub job_uuid: String,
    /// `Job-Command` (e.g. `originate`).
    pub command: String,
    /// The command's output (`+OK <uuid>\n`, `-ERR USER_NOT_REGISTERED\n`).
    pub result: String,
}

impl BackgroundJob {
    /// `Ok(text after +OK)` or `Err(reason after -ERR)`, trimmed; any other output is an error
    /// carrying the whole output.
    pub fn outcome(&self) -> Result<&str, &str> {
        let out = self.result.trim();
        if let Some(ok) = out.strip_prefix("+OK") {
            Ok(ok.trim())
        } else if let Some(err) = out.strip_prefix("-ERR") {
            Err(err.trim())
        } else {
            Err(out)
        }
    }
}

/// Where the current message was proven to end.
#[derive(Debug, Clone, Copy)]
struct Checked {
    /// End of the header lines (the empty line excluded), relative to `start`.
    block_end: usize,
    /// Start of the body, relative to `start`.
    body_start: usize,
    /// Body length.
    body_len: usize,
}

/// The framer of one connection: the shared line framing (read buffer, resumable search for
/// the empty line) and the current message's envelope once found.
#[derive(Debug)]
pub struct Framer {
    lines: LineFramer,
    /// The header block of the current message, once found.
    checked: Option<Checked>,
    limits: FrameLimits,
}

impl Framer {
    /// A framer for a fresh connection.
    pub fn new(limits: FrameLimits) -> Self {
        Self {
            lines: LineFramer::with_capacity(16 * 1024),
            checked: None,
            limits,
        }
    }

    /// Appends bytes read from the socket.
    pub fn extend(&mut self, data: &[u8]) {
        self.lines.extend(data);
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.lines.buffered()
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed, or the error that must end
    /// the connection.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some(c) = self.check()? else {
            return Ok(None);
        };
        let msg = self.lines.pending();
        let headers = Headers::parse(&msg[..c.block_end], false)?;
        let body = &msg[c.body_start..c.body_start + c.body_len];
        let frame = to_frame(headers, body)?;
        self.lines.consume(c.body_start + c.body_len);
        self.checked = None;
        Ok(Some(frame))
    }

    /// Proves that a whole message is buffered.
    fn check(&mut self) -> Result<Option<Checked>, FrameError> {
        if self.checked.is_none() {
            // Empty lines between messages are skipped.
            if !self.lines.skip_empty_lines() {
                return Ok(None);
            }
            let limit = self.limits.max_header_bytes;
            let Some(end) = self.lines.find_block_end() else {
                if self.lines.buffered() > limit {
                    return Err(FrameError::HeadersTooLarge { limit });
                }
                return Ok(None);
            };
            if end.next > limit {
                return Err(FrameError::HeadersTooLarge { limit });
            }
            let data = self.lines.pending();
            let body_len = content_length(&data[..end.lines_end], self.limits.max_body_bytes)?;
            self.checked = Some(Checked {
                block_end: end.lines_end,
                body_start: end.next,
                body_len,
            });
        }
        let c = self.checked.expect("set above");
        Ok((self.buffered() >= c.body_start + c.body_len).then_some(c))
    }
}

/// The body length from the envelope's `Content-Length` (0 when absent).
fn content_length(block: &[u8], max: usize) -> Result<usize, FrameError> {
    let mut found = None;
    for line in lines(block) {
        let Some((name, value)) = split_header(line) else {
            continue; // reported by the parse step
        };
        if name.eq_ignore_ascii_case(b"Content-Length") {
            if found.is_some() {
                return Err(FrameError::RepeatedContentLength);
            }
            found = Some(parse_length(value)?);
        }
    }
    let len = found.unwrap_or(0);
    if len > max {
        return Err(FrameError::BodyTooLarge {
            length: len,
            limit: max,
        });
    }
    Ok(len)
}

/// A decimal length: digits only (blanks around allowed), saturating on overflow.
fn parse_length(raw: &[u8]) -> Result<usize, FrameError> {
    let digits = raw.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(FrameError::BadContentLength(clip(raw)));
    }
    Ok(digits.iter().fold(0usize, |n, d| {
        n.saturating_mul(10).saturating_add(usize::from(d - b'0'))
    }))
}

fn to_frame(headers: Headers, body: &[u8]) -> Result<Frame, FrameError> {
    let content_type = headers
        .get_raw("Content-Type")
        .ok_or(FrameError::MissingContentType)?
        .trim_ascii();
    let is = |t: &str| content_type.eq_ignore_ascii_case(t.as_bytes());
    Ok(if is("auth/request") {
        Frame::AuthRequest
    } else if is("command/reply") {
        Frame::CommandReply(Reply { headers })
    } else if is("api/response") {
        Frame::ApiResponse {
            body: body.to_vec(),
        }
    } else if is("text/event-plain") {
        Frame::Event(Event::parse_plain(body)?)
    } else if is("text/event-json") {
        Frame::EventJson {
            body: body.to_vec(),
        }
    } else if is("text/disconnect-notice") {
        Frame::DisconnectNotice {
            headers,
            body: body.to_vec(),
        }
    } else if is("text/rude-rejection") {
        Frame::RudeRejection {
            body: body.to_vec(),
        }
    } else {
        Frame::Other {
            headers,
            body: body.to_vec(),
        }
    })
}

#[cfg(test)]
mod tests;
