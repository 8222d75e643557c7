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
use crate::pbx::framing::{BlockEnd, LineFramer, clip, lines, split_header, strip_cr};

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

/// The framer of one connection: the shared line framing (read buffer, resumable search for
/// the empty line) and what checking learnt about the current frame.
#[derive(Debug)]
pub struct Framer {
    lines: LineFramer,
    /// Up to where (relative to the first pending byte) the line ends of the current frame
    /// have been counted, and how many there were.
    counted: usize,
    line_count: usize,
    /// Once the current frame's first line is in: whether it is an old `Response: Follows`
    /// reply (which ends at `--END COMMAND--`, not at the first empty line).
    follows: Option<bool>,
    expect_banner: bool,
    limits: FrameLimits,
}

impl Framer {
    /// A framer for a fresh connection: the first frame is the banner line.
    pub fn after_connect(limits: FrameLimits) -> Self {
        Self {
            lines: LineFramer::with_capacity(8 * 1024),
            counted: 0,
            line_count: 0,
            follows: None,
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
        self.lines.extend(data);
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.lines.buffered()
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed, or the error that must
    /// end the connection.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        self.next_frame_keeping(|_| Keep::Yes)
    }

    /// Like [`Framer::next_frame`], but first shows `keep` every event's name and skips,
    /// without parsing it, each event it answers [`Keep::No`] for. The name is read from the
    /// frame's first line, where Asterisk writes it; an event whose first line is not
    /// `Event:` is always parsed. [`Keep::IfActionId`] skips the event unless one of its
    /// lines is an `ActionID` header (an event answering an action is kept).
    pub fn next_frame_keeping(
        &mut self,
        mut keep: impl FnMut(&[u8]) -> Keep,
    ) -> Result<Option<Frame>, FrameError> {
        loop {
            let Some(end) = self.check()? else {
                return Ok(None);
            };
            let bytes = &self.lines.pending()[..end.next];
            let frame = if self.expect_banner {
                let line = String::from_utf8_lossy(strip_cr(&bytes[..bytes.len() - 1]));
                let line = line.trim();
                let Some(version) = line.strip_prefix(BANNER_PREFIX) else {
                    return Err(FrameError::BadBanner(clip(line.as_bytes())));
                };
                self.expect_banner = false;
                Frame::Banner {
                    version: version.trim().to_owned(),
                }
            } else {
                let block = &bytes[..end.lines_end];
                let follows = self.follows == Some(true);
                if !follows && !wanted(block, &mut keep) {
                    self.consume(end.next);
                    continue;
                }
                Frame::Message(parse_message(block, follows, self.line_count)?)
            };
            self.consume(end.next);
            return Ok(Some(frame));
        }
    }

    fn consume(&mut self, n: usize) {
        self.lines.consume(n);
        self.counted = 0;
        self.line_count = 0;
        self.follows = None;
    }

    /// Proves that a whole frame is buffered: where it ends.
    fn check(&mut self) -> Result<Option<BlockEnd>, FrameError> {
        if self.expect_banner {
            let data = self.lines.pending();
            return match memchr::memchr(b'\n', data) {
                Some(nl) => Ok(Some(BlockEnd {
                    lines_end: nl,
                    next: nl + 1,
                })),
                None if data.len() > MAX_BANNER_BYTES => Err(FrameError::BadBanner(clip(data))),
                None => Ok(None),
            };
        }
        let limit = self.limits.max_message_bytes;
        // Blank lines between messages are skipped.
        if !self.lines.skip_empty_lines() {
            return Ok(None);
        }
        let follows = match self.follows {
            Some(f) => f,
            None => {
                let data = self.lines.pending();
                let Some(nl) = memchr::memchr(b'\n', data) else {
                    if data.len() > limit {
                        return Err(FrameError::TooLarge { limit });
                    }
                    return Ok(None);
                };
                let f = is_follows(strip_cr(&data[..nl]));
                self.follows = Some(f);
                f
            }
        };
        if follows {
            return self.check_follows();
        }
        let Some(end) = self.lines.find_block_end() else {
            return self.incomplete();
        };
        if end.next > limit {
            return Err(FrameError::TooLarge { limit });
        }
        self.count_lines(end.lines_end + 1)?;
        Ok(Some(end))
    }

    /// No end yet: the frame may not grow past the limits.
    fn incomplete(&mut self) -> Result<Option<BlockEnd>, FrameError> {
        let len = self.lines.buffered();
        if len > self.limits.max_message_bytes {
            return Err(FrameError::TooLarge {
                limit: self.limits.max_message_bytes,
            });
        }
        self.count_lines(len)?;
        Ok(None)
    }

    /// Counts the line ends of the current frame up to `upto`; more lines than
    /// `max_headers` is an error.
    fn count_lines(&mut self, upto: usize) -> Result<(), FrameError> {
        if upto > self.counted {
            let data = &self.lines.pending()[self.counted..upto];
            self.line_count += memchr::memchr_iter(b'\n', data).count();
            self.counted = upto;
        }
        if self.line_count > self.limits.max_headers {
            return Err(FrameError::TooManyHeaders {
                limit: self.limits.max_headers,
            });
        }
        Ok(())
    }

    /// An old `Response: Follows` reply: its output (blank lines included) ends at the line
    /// ending with `--END COMMAND--`. Rare, so read line by line from where the last call
    /// stopped (`counted`).
    fn check_follows(&mut self) -> Result<Option<BlockEnd>, FrameError> {
        let limit = self.limits.max_message_bytes;
        loop {
            let data = self.lines.pending();
            let Some(nl) = memchr::memchr(b'\n', &data[self.counted..]) else {
                if data.len() > limit {
                    return Err(FrameError::TooLarge { limit });
                }
                return Ok(None);
            };
            let next = self.counted + nl + 1;
            if next > limit {
                return Err(FrameError::TooLarge { limit });
            }
            let line = strip_cr(&data[self.counted..next - 1]);
            self.counted = next;
            if !line.is_empty() {
                self.line_count += 1;
                if line.ends_with(END_COMMAND) {
                    return Ok(Some(BlockEnd {
                        lines_end: next - 1,
                        next,
                    }));
                }
            }
        }
    }
}

/// What [`Framer::next_frame_keeping`] does with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Parse it.
    Yes,
    /// Skip it unparsed.
    No,
    /// Parse it only if it carries an `ActionID` (it answers an action).
    IfActionId,
}

