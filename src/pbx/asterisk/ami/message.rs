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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    headers: Vec<(String, String)>,
}

impl Message {
    /// A message made of these headers, in this order.
    pub fn new(headers: Vec<(String, String)>) -> Self {
        Self { headers }
    }

    /// Builds a message from `(key, value)` pairs (handy in tests and mock servers).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Self::new(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    /// The first value of `key` (case-insensitive), as Asterisk itself reads headers.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key` (case-insensitive), in wire order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
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

    /// All headers in wire order.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// True for `Response: Error`.
    pub fn is_error(&self) -> bool {
        self.response()
            .is_some_and(|r| r.eq_ignore_ascii_case("Error"))
    }

    /// This message in wire form (`Key: Value\r\n` lines and a blank line). Meant for tests
    /// and mock servers: values are written as they are, unchecked.
    pub fn to_wire(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.headers {
            let _ = write!(out, "{k}: {v}\r\n");
        }
        out.push_str("\r\n");
        out
    }
}

/// An action to send to Asterisk: its name and headers, each checked when added.
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

    /// Adds a header. Refuses CR or LF in the key or value ([`AmiError::HeaderInjection`]),
    /// an empty key or one holding ':' ([`AmiError::InvalidKey`]) and the keys the client
    /// writes itself, `Action` and `ActionID` ([`AmiError::ReservedKey`]). Keys may repeat
    /// (`Variable:`).
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
        self.headers.push((key, value));
        Ok(self)
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
            let _ = write!(out, "{k}: {v}\r\n");
        }
        out.push_str("\r\n");
        Ok(out.into_bytes())
    }
}

fn has_crlf(s: &str) -> bool {
    s.bytes().any(|b| b == b'\r' || b == b'\n')
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
