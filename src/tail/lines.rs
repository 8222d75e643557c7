//! Splitting a buffer into lines, and keeping the checksum window.

use super::WINDOW_MAX;

/// What [`split_lines`] found in a buffer.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Split {
    /// Bytes at the start of the buffer that are consumed: complete lines and NUL bytes at the
    /// start of the trailing partial line.
    pub consumed: usize,
    /// The unterminated rest (`data[consumed..]`) is already too long to be a valid line.
    pub oversized_partial: bool,
    /// NUL bytes removed from the consumed bytes.
    pub nul_bytes: u64,
    /// Lines dropped because only NUL bytes were in them.
    pub nul_lines: u64,
    /// Skipped oversized lines: (offset in the buffer, length without the "\n").
    pub too_long: Vec<(usize, usize)>,
}

/// Appends to `out` the complete lines of `data`, without "\n" / "\r\n", NUL bytes removed,
/// dropping empty lines and lines longer than `max_line`; and to `starts` where each of them
/// starts in `data`.
pub(super) fn split_lines(
    data: &[u8],
    max_line: usize,
    out: &mut Vec<Vec<u8>>,
    starts: &mut Vec<u64>,
) -> Split {
    let mut s = Split::default();
    let mut pos = 0;
    loop {
        // NUL runs (holes after a crash) before a line are consumed even if the line is partial.
        let nuls = data[pos..].iter().take_while(|&&b| b == 0).count();
        pos += nuls;
        s.nul_bytes += nuls as u64;
        let Some(rel) = data[pos..].iter().position(|&b| b == b'\n') else {
            s.consumed = pos;
            // A valid line is at most `max_line` bytes plus a "\r" that may precede its "\n".
            s.oversized_partial = data.len() - pos > max_line + 1;
            return s;
        };
        let nl = pos + rel;
        let mut line = &data[pos..nl];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        if line.len() > max_line {
            s.too_long.push((pos, line.len()));
        } else if line.contains(&0) {
            let kept: Vec<u8> = line.iter().copied().filter(|&b| b != 0).collect();
            s.nul_bytes += (line.len() - kept.len()) as u64;
            if kept.is_empty() {
                s.nul_lines += 1;
            } else {
                out.push(kept);
                starts.push(pos as u64);
            }
        } else if !line.is_empty() {
            out.push(line.to_vec());
            starts.push(pos as u64);
        } else if nuls > 0 {
            s.nul_lines += 1;
        }
        pos = nl + 1;
    }
}

/// Appends `bytes` to `window`, keeping only its last [`WINDOW_MAX`] bytes.
pub(super) fn push_window(window: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.len() >= WINDOW_MAX {
        window.clear();
        window.extend_from_slice(&bytes[bytes.len() - WINDOW_MAX..]);
        return;
    }
    let keep = WINDOW_MAX - bytes.len();
    if window.len() > keep {
        window.drain(..window.len() - keep);
    }
    window.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(data: &[u8], max: usize) -> (Vec<Vec<u8>>, Split) {
        let (mut out, mut starts) = (Vec::new(), Vec::new());
        let s = split_lines(data, max, &mut out, &mut starts);
        assert_eq!(out.len(), starts.len());
        for (line, &at) in out.iter().zip(&starts) {
            assert!(
                data[at as usize..].starts_with(&line[..1]),
                "a line starts where it says"
            );
        }
        (out, s)
    }

    #[test]
    fn splits_complete_lines_and_keeps_partial() {
        let (lines, s) = split(b"a,1\r\nb,2\n\nc,3", 100);
        assert_eq!(lines, vec![b"a,1".to_vec(), b"b,2".to_vec()]);
        assert_eq!(s.consumed, 10);
        assert!(!s.oversized_partial);
    }

    #[test]
    fn nul_bytes_are_stripped_and_counted() {
        let (lines, s) = split(b"a\n\0\0\0\nb\0c\n\0\0d\n\0\0", 100);
        assert_eq!(lines, vec![b"a".to_vec(), b"bc".to_vec(), b"d".to_vec()]);
        assert_eq!(s.nul_bytes, 8);
        assert_eq!(s.nul_lines, 1);
        assert_eq!(s.consumed, 16, "trailing NUL run is consumed");
    }

    #[test]
    fn too_long_lines_are_reported() {
        let (lines, s) = split(b"ok\n0123456789\nok2\n01234567", 5);
        assert_eq!(lines, vec![b"ok".to_vec(), b"ok2".to_vec()]);
        assert_eq!(s.too_long, vec![(3, 10)]);
        assert!(s.oversized_partial);
        assert_eq!(s.consumed, 18);
        // Exactly max_line bytes plus "\r" is still a possible line.
        let (_, s) = split(b"12345\r", 5);
        assert!(!s.oversized_partial);
    }

    #[test]
    fn window_keeps_last_bytes() {
        let mut w = Vec::new();
        push_window(&mut w, b"abc");
        push_window(&mut w, &vec![b'x'; WINDOW_MAX - 2]);
        assert_eq!(w.len(), WINDOW_MAX);
        assert_eq!(&w[..2], b"bc");
        push_window(&mut w, &vec![b'y'; WINDOW_MAX + 5]);
        assert_eq!(w, vec![b'y'; WINDOW_MAX]);
    }
}