/// Whether `keep` wants the frame whose header lines are `block`.
fn wanted(block: &[u8], keep: &mut impl FnMut(&[u8]) -> Keep) -> bool {
    let first = block.get(..memchr::memchr(b'\n', block).unwrap_or(block.len()));
    let Some((key, value)) = first.map(strip_cr).and_then(split_header) else {
        return true;
    };
    if !key.eq_ignore_ascii_case(b"Event") {
        return true;
    }
    match keep(value.trim_ascii_end()) {
        Keep::Yes => true,
        Keep::No => false,
        Keep::IfActionId => lines(block).any(|line| {
            split_header(line).is_some_and(|(k, _)| k.eq_ignore_ascii_case(b"ActionID"))
        }),
    }
}

const END_COMMAND: &[u8] = b"--END COMMAND--";

fn is_follows(line: &[u8]) -> bool {
    split_header(line).is_some_and(|(k, v)| {
        k.eq_ignore_ascii_case(b"Response") && v.trim_ascii().eq_ignore_ascii_case(b"Follows")
    })
}

/// Parses the lines of a frame proven complete by `check` (`lines` of them, about) into one
/// [`Message`]: one text buffer and one span list, no allocation per header. The frame is
/// checked for UTF-8 once; only a frame that is not valid UTF-8 is converted header by
/// header (lossily).
fn parse_message(block: &[u8], follows: bool, lines_hint: usize) -> Result<Message, FrameError> {
    let mut msg = Message::with_capacity(block.len(), lines_hint);
    let text = std::str::from_utf8(block).ok();
    let push = |msg: &mut Message, k: &[u8], v: &[u8]| match text {
        // Slices of the block cut next to ASCII bytes: char boundaries of `text`.
        Some(text) => match (sub_str(text, block, k), sub_str(text, block, v)) {
            (Some(k), Some(v)) => msg.push(k, v),
            _ => msg.push_bytes(k, v),
        },
        None => msg.push_bytes(k, v),
    };
    let mut output = false;
    for (i, line) in lines(block).enumerate() {
        if follows {
            // Response, then Privilege/ActionID/Message headers, then free text up to
            // `--END COMMAND--` (which may end the last output line).
            if !output && i > 0 && !is_follows_header(line) {
                output = true;
            }
            if output {
                if let Some(rest) = line.strip_suffix(END_COMMAND) {
                    if !rest.is_empty() {
                        push(&mut msg, b"Output", rest);
                    }
                    break;
                }
                push(&mut msg, b"Output", line);
                continue;
            }
        }
        if line.is_empty() {
            continue;
        }
        let Some((k, v)) = split_header(line) else {
            return Err(FrameError::Malformed {
                line: i + 1,
                text: clip(line),
            });
        };
        push(&mut msg, k, v);
    }
    Ok(msg)
}

/// `part` (a slice of `block`, or a constant) as a slice of `text`, the same bytes as
/// `block` checked for UTF-8; None when `part` is not inside `block`.
fn sub_str<'a>(text: &'a str, block: &[u8], part: &'a [u8]) -> Option<&'a str> {
    let start = (part.as_ptr() as usize).checked_sub(block.as_ptr() as usize)?;
    match text.get(start..start + part.len()) {
        Some(s) if s.as_bytes().as_ptr() == part.as_ptr() => Some(s),
        _ => std::str::from_utf8(part).ok(),
    }
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
