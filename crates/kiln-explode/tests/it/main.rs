//! kiln-explode against a naive reference implementation, plus hand-computed cases.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cases;
mod props;
