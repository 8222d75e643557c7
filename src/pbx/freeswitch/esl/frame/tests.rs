//! Framer tests (filled in the next commit).
