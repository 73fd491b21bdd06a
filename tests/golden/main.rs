//! End-to-end golden suites (one test binary): the example project built by Kiln, checked
//! product by product against the same SQL run directly by DataFusion.

mod example;
