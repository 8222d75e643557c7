//! Tails an append-only log file (a CDR file) the way log shippers do. (being written)
