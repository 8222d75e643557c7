//! AMI messages: [`Message`] (received) and [`Action`] (sent).

use std::fmt::Write as _;

use super::AmiError;

/// One message received from Asterisk: a response, an event (or, when a framer reads a
/// client's side of a capture, an action).
///
/// Headers are kept in wire order; keys may repeat (`Variable:`, `ChanVariable(...)`,
/// `Output:`). Lookup is case-insensitive and, like Asterisk's own `astman_get_header`,
/// returns the first occurrence. The text of an old-style `Response: Follows` reply is
/// stored as one `Output` header per line, the same shape as Asterisk 14+ `Command` replies.
///
/// The whole message is ONE text buffer (each key followed by its value, nothing between)
/// and one list of where each key and value end: two allocations per message, none per
/// header, whatever the number of headers.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// Every key and value, back to back, in wire order.
    text: String,
    /// Per header: where its key ends and where its value ends in `text` (the key starts
    /// where the previous value ended).
    spans: Vec<(u32, u32)>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("headers", &self.headers())
            .finish()
    }
}

impl Message {
    /// A message made of these headers, in this order.
    pub fn new(headers: Vec<(String, String)>) -> Self {
        let bytes = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        let mut msg = Self::with_capacity(bytes, headers.len());
        for (k, v) in &headers {
            msg.push(k, v);
        }
        msg
    }

    /// An empty message with room for `bytes` of keys and values and `headers` headers.
    pub(super) fn with_capacity(bytes: usize, headers: usize) -> Self {
        Self {
            text: String::with_capacity(bytes),
            spans: Vec::with_capacity(headers),
        }
    }

    /// Appends a header. A message is at most a few KiB (the framer's limit is 64 KiB);
    /// a header that would take the text past 4 GiB is not kept.
    pub(super) fn push(&mut self, key: &str, value: &str) {
        let Ok(value_end) = u32::try_from(self.text.len() + key.len() + value.len()) else {
            return;
        };
        self.text.push_str(key);
        let key_end = (self.text.len()) as u32;
        self.text.push_str(value);
        self.spans.push((key_end, value_end));
    }

    /// Appends a header read from the wire: bytes that are not UTF-8 are replaced lossily.
    pub(super) fn push_bytes(&mut self, key: &[u8], value: &[u8]) {
        let (k, v) = (String::from_utf8_lossy(key), String::from_utf8_lossy(value));
        self.push(&k, &v);
    }

    /// Builds a message from `(key, value)` pairs (handy in tests and mock servers).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        let bytes = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
        let mut msg = Self::with_capacity(bytes, pairs.len());
        for (k, v) in pairs {
            msg.push(k, v);
        }
        msg
    }

    /// Every header as `(key, value)`, in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let mut start = 0usize;
        self.spans.iter().map(move |&(key_end, value_end)| {
            let (k, v) = (key_end as usize, value_end as usize);
            let pair = (&self.text[start..k], &self.text[k..v]);
            start = v;
            pair
        })
    }

    /// The first value of `key` (case-insensitive), as Asterisk itself reads headers.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    }

    /// Every value of `key` (case-insensitive), in wire order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    }

    /// The event name (`Event:`), when this is an event.
    pub fn event(&self) -> Option<&str> {
        self.get("Event")
    }

    /// The `Response:` value (`Success`, `Error`, `Follows`, `Goodbye`...), when this is a
    /// response.
    pub fn response(&self) -> Option<&str> {
        self.get("Response")
    }

    /// The `ActionID:` echoed from the action this message answers.
    pub fn action_id(&self) -> Option<&str> {
        self.get("ActionID")
    }

    /// All headers in wire order (a list of borrowed pairs; [`Message::iter`] does not
    /// collect them).
    pub fn headers(&self) -> Vec<(&str, &str)> {
        self.iter().collect()
    }

    /// How many headers the message has.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True when the message has no header.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// True for `Response: Error`.
    pub fn is_error(&self) -> bool {
        self.response()
            .is_some_and(|r| r.eq_ignore_ascii_case("Error"))
    }

    /// This message in wire form (`Key: Value\r\n` lines and a blank line). Meant for tests
    /// and mock servers: values are written as they are, unchecked.
    pub fn to_wire(&self) -> String {
        let mut out = String::with_capacity(self.text.len() + self.spans.len() * 4 + 2);
        for (k, v) in self.iter() {
            let _ = write!(out, "{k}: {v}\r\n");
        }
        out.push_str("\r\n");
        out
    }
}

