//! Commands sent to FreeSWITCH's event socket, and builders for the API commands pbxlink uses.
//!
//! Every value is checked before it is put into a command; one that could break out of its
//! place is refused with a [`CommandError`] naming the parameter, and nothing is sent. What
//! "break out" means comes from FreeSWITCH's own parsers (quoted from the source at
//! github.com/signalwire/freeswitch, master of 2026-08):
//!
//! - The socket reads a command up to an empty line and takes its first line as the command,
//!   cut at the first CR or LF (`mod_event_socket.c:read_packet`, `crcount == 2`, and
//!   `strip_cr`: `if ((p = strchr(s, '\r')) || (p = strchr(s, '\n'))) *p = '\0';`); every
//!   following line is a header `name: value` (`if ((val = strchr(var, ':')))`). So CR and LF
//!   are refused in every value, and a header value (`Job-UUID`) cannot hold them either.
//! - `parse_command` turns any command containing both `unload` and `mod_event_socket` into
//!   `api bgapi unload mod_event_socket` (`if (switch_stristr("unload", cmd) &&
//!   switch_stristr("mod_event_socket", cmd)) cmd = unload_cheat;`): refused.
//! - `api <cmd> <arg>` / `bgapi <cmd> <arg>` split the command name at the first space
//!   (`if ((arg = strchr(api_cmd, ' '))) *arg++ = '\0';`).
//! - `originate` splits its argument at spaces with quote and backslash handling
//!   (`mod_commands.c:originate_function`: `switch_separate_string(mycmd, ' ', argv, ...)`;
//!   `switch_utils.c:separate_string_blank_delim`: `if (*ptr == ESCAPE_META) ++ptr; else if
//!   (*ptr == '\'') inside_quotes = (1 - inside_quotes); else if (*ptr == ' ' &&
//!   !inside_quotes)`), so a space, `'` or `\` in an argument ends or re-shapes it; an argument
//!   spelled `undef` becomes NULL (`if (!strcasecmp(argv[x], "undef")) argv[x] = NULL;`), and a
//!   NULL destination trips `switch_assert(exten)`: refused. A destination starting with `&`
//!   runs an application (`if (*exten == '&' && *(exten + 1))`): refused.
//! - The `{a=b,c=d}` block is cut at the matching `}` by a brace counter that ignores quotes
//!   (`switch_find_end_paren`: `if (*e == open && open != close) depth++; else if (*e ==
//!   close) depth--;`), split at `,` with `'` and `\` handling
//!   (`switch_event_create_brackets` → `switch_separate_string(vdata, c, ...)` →
//!   `separate_string_char_delim`), a leading `^^X` picks another separator (`if (*vdata ==
//!   '^' && *(vdata + 1) == '^') { vdata += 2; c = *vdata++; }`), and each item is split once
//!   at `=` (`switch_separate_string(var_array[x], '=', inner_var_array, 2) == 2`, so a value
//!   may hold `=` but a name may not, and an empty value is silently dropped). Values holding
//!   `${` are not set at all (`switch_channel_set_variable_var_check` with `check_vars`).
//!
//! Quoting could carry some of these characters, but a value passes two unquoting passes
//! (the blank split, then the comma split, each stripping quotes and backslashes) and a
//! quote-blind brace counter; pbxlink's values (numbers, ids, extensions) never need them, so
//! they are refused rather than escaped: `CommandError::Unsafe`.

use std::fmt::Write as _;

/// Why a command was not built. Nothing was sent.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    /// A value holds a character that could end its line, argument or variable.
    #[error("refused ESL command: {parameter} holds {found:?}, which could break out of it")]
    Unsafe {
        /// The parameter (e.g. `originate variable pbxlink_lead_id`).
        parameter: String,
        /// The offending character.
        found: char,
    },
    /// A value is empty (or only blanks) where FreeSWITCH needs one.
    #[error("refused ESL command: {parameter} is empty")]
    Empty {
        /// The parameter.
        parameter: String,
    },
    /// A value FreeSWITCH reads as something else (`undef`, a leading `&`, a reserved word).
    #[error("refused ESL command: {parameter} is {value:?}, which FreeSWITCH reads as {meaning}")]
    Reserved {
        /// The parameter.
        parameter: String,
        /// The value.
        value: String,
        /// What FreeSWITCH would make of it.
        meaning: &'static str,
    },
}

