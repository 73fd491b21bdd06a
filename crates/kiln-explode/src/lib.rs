//! Nested-explode kernels on arrow-rs alone.
//!
//! This crate will hold the list / large list / fixed-size list / map / zipped explode
//! kernels of the brief's explode contract (0-based `idx`, keep-empty, parent alignment).
//! It exists now so the workspace has its final shape; the kernels arrive with the
//! explode issue. Until then products use DataFusion's `unnest` (see the example's
//! `order_items` product, which derives the offset with `range`).
//!
//! Architecture invariant: depends on arrow only; no DataFusion, no SQL.