/// Longest header line an [`Action`] may hold, CRLF included. Asterisk reads a manager line
/// into a 1025-byte buffer and discards the whole message when a line does not fit
/// (`main/manager.c` `get_input`: "Line too long"); this leaves a margin below that.
pub const MAX_LINE_BYTES: usize = 1000;

/// Most headers an [`Action`] may hold besides `Action` and `ActionID`: Asterisk keeps 128
/// header lines of a message (`AST_MAX_MANHEADERS`) and answers an error for more.
pub const MAX_HEADERS: usize = 126;

/// An action to send to Asterisk: its name and headers, each checked when added.
///
/// Channel variables go in with [`Action::variable`], one `Variable:` header each, the value
/// escaped for the argument splitter Asterisk runs on that header.
///
/// ```
/// use pbxlink::pbx::asterisk::ami::Action;
/// let a = Action::new("QueuePause")
///     .header("Queue", "sales")?
///     .header("Interface", "Local/100@agents")?
///     .header("Paused", "true")?;
/// assert!(Action::new("Ping").header("X", "a\r\nAction: Hangup").is_err());
/// # Ok::<(), pbxlink::pbx::asterisk::ami::AmiError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    name: String,
    headers: Vec<(String, String)>,
}

impl Action {
    /// An action named `name` (`Ping`, `Originate`, `QueueStatus`...). The name is checked
    /// when the action is encoded: a name holding CR or LF makes sending fail with
    /// [`AmiError::HeaderInjection`].
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a header. Refuses CR, LF or NUL in the key or value
    /// ([`AmiError::HeaderInjection`]: Asterisk ends a line at the first NUL), an empty key
    /// or one holding ':' ([`AmiError::InvalidKey`]), the keys the client writes itself,
    /// `Action` and `ActionID` ([`AmiError::ReservedKey`]), a line longer than
    /// [`MAX_LINE_BYTES`] ([`AmiError::LineTooLong`]) and more than [`MAX_HEADERS`] headers
    /// ([`AmiError::TooManyHeaders`]). Keys may repeat. The value is sent as it is: for a
    /// channel variable use [`Action::variable`], which escapes it.
    pub fn header(
        mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Self, AmiError> {
        let (key, value) = (key.into(), value.into());
        check_key(&key)?;
        if has_crlf(&value) {
            return Err(AmiError::HeaderInjection { key });
        }
        if key.eq_ignore_ascii_case("Action") || key.eq_ignore_ascii_case("ActionID") {
            return Err(AmiError::ReservedKey { key });
        }
        check_line(&key, &value)?;
        if self.headers.len() >= MAX_HEADERS {
            return Err(AmiError::TooManyHeaders { limit: MAX_HEADERS });
        }
        self.headers.push((key, value));
        Ok(self)
    }

    /// Adds `Variable: name=value`, one header per variable, so that Asterisk sets exactly
    /// the variable `name` to exactly `value` on the channel.
    ///
    /// Asterisk splits every `Variable:` header into `name=value` items with its dialplan
    /// argument parser (`man_do_variable_value` in `main/manager.c`, `AST_STANDARD_APP_ARGS`
    /// in `main/app.c`): a `,` starts another item (so `L1,CALLERID(num)=x` would also set
    /// the caller id), `"` toggles quoting and is dropped, `\` makes the next character
    /// literal and is dropped, and `(`/`)`, `[`/`]` nest. The value is therefore written
    /// with a `\` before each of `\ " , ( ) [ ]`, which that parser turns back into the
    /// value itself. The name must be a variable name (letters, digits, `_`, leading `_` or
    /// `__` for inheritance) or a function call with a plain argument such as `CDR(leadid)`
    /// ([`AmiError::InvalidVariable`] otherwise: a `=` or `,` in it would move the split).
    pub fn variable(self, name: &str, value: &str) -> Result<Self, AmiError> {
        check_variable_name(name)?;
        self.header("Variable", format!("{name}={}", escape_app_arg(value)))
    }

    /// Sets `key` to `value`, replacing every earlier value of it (checked as in
    /// [`Action::header`]).
    pub fn set(mut self, key: &str, value: impl Into<String>) -> Result<Self, AmiError> {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(key));
        self.header(key, value)
    }