/// One command to send: its line and optional headers, encoded by [`Command::to_wire`].
///
/// ```
/// use pbxlink::pbx::freeswitch::esl::Command;
/// let c = Command::bgapi("status", Some("7f4de4bc-17d7-11dd-b7a0-db4edd065621"))?;
/// assert_eq!(
///     c.to_wire(),
///     b"bgapi status\nJob-UUID: 7f4de4bc-17d7-11dd-b7a0-db4edd065621\n\n"
/// );
/// assert!(Command::api("status\n\nexit").is_err());
/// # Ok::<(), pbxlink::pbx::freeswitch::esl::CommandError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    line: String,
    headers: Vec<(&'static str, String)>,
}

impl Command {
    /// `auth <password>` (the whole rest of the line is the password: `pass = cmd + 5;
    /// if (!strcmp(prefs.password, pass))`, so blanks are kept).
    pub fn auth(password: &str) -> Result<Self, CommandError> {
        if password.is_empty() {
            return Err(empty("auth password"));
        }
        refuse(password, "auth password", &[])?;
        Self::line(format!("auth {password}"))
    }

    /// `event plain <names...>` (names split at spaces: `if ((next = strchr(cur, ' ')))`);
    /// a CUSTOM subscription lists its subclasses after `CUSTOM`.
    pub fn event_plain<S: AsRef<str>>(names: &[S]) -> Result<Self, CommandError> {
        if names.is_empty() {
            return Err(empty("event names"));
        }
        let mut line = String::from("event plain");
        for name in names {
            let name = name.as_ref();
            bare(name, "event name")?;
            line.push(' ');
            line.push_str(name);
        }
        Self::line(line)
    }

    /// `api <command>`: the answer is an `api/response`.
    pub fn api(command: &str) -> Result<Self, CommandError> {
        api_command(command, "api command")?;
        Self::line(format!("api {command}"))
    }

    /// `bgapi <command>`, with the `Job-UUID` the BACKGROUND_JOB event will carry when given
    /// (`if ((uuid_str = switch_event_get_header(*event, "job-uuid")))`; letters, digits and
    /// `-` only, at most 64).
    pub fn bgapi(command: &str, job_uuid: Option<&str>) -> Result<Self, CommandError> {
        api_command(command, "bgapi command")?;
        let mut c = Self::line(format!("bgapi {command}"))?;
        if let Some(uuid) = job_uuid {
            if uuid.is_empty() {
                return Err(empty("Job-UUID"));
            }
            if let Some(bad) = uuid
                .chars()
                .find(|ch| !(ch.is_ascii_alphanumeric() || *ch == '-'))
            {
                return Err(unsafe_char("Job-UUID", bad));
            }
            if uuid.len() > 64 {
                return Err(CommandError::Reserved {
                    parameter: "Job-UUID".into(),
                    value: uuid.chars().take(80).collect(),
                    meaning: "a value longer than its 256-byte buffer allows for a uuid",
                });
            }
            c.headers.push(("Job-UUID", uuid.to_owned()));
        }
        Ok(c)
    }

    /// `filter <header> <value>`: only events whose `header` equals `value` pass. The header
    /// name ends at the first space (`if ((header_val = strchr(header_name, ' ')))`); the value
    /// is the rest of the line. `add` and `delete` as names are sub-commands: refused.
    pub fn filter(header: &str, value: &str) -> Result<Self, CommandError> {
        bare(header, "filter header")?;
        if header.eq_ignore_ascii_case("add") || header.eq_ignore_ascii_case("delete") {
            return Err(CommandError::Reserved {
                parameter: "filter header".into(),
                value: header.into(),
                meaning: "a filter sub-command",
            });
        }
        if value.trim().is_empty() {
            return Err(empty("filter value"));
        }
        refuse(value, "filter value", &[])?;
        Self::line(format!("filter {header} {value}"))
    }

    /// `exit`: the server answers `+OK bye` and closes.
    pub fn exit() -> Self {
        Self {
            line: "exit".into(),
            headers: Vec::new(),
        }
    }

