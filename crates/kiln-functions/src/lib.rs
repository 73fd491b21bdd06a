//! Kiln's function registry.
//!
//! This crate will hold `FunctionSpec`, the builtin `kiln_*` functions (PII hashing,
//! stable ids, window helpers), their installer into a SessionContext and the function
//! fingerprint that enters the build identity. It exists now so the workspace has its
//! final shape; the registry arrives with the functions issue.
//!
//! Architecture invariant: depends on DataFusion's function traits, kiln-explode and
//! kiln-contracts only; never on the data or control planes.
