//! The AMI framer: bytes from the socket in, whole [`Frame`]s out.
//!
//! Like mini-redis' `Connection`, the framer owns the read buffer and works in two steps:
//! [`Framer::next_frame`] first *checks* that a whole frame is buffered (the headers up to
//! the blank line, or up to `--END COMMAND--` for an old `Response: Follows` reply) without
//! allocating, and only then *parses* it. A frame that is not complete yet is the normal
//! `Ok(None)`: read more bytes and call again. Checking resumes where it stopped, so a
//! frame that arrives one byte at a time is not rescanned from its start.
//!
//! Tolerances: bare LF line ends as well as CRLF, blank lines between messages, repeated
//! keys, empty values, values that are not UTF-8 (replaced lossily). Limits: a frame larger
//! than [`FrameLimits::max_message_bytes`] or with more than [`FrameLimits::max_headers`]
//! headers, a line that is not `Key: Value`, or a banner that is not Asterisk's is a
//! [`FrameError`]: the connection it came from must be dropped (Asterisk itself refuses
//! lines over 1024 bytes and more than 128 headers, so a real server stays far below the
//! defaults).

use super::Message;
use crate::pbx::read_buffer::ReadBuffer;

/// Longest banner line accepted.
pub const MAX_BANNER_BYTES: usize = 1024;

/// The prefix of the banner line Asterisk sends on connect.
pub const BANNER_PREFIX: &str = "Asterisk Call Manager/";

/// Size limits of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Most bytes in one message, including its line ends and blank line (default 64 KiB).
    pub max_message_bytes: usize,
    /// Most header lines in one message (default 1024; `Follows` output lines are only
    /// bounded by bytes).
    pub max_headers: usize,
}

impl Default for FrameLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 * 1024,
            max_headers: 1024,
        }
    }
}

/// Why a frame could not be read. The connection that produced it must be closed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// A message grew past the byte limit.
    #[error("message larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// A message has too many header lines.
    #[error("message with more than {limit} headers")]
    TooManyHeaders {
        /// The limit.
        limit: usize,
    },
    /// A line of a message is not `Key: Value`.
    #[error("line {line} of a message is not `Key: Value`: {text:?}")]
    Malformed {
        /// 1-based line number within the message.
        line: usize,
        /// The line (at most 80 characters of it).
        text: String,
    },
    /// The first line is not `Asterisk Call Manager/<version>`.
    #[error("not an Asterisk manager banner: {0:?}")]
    BadBanner(String),
}

/// One frame read from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The banner line sent on connect.
    Banner {
        /// What follows `Asterisk Call Manager/` (e.g. `11.0.0` for Asterisk 22).
        version: String,
    },
    /// A message (response or event).
    Message(Message),
}

/// The framer of one connection: its read buffer and where checking stopped.
#[derive(Debug)]
pub struct Framer {
    buf: ReadBuffer,
    /// Where checking resumes, relative to the first pending byte (always the start of a line).
    scan: usize,
    /// Non-empty lines of the current frame seen so far.
    lines: usize,
    /// The current frame is an old `Response: Follows` reply.
    follows: bool,
    expect_banner: bool,
    limits: FrameLimits,
}

impl Framer {
    /// A framer for a fresh connection: the first frame is the banner line.
    pub fn after_connect(limits: FrameLimits) -> Self {
        Self {
            buf: ReadBuffer::with_capacity(8 * 1024),
            scan: 0,
            lines: 0,
            follows: false,
            expect_banner: true,
            limits,
        }
    }

    /// A framer for a stream of messages without a banner (captures, a client's side).
    pub fn messages_only(limits: FrameLimits) -> Self {
        Self {
            expect_banner: false,
            ..Self::after_connect(limits)
        }
    }