    /// The command line (without its line end).
    pub fn command_line(&self) -> &str {
        &self.line
    }

    /// The headers sent after the line (`Job-UUID`).
    pub fn headers(&self) -> &[(&'static str, String)] {
        &self.headers
    }

    /// The bytes to write: the line, the headers, an empty line.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = String::with_capacity(self.line.len() + 64);
        out.push_str(&self.line);
        out.push('\n');
        for (k, v) in &self.headers {
            let _ = writeln!(out, "{k}: {v}");
        }
        out.push('\n');
        out.into_bytes()
    }

    fn line(line: String) -> Result<Self, CommandError> {
        let lower = line.to_ascii_lowercase();
        if lower.contains("unload") && lower.contains("mod_event_socket") {
            return Err(CommandError::Reserved {
                parameter: "command".into(),
                value: line.chars().take(80).collect(),
                meaning: "`unload mod_event_socket` (any command holding both words)",
            });
        }
        Ok(Self {
            line,
            headers: Vec::new(),
        })
    }
}

/// `originate {var=value,...}<endpoint> <destination> <dialplan> <context>`, each part
/// checked (see the module docs for the rules and where they come from).
///
/// ```
/// use pbxlink::pbx::freeswitch::esl::Originate;
/// let o = Originate::new("user/1001", "4930123457")?
///     .variable("origination_caller_id_number", "+4930555000")?
///     .variable("pbxlink_lead_id", "5f0c-9a1e")?
///     .context("public")?;
/// assert_eq!(
///     o.api_text(),
///     "originate {origination_caller_id_number=+4930555000,pbxlink_lead_id=5f0c-9a1e}user/1001 4930123457 XML public"
/// );
/// assert!(o.clone().variable("x", "a,b=c").is_err());
/// # Ok::<(), pbxlink::pbx::freeswitch::esl::CommandError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Originate {
    variables: Vec<(String, String)>,
    endpoint: String,
    destination: String,
    dialplan: String,
    context: String,
}

impl Originate {
    /// Ring `endpoint` (e.g. `user/1001`, `sofia/gateway/carrier/4930123457`); once it
    /// answers, send it to `destination` in dialplan `XML`, context `default` (FreeSWITCH's
    /// own defaults).
    pub fn new(endpoint: &str, destination: &str) -> Result<Self, CommandError> {
        let endpoint = endpoint_arg(endpoint)?;
        let destination = bare(destination, "originate destination")?;
        if destination.starts_with('&') {
            return Err(CommandError::Reserved {
                parameter: "originate destination".into(),
                value: destination.into(),
                meaning: "an application to run (`&app(args)`)",
            });
        }
        Ok(Self {
            variables: Vec::new(),
            endpoint: endpoint.into(),
            destination: destination.into(),
            dialplan: "XML".into(),
            context: "default".into(),
        })
    }

    /// Sets a channel variable on the originated leg. Names: letters, digits, `_`, `-`, `.`;
    /// values: no control character, blank, `,` `{` `}` `'` `\` `^` `$`, not empty.
    pub fn variable(mut self, name: &str, value: &str) -> Result<Self, CommandError> {
        let parameter = || format!("originate variable name {name:?}");
        if name.is_empty() {
            return Err(CommandError::Empty {
                parameter: parameter(),
            });
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        {
            return Err(CommandError::Unsafe {
                parameter: parameter(),
                found: bad,
            });
        }
        let parameter = format!("originate variable {name}");
        if value.is_empty() {
            return Err(CommandError::Empty { parameter });
        }
        refuse(
            value,
            &parameter,
            &[' ', ',', '{', '}', '\'', '\\', '^', '$'],
        )?;
        self.variables.push((name.to_owned(), value.to_owned()));
        Ok(self)
    }

    /// The dialplan (`XML` by default).
    pub fn dialplan(mut self, dialplan: &str) -> Result<Self, CommandError> {
        self.dialplan = bare(dialplan, "originate dialplan")?.into();
        Ok(self)
    }

    /// The context (`default` by default).
    pub fn context(mut self, context: &str) -> Result<Self, CommandError> {
        self.context = bare(context, "originate context")?.into();
        Ok(self)
    }

    /// The API text: `originate {...}<endpoint> <destination> <dialplan> <context>`.
    pub fn api_text(&self) -> String {
        let mut out = String::from("originate ");
        if !self.variables.is_empty() {
            out.push('{');
            for (i, (k, v)) in self.variables.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{k}={v}");
            }
            out.push('}');
        }
        let _ = write!(
            out,
            "{} {} {} {}",
            self.endpoint, self.destination, self.dialplan, self.context
        );
        out
    }

