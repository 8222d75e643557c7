//! Tests of grouping and classification on rows real Asterisk 22 wrote.
