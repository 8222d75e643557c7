//! The read buffer every PBX connection's framer keeps (AMI, the event socket).
//!
//! Bytes read from the socket are appended at the back; the framer looks at what is pending
//! from the front and consumes whole frames. Consumed bytes are dropped lazily, when they make
//! up half the buffer (or all of it), so a stream of small frames costs one `memmove` now and
//! then instead of one per frame, and the buffer never holds more than the pending bytes twice.

/// Bytes read and not yet consumed as frames.
#[derive(Debug)]
pub struct ReadBuffer {
    buf: Vec<u8>,
    /// First byte not yet consumed.
    start: usize,
}

impl ReadBuffer {
    /// An empty buffer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
            start: 0,
        }
    }

    /// Appends bytes read from the socket.
    pub fn extend(&mut self, data: &[u8]) {
        if self.start > 0 && (self.start == self.buf.len() || self.start >= self.buf.len() / 2) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The bytes not yet consumed.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// How many bytes are pending.
    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Marks the first `n` pending bytes as consumed (at most what is pending).
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumed_bytes_are_dropped_once_they_are_half_the_buffer() {
        let mut b = ReadBuffer::with_capacity(16);
        b.extend(b"abcdef");
        b.consume(2);
        assert_eq!(b.pending(), b"cdef");
        b.extend(b"gh");
        // 2 of 6 consumed: not compacted yet, still correct.
        assert_eq!(b.pending(), b"cdefgh");
        b.consume(4);
        b.extend(b"ij");
        assert_eq!(b.pending(), b"ghij");
        assert_eq!(b.buf.len(), 4, "compacted");
        b.consume(10);
        assert!(b.is_empty());
    }
}