    /// `bgapi originate ...` with the given Job-UUID.
    pub fn bgapi(&self, job_uuid: Option<&str>) -> Result<Command, CommandError> {
        Command::bgapi(&self.api_text(), job_uuid)
    }
}

/// `callcenter_config agent set status|state <agent> '<value>'` (mod_callcenter:
/// `cc_config_api_function` splits with `switch_separate_string(mydata, ' ', argv, ...)`, so
/// the value is single-quoted to keep its blanks, `On Break`, `In a queue call`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallcenterAgentCommand {
    text: String,
}

impl CallcenterAgentCommand {
    /// `callcenter_config agent set status <agent> '<status>'` (`Available`, `On Break`...).
    pub fn set_status(agent: &str, status: &str) -> Result<Self, CommandError> {
        Self::set("status", agent, status)
    }

    /// `callcenter_config agent set state <agent> '<state>'` (`Waiting`, `Idle`...).
    pub fn set_state(agent: &str, state: &str) -> Result<Self, CommandError> {
        Self::set("state", agent, state)
    }

    fn set(what: &'static str, agent: &str, value: &str) -> Result<Self, CommandError> {
        let agent = bare(agent, "callcenter agent")?;
        let parameter = format!("callcenter agent {what}");
        if value.trim().is_empty() {
            return Err(CommandError::Empty { parameter });
        }
        // Inside single quotes: a quote or backslash would end or escape the quoting.
        refuse(value, &parameter, &['\'', '\\', '$'])?;
        if value.starts_with(' ') || value.ends_with(' ') {
            // cleanup_separated_string trims blanks outside quotes only; keep values exact.
            return Err(unsafe_char(&parameter, ' '));
        }
        Ok(Self {
            text: format!("callcenter_config agent set {what} {agent} '{value}'"),
        })
    }

    /// The API text.
    pub fn api_text(&self) -> &str {
        &self.text
    }

    /// As an `api` command (answers `+OK` in an `api/response`).
    pub fn api(&self) -> Result<Command, CommandError> {
        Command::api(&self.text)
    }
}

fn empty(parameter: &str) -> CommandError {
    CommandError::Empty {
        parameter: parameter.into(),
    }
}

fn unsafe_char(parameter: &str, found: char) -> CommandError {
    CommandError::Unsafe {
        parameter: parameter.into(),
        found,
    }
}

/// Refuses control characters (CR and LF above all) and `extra`.
fn refuse(value: &str, parameter: &str, extra: &[char]) -> Result<(), CommandError> {
    match value.chars().find(|c| c.is_control() || extra.contains(c)) {
        Some(bad) => Err(unsafe_char(parameter, bad)),
        None => Ok(()),
    }
}

/// A bare argument of a blank-split command: not empty, not `undef`, no control character,
/// blank, quote, backslash or `$`.
fn bare<'a>(value: &'a str, parameter: &str) -> Result<&'a str, CommandError> {
    if value.is_empty() {
        return Err(empty(parameter));
    }
    refuse(value, parameter, &[' ', '\'', '"', '\\', '$'])?;
    if value.eq_ignore_ascii_case("undef") {
        return Err(CommandError::Reserved {
            parameter: parameter.into(),
            value: value.into(),
            meaning: "a missing argument (`undef`)",
        });
    }
    Ok(value)
}

/// The endpoint: a bare argument that also holds nothing the dial-string parser reads as
/// syntax (`,` and `|` fork or chain legs, `{` `[` `<` open variable blocks).
fn endpoint_arg(value: &str) -> Result<&str, CommandError> {
    let value = bare(value, "originate endpoint")?;
    refuse(
        value,
        "originate endpoint",
        &[',', '|', '{', '}', '[', ']', '<', '>', '^'],
    )?;
    Ok(value)
}

