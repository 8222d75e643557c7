//! The line framing both PBX protocols share: the Asterisk Manager Interface and the
//! FreeSWITCH event socket each send blocks of `Name: value` lines ended by an empty line,
//! with CRLF or bare LF line ends and stray empty lines between blocks.
//!
//! [`LineFramer`] is the part of a framer that is the same for both: the read buffer, the
//! resumable search for the empty line that ends a block (with `memchr`, so a block costs a
//! vectorised scan instead of a byte-by-byte loop, and a block that arrives in pieces is not
//! rescanned from its start), and skipping empty lines between blocks. The free functions
//! split a line into its name and value and clip a bad line for an error message. What a
//! block *means* (AMI's `Response: Follows` output, ESL's `Content-Length` body) stays in
//! each protocol's framer.

use memchr::memchr_iter;

use crate::pbx::read_buffer::ReadBuffer;

/// Where a header block ends, relative to the first pending byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockEnd {
    /// Index of the `\n` that ends the block's last line (the block's lines are
    /// `pending()[..lines_end]`, the last without its `\n`).
    pub lines_end: usize,
    /// Index of the first byte after the empty line.
    pub next: usize,
}

/// A connection's read buffer and where the search for the end of the current block stopped.
#[derive(Debug)]
pub struct LineFramer {
    buf: ReadBuffer,
    /// Where the search for the empty line resumes, relative to the first pending byte
    /// (0: at the start of a block, empty lines before it not skipped yet).
    scan: usize,
}

impl LineFramer {
    /// An empty framer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: ReadBuffer::with_capacity(capacity),
            scan: 0,
        }
    }

    /// Appends bytes read from the socket.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend(data);
    }

    /// Bytes buffered and not yet consumed.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The bytes not yet consumed.
    pub fn pending(&self) -> &[u8] {
        self.buf.pending()
    }

    /// Consumes the first `n` pending bytes (a whole block): the next search starts after.
    pub fn consume(&mut self, n: usize) {
        self.buf.consume(n);
        self.scan = 0;
    }

    /// Skips the empty lines (`\n`, `\r\n`) before a block. False when the buffer holds
    /// nothing else yet (or a lone `\r` that may become an empty line).
    pub fn skip_empty_lines(&mut self) -> bool {
        if self.scan > 0 {
            return true;
        }
        loop {
            let data = self.buf.pending();
            match data.first() {
                Some(b'\n') => self.buf.consume(1),
                Some(b'\r') if data.get(1) == Some(&b'\n') => self.buf.consume(2),
                Some(b'\r') if data.len() == 1 => return false,
                Some(_) => return true,
                None => return false,
            }
        }
    }

    /// The end of the block at the front of the buffer (call [`LineFramer::skip_empty_lines`]
    /// first), or None when its empty line has not arrived yet; the next call then resumes
    /// where this one stopped.
    pub fn find_block_end(&mut self) -> Option<BlockEnd> {
        let data = self.buf.pending();
        match block_end(data, self.scan) {
            Some(end) => Some(end),
            None => {
                // Resume a little before the end: the empty line may straddle reads.
                self.scan = data.len().saturating_sub(2).max(1);
                None
            }
        }
    }
}

/// Finds the empty line that ends a block, searching from `from`: the first `\n` followed by
/// `\n` or `\r\n`.
pub fn block_end(data: &[u8], from: usize) -> Option<BlockEnd> {
    let from = from.min(data.len());
    for nl in memchr_iter(b'\n', &data[from..]) {
        let at = from + nl;
        match data.get(at + 1) {
            Some(b'\n') => {
                return Some(BlockEnd {
                    lines_end: at,
                    next: at + 2,
                });
            }
            Some(b'\r') if data.get(at + 2) == Some(&b'\n') => {
                return Some(BlockEnd {
                    lines_end: at,
                    next: at + 3,
                });
            }
            _ => {}
        }
    }
    None
}

/// The lines of a block, each without its line end (`\n` or `\r\n`), in order.
pub fn lines(block: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(block);
    std::iter::from_fn(move || {
        let b = rest?;
        match memchr::memchr(b'\n', b) {
            Some(nl) => {
                rest = Some(&b[nl + 1..]);
                Some(strip_cr(&b[..nl]))
            }
            None => {
                rest = None;
                Some(strip_cr(b))
            }
        }
    })
}

/// The line without a trailing `\r`.
pub fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// At most 80 characters of `bytes` (lossy UTF-8), for an error message.
pub fn clip(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).chars().take(80).collect()
}

/// `Name: value` → (name, value): the name trimmed, non-empty and without control
/// characters, the value without the blanks after the colon (Asterisk and FreeSWITCH both
/// skip them).
pub fn split_header(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = memchr::memchr(b':', line)?;
    let name = line[..colon].trim_ascii();
    if name.is_empty() || name.iter().any(|b| b.is_ascii_control()) {
        return None;
    }
    let value = &line[colon + 1..];
    let skip = value
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    Some((name, &value[skip..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_end_takes_crlf_and_bare_lf() {
        assert_eq!(
            block_end(b"A: 1\r\nB: 2\r\n\r\nC", 0),
            Some(BlockEnd {
                lines_end: 11,
                next: 14
            })
        );
        assert_eq!(
            block_end(b"A: 1\nB: 2\n\nC", 0),
            Some(BlockEnd {
                lines_end: 9,
                next: 11
            })
        );
        assert_eq!(block_end(b"A: 1\r\nB: 2\r\n\r", 0), None);
        assert_eq!(block_end(b"A: 1\r\n", 99), None);
    }

    #[test]
    fn a_block_arriving_in_pieces_is_found_wherever_it_is_cut() {
        let whole = b"\r\n\nA: 1\r\nB: 2\n\r\nrest".as_slice();
        for cut in 0..=whole.len() {
            let mut f = LineFramer::with_capacity(8);
            f.extend(&whole[..cut]);
            let mut found = f.skip_empty_lines().then(|| f.find_block_end()).flatten();
            let mut rest_added = false;
            if found.is_none() {
                f.extend(&whole[cut..]);
                rest_added = true;
                assert!(f.skip_empty_lines());
                found = f.find_block_end();
            }
            let end = found.expect("the block is complete");
            assert_eq!(
                &f.pending()[..end.lines_end],
                b"A: 1\r\nB: 2",
                "cut at {cut}"
            );
            f.consume(end.next);
            if !rest_added {
                f.extend(&whole[cut..]);
            }
            assert_eq!(f.pending(), b"rest", "cut at {cut}");
        }
    }

    #[test]
    fn lines_and_headers() {
        let got: Vec<&[u8]> = lines(b"A: 1\r\nB:2\nC").collect();
        assert_eq!(got, [&b"A: 1"[..], b"B:2", b"C"]);
        assert_eq!(
            split_header(b" Key :  \tv: w "),
            Some((&b"Key"[..], &b"v: w "[..]))
        );
        assert_eq!(split_header(b": v"), None);
        assert_eq!(split_header(b"no colon"), None);
        assert_eq!(split_header(b"a\x01: v"), None);
        assert_eq!(clip(&[b'x'; 100]).len(), 80);
    }
}
