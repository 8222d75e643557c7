//! Action encoding tests: the `Variable:` escaping read back by a port of the parser Asterisk
//! runs on it, and the bounds Asterisk's manager puts on a line and on a message.

use proptest::prelude::*;

use super::*;

/// `__ast_app_separate_args(buf, ',', 1, ...)` from Asterisk's `main/app.c` (what
/// `AST_STANDARD_APP_ARGS` does), ported byte for byte: `(`/`)` and `[`/`]` nest, `"`
/// toggles quoting and is removed, `\` is removed and the next byte taken literally, a `,`
/// outside all of them ends an argument.
fn asterisk_separate_args(buf: &[u8]) -> Vec<Vec<u8>> {
    let mut args = Vec::new();
    let mut current = Vec::new();
    let (mut paren, mut quote, mut bracket) = (0u32, false, 0u32);
    let mut i = 0;
    let mut ended_on_delim = false;
    while i < buf.len() {
        let c = buf[i];
        ended_on_delim = false;
        match c {
            b'(' => {
                paren += 1;
                current.push(c);
            }
            b')' => {
                paren = paren.saturating_sub(1);
                current.push(c);
            }
            b'[' => {
                bracket += 1;
                current.push(c);
            }
            b']' => {
                bracket = bracket.saturating_sub(1);
                current.push(c);
            }
            b'"' => quote = !quote,
            b'\\' => {
                // The backslash goes; the next byte is kept as it is (and not parsed).
                if let Some(&next) = buf.get(i + 1) {
                    current.push(next);
                    i += 1;
                }
            }
            b',' if paren == 0 && !quote && bracket == 0 => {
                args.push(std::mem::take(&mut current));
                ended_on_delim = true;
            }
            _ => current.push(c),
        }
        i += 1;
    }
    if !current.is_empty() || ended_on_delim {
        args.push(current);
    }
    args
}

/// `man_do_variable_value` from `main/manager.c`: the variables one `Variable:` header sets.
fn asterisk_variables(header_value: &str) -> Vec<(String, String)> {
    let value = header_value.trim_start_matches([' ', '\t']);
    asterisk_separate_args(value.as_bytes())
        .into_iter()
        .filter_map(|item| {
            let item = String::from_utf8_lossy(&item).into_owned();
            let (name, value) = item.split_once('=')?;
            (!name.is_empty()).then(|| (name.to_owned(), value.to_owned()))
        })
        .collect()
}

/// What Asterisk sets from every `Variable:` header of the encoded action.
fn set_by(action: &Action) -> Vec<(String, String)> {
    let wire = String::from_utf8(action.encode("1").expect("encodes")).expect("utf-8");
    wire.split("\r\n")
        .filter_map(|line| line.strip_prefix("Variable:"))
        .flat_map(asterisk_variables)
        .collect()
}

const HOSTILE_LEAD: &str = "L1,CALLERID(num)=+18005551234,CDR(accountcode)=evil";

#[test]
fn the_port_splits_like_asterisk() {
    // The finding: one header with the lead id as it is sets three variables.
    assert_eq!(
        asterisk_variables(&format!("LEADID={HOSTILE_LEAD}")),
        [
            ("LEADID".to_owned(), "L1".to_owned()),
            ("CALLERID(num)".to_owned(), "+18005551234".to_owned()),
            ("CDR(accountcode)".to_owned(), "evil".to_owned()),
        ]
    );
    assert_eq!(
        asterisk_variables(r#" A="x,y",B=\,z"#),
        [
            ("A".to_owned(), "x,y".to_owned()),
            ("B".to_owned(), ",z".to_owned())
        ]
    );
}

#[test]
fn a_comma_in_a_value_sets_no_other_variable() {
    let action = Action::new("Originate")
        .variable("LEADID", HOSTILE_LEAD)
        .and_then(|a| a.variable("CDR(leadid)", HOSTILE_LEAD))
        .expect("escaped");
    assert_eq!(
        action.headers(),
        [
            (
                "Variable".to_owned(),
                r"LEADID=L1\,CALLERID\(num\)=+18005551234\,CDR\(accountcode\)=evil".to_owned()
            ),
            (
                "Variable".to_owned(),
                r"CDR(leadid)=L1\,CALLERID\(num\)=+18005551234\,CDR\(accountcode\)=evil".to_owned()
            ),
        ]
    );
    assert_eq!(
        set_by(&action),
        [
            ("LEADID".to_owned(), HOSTILE_LEAD.to_owned()),
            ("CDR(leadid)".to_owned(), HOSTILE_LEAD.to_owned()),
        ]
    );
}

#[test]
fn variable_names_that_would_move_the_split_are_refused() {
    for name in [
        "", "A=B", "A,B", "CDR(a,b)", "CDR(a)x", "A B", "A\"", "A\\", "(x)", "F(a=b)",
    ] {
        assert!(
            matches!(
                Action::new("Originate").variable(name, "v"),
                Err(AmiError::InvalidVariable { .. })
            ),
            "{name:?}"
        );
    }
    for name in ["LEADID", "__LEADID", "CDR(leadid)", "HASH(a-b)"] {
        assert!(
            Action::new("Originate").variable(name, "v").is_ok(),
            "{name}"
        );
    }
}

#[test]
fn nul_long_lines_and_too_many_headers_are_refused() {
    assert!(matches!(
        Action::new("Originate").header("Exten", "100\0;evil"),
        Err(AmiError::HeaderInjection { .. })
    ));
    assert!(matches!(
        Action::new("Originate").variable("LEADID", &"x".repeat(12 * 1024)),
        Err(AmiError::LineTooLong { len, limit: MAX_LINE_BYTES, .. }) if len > 12 * 1024
    ));
    // Exactly at the bound: "Variable: " + "LEADID=" + value + CRLF.
    let fits = "x".repeat(MAX_LINE_BYTES - "Variable: LEADID=\r\n".len());
    assert!(Action::new("Originate").variable("LEADID", &fits).is_ok());
    let longer = format!("{fits}x");
    assert!(
        Action::new("Originate")
            .variable("LEADID", &longer)
            .is_err()
    );
    let mut action = Action::new("Originate");
    for i in 0..MAX_HEADERS {
        action = action
            .header(format!("X{i}"), "1")
            .expect("within the bound");
    }
    assert!(matches!(
        action.header("One", "more"),
        Err(AmiError::TooManyHeaders { limit: MAX_HEADERS })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever the value (quotes, backslashes, commas, brackets, `=`, any Unicode), Asterisk
    /// reads back exactly one variable, with exactly that name and value.
    #[test]
    fn any_value_sets_exactly_that_variable(
        value in r#"[a-zA-Z0-9,="\\()\[\] \t|;:${}_.+*#@/&'<>-]{0,200}|\PC{0,100}"#,
        name in "(__)?[A-Z][A-Z0-9_]{0,20}|CDR\\([a-z]{1,10}\\)",
    ) {
        let action = Action::new("Originate").variable(&name, &value).expect("escapable");
        prop_assert_eq!(set_by(&action), vec![(name, value)]);
    }
}