    /// Appends bytes read from the socket.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend(data);
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed, or the error that must
    /// end the connection.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some(end) = self.check()? else {
            return Ok(None);
        };
        let bytes = &self.buf.pending()[..end];
        let frame = if self.expect_banner {
            let line = String::from_utf8_lossy(strip_cr(&bytes[..bytes.len() - 1]));
            let line = line.trim();
            let Some(version) = line.strip_prefix(BANNER_PREFIX) else {
                return Err(FrameError::BadBanner(clip(line)));
            };
            self.expect_banner = false;
            Frame::Banner {
                version: version.trim().to_owned(),
            }
        } else {
            Frame::Message(parse_message(bytes, self.follows, self.lines)?)
        };
        self.buf.consume(end);
        self.scan = 0;
        self.lines = 0;
        self.follows = false;
        Ok(Some(frame))
    }

    /// Proves that a whole frame is buffered: returns its length from `start`.
    fn check(&mut self) -> Result<Option<usize>, FrameError> {
        loop {
            let data = self.buf.pending();
            let Some(nl) = data[self.scan..].iter().position(|&b| b == b'\n') else {
                let limit = if self.expect_banner {
                    MAX_BANNER_BYTES
                } else {
                    self.limits.max_message_bytes
                };
                if data.len() > limit {
                    return Err(if self.expect_banner {
                        FrameError::BadBanner(clip(&String::from_utf8_lossy(data)))
                    } else {
                        FrameError::TooLarge { limit }
                    });
                }
                return Ok(None);
            };
            let next = self.scan + nl + 1;
            if self.expect_banner {
                return Ok(Some(next));
            }
            let line = strip_cr(&data[self.scan..next - 1]);
            if next > self.limits.max_message_bytes {
                return Err(FrameError::TooLarge {
                    limit: self.limits.max_message_bytes,
                });
            }
            if line.is_empty() {
                if self.lines == 0 {
                    // A blank line between messages: skip it.
                    self.buf.consume(next);
                    self.scan = 0;
                    continue;
                }
                if !self.follows {
                    return Ok(Some(next));
                }
                // A blank line inside `Follows` output is output.
            } else {
                self.lines += 1;
                if self.lines == 1 {
                    self.follows = is_follows(line);
                }
                if self.follows {
                    if line.ends_with(END_COMMAND) {
                        return Ok(Some(next));
                    }
                } else if self.lines > self.limits.max_headers {
                    return Err(FrameError::TooManyHeaders {
                        limit: self.limits.max_headers,
                    });
                }
            }
            self.scan = next;
        }
    }
}

const END_COMMAND: &[u8] = b"--END COMMAND--";

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

fn is_follows(line: &[u8]) -> bool {
    split_header(line).is_some_and(|(k, v)| {
        k.eq_ignore_ascii_case(b"Response") && v.trim_ascii().eq_ignore_ascii_case(b"Follows")
    })
}

/// `Key: Value` → (key, value): the key trimmed, the value without leading blanks.
fn split_header(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    let key = line[..colon].trim_ascii();
    if key.is_empty() || key.iter().any(|b| b.is_ascii_control()) {
        return None;
    }
    let value = &line[colon + 1..];
    let skip = value
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    Some((key, &value[skip..]))
}

/// Parses a frame proven complete by `check` (`lines` of them not blank) into one
/// [`Message`]: one text buffer and one span list, no allocation per header.
fn parse_message(bytes: &[u8], follows: bool, lines: usize) -> Result<Message, FrameError> {
    let mut msg = Message::with_capacity(bytes.len(), lines);
    let mut output = false;
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = strip_cr(raw);
        if follows {
            // Response, then Privilege/ActionID/Message headers, then free text up to
            // `--END COMMAND--` (which may end the last output line).
            if !output && i > 0 && !is_follows_header(line) {
                output = true;
            }
            if output {
                if let Some(rest) = line.strip_suffix(END_COMMAND) {
                    if !rest.is_empty() {
                        msg.push_bytes(b"Output", rest);
                    }
                    break;
                }
                msg.push_bytes(b"Output", line);
                continue;
            }
        }
        if line.is_empty() {
            continue;
        }
        let Some((k, v)) = split_header(line) else {
            return Err(FrameError::Malformed {
                line: i + 1,
                text: clip(&String::from_utf8_lossy(line)),
            });
        };
        msg.push_bytes(k, v);
    }
    Ok(msg)
}

fn is_follows_header(line: &[u8]) -> bool {
    split_header(line).is_some_and(|(k, _)| {
        [&b"Privilege"[..], b"ActionID", b"Message"]
            .iter()
            .any(|h| k.eq_ignore_ascii_case(h))
    })
}

#[cfg(test)]
mod tests;
