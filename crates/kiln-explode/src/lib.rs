//! Nested-explode kernels on arrow-rs alone.
//!
//! Exploding turns each element of a list (or entry of a map) into its own row, aligned
//! with its parent row. Kiln's contract (brief §4):
//! - output order is (parent row, idx); `idx` is 0-based (pass `idx_base = 1` for SQL's
//!   WITH ORDINALITY);
//! - with `keep_empty`, an empty or NULL list yields exactly one row with a NULL value and
//!   a NULL idx (LEFT JOIN UNNEST ... ON TRUE); without it such parents yield no rows;
//! - NULL elements are kept as NULL values with their idx;
//! - maps explode to (key, value); zipped explode pads shorter lists with NULL.
//!
//! Main entry points: [`explode`] (one list-like array -> [`Exploded`]), [`explode_zipped`]
//! (several lists of the same rows), [`explode_batch`] (a `RecordBatch` column, carrying
//! the parent columns and honouring a target output batch size), [`unpack_struct`].
//!
//! Complexity: O(n + m) for n parent rows and m output rows. Parent indices and idx are
//! built from the offsets buffer with bulk fills (one `repeat_n` / range extend per parent,
//! no per-element branching). When no parent needs padding (no keep-empty rows, and every
//! NULL parent has an empty offset range) the values are a zero-copy slice of the child
//! array; otherwise one `take` with nullable indices builds them.
//!
//! Sliced inputs (non-zero offsets into the child) are handled: offsets are read as they
//! are, relative to the first one.
//!
//! Architecture invariant: depends on arrow only: no DataFusion, no SQL. The execution
//! operator (kiln-data) and the SQL surface (kiln-control) are built on these kernels.
//!
//! Exploding a list column, keeping empty and NULL lists as one row:
//!
//! ```
//! use arrow::array::{Array, AsArray, ListArray};
//! use arrow::datatypes::Int32Type;
//! use kiln_explode::{ExplodeOptions, explode};
//!
//! let lists = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
//!     Some(vec![Some(10), Some(20)]),
//!     Some(vec![]),
//!     None,
//!     Some(vec![None, Some(30)]),
//! ]);
//! let out = explode(&lists, &ExplodeOptions { keep_empty: true, ..Default::default() })?;
//! assert_eq!(out.parents.values(), &[0, 0, 1, 2, 3, 3]);
//! let idx: Vec<Option<i64>> = out.idx.as_ref().map(|i| i.iter().collect()).unwrap_or_default();
//! assert_eq!(idx, [Some(0), Some(1), None, None, Some(0), Some(1)]);
//! let values = out.values.as_primitive::<Int32Type>();
//! assert_eq!(values.iter().collect::<Vec<_>>(), [Some(10), Some(20), None, None, None, Some(30)]);
//! # Ok::<(), kiln_explode::ExplodeError>(())
//! ```

mod kernels;

pub use kernels::{
    ExplodeError, ExplodeOptions, Exploded, explode, explode_batch, explode_columns, explode_zipped, repeat,
    unpack_struct,
};
