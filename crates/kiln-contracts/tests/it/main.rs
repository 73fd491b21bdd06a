//! Property tests for kiln-contracts: fingerprints, unification, SQL type round trips.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod props;
