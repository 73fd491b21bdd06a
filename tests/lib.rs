//! End-to-end golden suites live in `golden/`; this library is empty on purpose.