    /// The action's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The first value of `key` (case-insensitive).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// The headers added so far, in order (without `Action`/`ActionID`).
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The wire bytes: `Action`, `ActionID`, the headers, a blank line. Everything is
    /// checked again here (also the name and the ActionID), so no CR/LF can reach the wire.
    pub fn encode(&self, action_id: &str) -> Result<Vec<u8>, AmiError> {
        if has_crlf(&self.name) || self.name.is_empty() {
            return Err(AmiError::HeaderInjection {
                key: "Action".into(),
            });
        }
        if self.headers.len() > MAX_HEADERS {
            return Err(AmiError::TooManyHeaders { limit: MAX_HEADERS });
        }
        check_line("Action", &self.name)?;
        if has_crlf(action_id) {
            return Err(AmiError::HeaderInjection {
                key: "ActionID".into(),
            });
        }
        let mut out = String::with_capacity(64 + self.headers.len() * 32);
        let _ = write!(out, "Action: {}\r\nActionID: {action_id}\r\n", self.name);
        for (k, v) in &self.headers {
            check_key(k)?;
            if has_crlf(v) {
                return Err(AmiError::HeaderInjection { key: k.clone() });
            }
            check_line(k, v)?;
            let _ = write!(out, "{k}: {v}\r\n");
        }
        out.push_str("\r\n");
        Ok(out.into_bytes())
    }
}

/// CR or LF (which end a manager line) or NUL (where Asterisk stops reading the line).
fn has_crlf(s: &str) -> bool {
    s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

fn check_line(key: &str, value: &str) -> Result<(), AmiError> {
    let len = key.len() + 2 + value.len() + 2;
    if len > MAX_LINE_BYTES {
        return Err(AmiError::LineTooLong {
            key: key.chars().take(40).collect(),
            len,
            limit: MAX_LINE_BYTES,
        });
    }
    Ok(())
}

/// `NAME`, `_NAME`, `__NAME` or `FUNC(arg)`: letters, digits and `_`, with at most one
/// parenthesised argument of letters, digits, `_` and `-` at the end.
fn check_variable_name(name: &str) -> Result<(), AmiError> {
    let word = |s: &str, extra: &[u8]| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || extra.contains(&b))
    };
    let ok = match name.split_once('(') {
        None => word(name, &[]),
        Some((func, rest)) => {
            word(func, &[]) && rest.strip_suffix(')').is_some_and(|arg| word(arg, b"-"))
        }
    };
    if ok && name.len() <= 80 {
        Ok(())
    } else {
        Err(AmiError::InvalidVariable {
            name: name.chars().take(80).collect(),
        })
    }
}

/// Characters Asterisk's dialplan argument parser treats specially (see
/// [`Action::variable`]).
const APP_ARG_SPECIAL: [char; 7] = ['\\', '"', ',', '(', ')', '[', ']'];

/// `value` with a backslash before every character of [`APP_ARG_SPECIAL`]: Asterisk's
/// `AST_STANDARD_APP_ARGS` reads it back as one argument equal to `value`.
pub fn escape_app_arg(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if APP_ARG_SPECIAL.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn check_key(key: &str) -> Result<(), AmiError> {
    if has_crlf(key) {
        return Err(AmiError::HeaderInjection { key: key.into() });
    }
    if key.trim().is_empty() || key.contains(':') || key.bytes().any(|b| b.is_ascii_control()) {
        return Err(AmiError::InvalidKey { key: key.into() });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
