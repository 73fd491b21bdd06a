//! End-to-end golden suites (one test binary): the example project built by Kiln, checked
//! product by product against the same SQL run directly by DataFusion.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod example;
