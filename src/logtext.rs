//! Text from a PBX, a file or the network, made safe to put in a log line.
//!
//! Every value that reaches a log line from outside the process (a CDR line, an AMI or ESL
//! header, an HTTP parameter, a CRM answer) goes through [`excerpt`] or [`Escaped`]: it is cut
//! to a bound and its control characters are escaped, so a hostile peer can neither forge log
//! lines (CR/LF, ANSI escapes) nor pour a whole file (a CDR path pointing at `/etc/shadow`) into
//! the journal.

use std::fmt;

/// How many bytes of a CDR line (or any record from a PBX) a log line shows.
pub const EXCERPT_BYTES: usize = 64;

/// At most `max` bytes of `bytes`, control characters and invalid UTF-8 escaped (`\n`, `\x1b`,
/// `\u{202e}`), with `…(N bytes)` appended when it was cut.
pub fn excerpt(bytes: &[u8], max: usize) -> String {
    let cut = bytes.len() > max;
    let shown = &bytes[..bytes.len().min(max)];
    let mut out = String::with_capacity(shown.len() + 16);
    for chunk in shown.utf8_chunks() {
        push_escaped(&mut out, chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    if cut {
        out.push_str(&format!("…({} bytes)", bytes.len()));
    }
    out
}

/// A string shown in a log line with its control characters escaped and cut to
/// [`Escaped::MAX_CHARS`] characters; `Display` does the work, so a disabled log level costs
/// nothing.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl Escaped<'_> {
    /// The most characters of a value a log line shows.
    pub const MAX_CHARS: usize = 256;
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (shown, c) in self.0.chars().enumerate() {
            if shown == Self::MAX_CHARS {
                return write!(f, "…({} bytes)", self.0.len());
            }
            write_char(f, c)?;
        }
        Ok(())
    }
}

fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        // Writing into a String cannot fail.
        let _ = write_char(out, c);
    }
}

fn write_char(out: &mut impl fmt::Write, c: char) -> fmt::Result {
    match c {
        '\n' => out.write_str("\\n"),
        '\r' => out.write_str("\\r"),
        '\t' => out.write_str("\\t"),
        '\\' => out.write_str("\\\\"),
        c if (c as u32) < 0x20 || c == '\x7f' => write!(out, "\\x{:02x}", c as u32),
        // C1 controls and the bidirectional overrides that can reorder what a terminal shows.
        c if ('\u{80}'..='\u{9f}').contains(&c)
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c) =>
        {
            write!(out, "\\u{{{:x}}}", c as u32)
        }
        c => out.write_char(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(excerpt(b"a\r\nb\x1b[31m\x00", 64), "a\\r\\nb\\x1b[31m\\x00");
        assert_eq!(Escaped("x\ny\u{202e}z").to_string(), "x\\ny\\u{202e}z");
    }

    #[test]
    fn long_input_is_cut_and_says_how_long_it_was() {
        let line = "root:$6$secret:19000:0:99999:7:::".repeat(10);
        let shown = excerpt(line.as_bytes(), EXCERPT_BYTES);
        assert!(shown.starts_with("root:$6$secret"));
        assert!(shown.ends_with(&format!("…({} bytes)", line.len())));
        assert!(shown.len() < EXCERPT_BYTES + 20);
        let long = "é".repeat(1000);
        let shown = Escaped(&long).to_string();
        assert_eq!(
            shown.chars().filter(|&c| c == 'é').count(),
            Escaped::MAX_CHARS
        );
    }

    #[test]
    fn invalid_utf8_and_a_cut_inside_a_character_are_shown_as_bytes() {
        assert_eq!(excerpt(b"ok\xff\xfe", 64), "ok\\xff\\xfe");
        // "é" is two bytes; cutting after the first shows the lone byte escaped.
        assert_eq!(excerpt("aé".as_bytes(), 2), "a\\xc3…(3 bytes)");
    }
}