/// An `api`/`bgapi` command text: a non-empty single line.
fn api_command(command: &str, parameter: &str) -> Result<(), CommandError> {
    if command.trim().is_empty() {
        return Err(empty(parameter));
    }
    match command
        .chars()
        .find(|c| *c == '\r' || *c == '\n' || *c == '\0')
    {
        Some(bad) => Err(unsafe_char(parameter, bad)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_unsafe(r: Result<impl std::fmt::Debug, CommandError>, c: char) {
        match r {
            Err(CommandError::Unsafe { found, .. }) => assert_eq!(found, c),
            other => panic!("expected Unsafe({c:?}), got {other:?}"),
        }
    }

    #[test]
    fn plain_commands_on_the_wire() {
        assert_eq!(
            Command::auth("ClueCon").unwrap().to_wire(),
            b"auth ClueCon\n\n"
        );
        assert_eq!(
            Command::event_plain(&["CHANNEL_ANSWER", "CUSTOM", "callcenter::info"])
                .unwrap()
                .to_wire(),
            b"event plain CHANNEL_ANSWER CUSTOM callcenter::info\n\n"
        );
        assert_eq!(
            Command::api("show channels as json").unwrap().to_wire(),
            b"api show channels as json\n\n"
        );
        assert_eq!(
            Command::bgapi("status", None).unwrap().to_wire(),
            b"bgapi status\n\n"
        );
        assert_eq!(
            Command::filter("Event-Name", "CHANNEL_ANSWER")
                .unwrap()
                .to_wire(),
            b"filter Event-Name CHANNEL_ANSWER\n\n"
        );
        assert_eq!(Command::exit().to_wire(), b"exit\n\n");
    }

    #[test]
    fn line_breaks_refused_everywhere() {
        for bad in ['\r', '\n'] {
            let v = format!("a{bad}b");
            is_unsafe(Command::auth(&v), bad);
            is_unsafe(Command::event_plain(&[v.as_str()]), bad);
            is_unsafe(Command::api(&v), bad);
            is_unsafe(Command::bgapi(&v, None), bad);
            is_unsafe(Command::bgapi("status", Some(&v)), bad);
            is_unsafe(Command::filter(&v, "x"), bad);
            is_unsafe(Command::filter("Event-Name", &v), bad);
            is_unsafe(Originate::new(&v, "100"), bad);
            is_unsafe(Originate::new("user/1", &v), bad);
            let o = Originate::new("user/1", "100").unwrap();
            is_unsafe(o.clone().variable("a", &v), bad);
            is_unsafe(o.clone().variable(&v, "1"), bad);
            is_unsafe(o.clone().dialplan(&v), bad);
            is_unsafe(o.clone().context(&v), bad);
            is_unsafe(CallcenterAgentCommand::set_status(&v, "Available"), bad);
            is_unsafe(CallcenterAgentCommand::set_status("1000@default", &v), bad);
            is_unsafe(CallcenterAgentCommand::set_state("1000@default", &v), bad);
        }
    }

    #[test]
    fn argument_and_variable_breakouts_refused() {
        let o = Originate::new("user/1001", "4930123457").unwrap();
        for c in [' ', ',', '{', '}', '\'', '\\', '^', '$', '\t', '\0'] {
            is_unsafe(o.clone().variable("v", &format!("x{c}y")), c);
        }
        for c in ['=', ' ', ',', '{', '}', '\'', '^', ':'] {
            is_unsafe(o.clone().variable(&format!("v{c}w"), "1"), c);
        }
        for c in [
            ' ', '\'', '"', '\\', '$', ',', '|', '{', '}', '[', ']', '<', '>', '^',
        ] {
            is_unsafe(Originate::new(&format!("user/1{c}2"), "100"), c);
        }
        for c in [' ', '\'', '"', '\\', '$'] {
            is_unsafe(Originate::new("user/1", &format!("10{c}0")), c);
            is_unsafe(o.clone().dialplan(&format!("X{c}ML")), c);
            is_unsafe(o.clone().context(&format!("pub{c}lic")), c);
            is_unsafe(Command::event_plain(&[format!("A{c}B")]), c);
            is_unsafe(
                CallcenterAgentCommand::set_state(&format!("10{c}00"), "Waiting"),
                c,
            );
        }
        for c in ['\'', '\\', '$'] {
            is_unsafe(
                CallcenterAgentCommand::set_status("1000", &format!("On{c}Break")),
                c,
            );
        }
        is_unsafe(
            CallcenterAgentCommand::set_status("1000", " Available"),
            ' ',
        );
        is_unsafe(Command::bgapi("status", Some("a b")), ' ');
        is_unsafe(Command::bgapi("status", Some("a:b")), ':');
    }

    #[test]
    fn reserved_and_empty_values_refused() {
        let reserved = |r: Result<Originate, CommandError>| {
            assert!(matches!(r, Err(CommandError::Reserved { .. })), "{r:?}")
        };
        reserved(Originate::new("user/1", "UNDEF"));
        reserved(Originate::new("undef", "100"));
        reserved(Originate::new("user/1", "&park()"));
        reserved(Originate::new("user/1", "1").unwrap().context("undef"));
        assert!(matches!(
            Command::filter("delete", "all"),
            Err(CommandError::Reserved { .. })
        ));
        assert!(matches!(
            Command::api("unload mod_event_socket"),
            Err(CommandError::Reserved { .. })
        ));
        assert!(matches!(
            Originate::new("user/1", "1")
                .unwrap()
                .variable("note", "unload")
                .unwrap()
                .variable("x", "mod_event_socket")
                .unwrap()
                .bgapi(None),
            Err(CommandError::Reserved { .. })
        ));
        let empty = |r: Result<_, CommandError>| {
            let r: Result<(), _> = r.map(|_: Command| ());
            assert!(matches!(r, Err(CommandError::Empty { .. })), "{r:?}")
        };
        empty(Command::auth(""));
        empty(Command::api(" "));
        empty(Command::bgapi("status", Some("")));
        empty(Command::event_plain::<&str>(&[]));
        empty(Command::filter("Event-Name", ""));
        assert!(matches!(
            Originate::new("", "1"),
            Err(CommandError::Empty { .. })
        ));
        assert!(matches!(
            Originate::new("user/1", "1").unwrap().variable("a", ""),
            Err(CommandError::Empty { .. })
        ));
        assert!(matches!(
            CallcenterAgentCommand::set_status("1000", " "),
            Err(CommandError::Empty { .. })
        ));
        // The error names the parameter.
        let e = Originate::new("user/1", "1")
            .unwrap()
            .variable("pbxlink_lead_id", "a,b")
            .unwrap_err();
        assert!(e.to_string().contains("pbxlink_lead_id"), "{e}");
    }

    #[test]
    fn builders_produce_freeswitch_syntax() {
        let o = Originate::new("user/1001", "+4930123457")
            .unwrap()
            .variable("origination_caller_id_number", "+4930555000")
            .unwrap()
            .variable("pbxlink_lead_id", "a1b2=c3")
            .unwrap()
            .context("public")
            .unwrap();
        assert_eq!(
            o.bgapi(Some("0f3c2d1e-aaaa-bbbb-cccc-000000000001"))
                .unwrap()
                .to_wire(),
            b"bgapi originate {origination_caller_id_number=+4930555000,pbxlink_lead_id=a1b2=c3}user/1001 +4930123457 XML public\nJob-UUID: 0f3c2d1e-aaaa-bbbb-cccc-000000000001\n\n"
        );
        assert_eq!(
            Originate::new("sofia/gateway/carrier/4930123457", "1001")
                .unwrap()
                .api_text(),
            "originate sofia/gateway/carrier/4930123457 1001 XML default"
        );
        assert_eq!(
            CallcenterAgentCommand::set_status("1000@default", "Available (On Demand)")
                .unwrap()
                .api()
                .unwrap()
                .to_wire(),
            b"api callcenter_config agent set status 1000@default 'Available (On Demand)'\n\n"
        );
        assert_eq!(
            CallcenterAgentCommand::set_state("1000@default", "Waiting")
                .unwrap()
                .api_text(),
            "callcenter_config agent set state 1000@default 'Waiting'"
        );
    }
}
