//! Compatibility of an actual schema with a contract.
//!
//! [`check`] walks both schemas and returns every difference with a path: top-level columns
//! by name, struct children as `a.b`, list elements as `a[]`, map keys/values as
//! `a{key}` / `a{value}`. Under [`EvolutionPolicy::Strict`] every difference is a
//! [`Violation`]; under [`EvolutionPolicy::Evolve`] added nullable columns and the safe
//! widenings of [`is_safe_widening`] are [`Evolution`]s instead.
//!
//! Nullability: an actual column that *may* hold NULL where the contract promises NOT NULL
//! cannot be proven wrong from a plan's schema alone (DataFusion marks most computed
//! expressions nullable). [`check`] lists such columns in `deferred_not_null`; the writer
//! enforces them on the data (null count must be 0), which is the write-time gate.

use std::fmt;

use arrow::datatypes::{DataType, Field, Schema};
use serde::Serialize;

use crate::contract::EvolutionPolicy;

/// One broken promise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Violation {
    Missing { path: String },
    Unexpected { path: String, found: String },
    TypeMismatch { path: String, expected: String, found: String },
    Nullable { path: String },
    Order { expected: Vec<String>, found: Vec<String> },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Missing { path } => write!(f, "{path}: missing column"),
            Violation::Unexpected { path, found } => write!(f, "{path}: unexpected column of type {found}"),
            Violation::TypeMismatch { path, expected, found } => {
                write!(f, "{path}: expected {expected}, found {found}")
            }
            Violation::Nullable { path } => write!(f, "{path}: nullable where NOT NULL was promised"),
            Violation::Order { expected, found } => {
                write!(f, "column order changed: expected ({}), found ({})", expected.join(", "), found.join(", "))
            }
        }
    }
}

/// An accepted difference under the evolve policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Evolution {
    AddedColumn { path: String, data_type: String },
    Widened { path: String, from: String, to: String },
}

/// The result of [`check`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Compatibility {
    pub violations: Vec<Violation>,
    pub evolutions: Vec<Evolution>,
    /// Columns promised NOT NULL whose planned type is nullable: checked on the data.
    pub deferred_not_null: Vec<String>,
}

impl Compatibility {
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Options for [`check`].
#[derive(Debug, Clone, Copy)]
pub struct CheckOptions {
    pub policy: EvolutionPolicy,
    /// When true (schemas read back from data files), nullable-where-NOT-NULL is a violation;
    /// when false (planned schemas), it is deferred to the data.
    pub nullability_is_proven: bool,
}

/// Checks `actual` against the contract schema `expected`; returns every difference.
pub fn check(actual: &Schema, expected: &Schema, options: CheckOptions) -> Compatibility {
    let mut out = Compatibility::default();
    let evolve = options.policy == EvolutionPolicy::Evolve;
    for exp in expected.fields() {
        match actual.field_with_name(exp.name()) {
            Ok(act) => field(act, exp, exp.name(), evolve, options, &mut out),
            Err(_) => out.violations.push(Violation::Missing { path: exp.name().clone() }),
        }
    }
    for act in actual.fields() {
        if expected.field_with_name(act.name()).is_err() {
            let found = act.data_type().to_string();
            if evolve && act.is_nullable() {
                out.evolutions.push(Evolution::AddedColumn { path: act.name().clone(), data_type: found });
            } else {
                out.violations.push(Violation::Unexpected { path: act.name().clone(), found });
            }
        }
    }
    if !evolve {
        let common = |a: &Schema, b: &Schema| -> Vec<String> {
            a.fields().iter().map(|f| f.name().clone()).filter(|n| b.field_with_name(n).is_ok()).collect()
        };
        let exp_order = common(expected, actual);
        let act_order = common(actual, expected);
        if exp_order != act_order {
            out.violations.push(Violation::Order { expected: exp_order, found: act_order });
        }
    }
    out
}

fn field(act: &Field, exp: &Field, path: &str, evolve: bool, o: CheckOptions, out: &mut Compatibility) {
    if act.is_nullable() && !exp.is_nullable() {
        if o.nullability_is_proven {
            out.violations.push(Violation::Nullable { path: path.to_owned() });
        } else {
            out.deferred_not_null.push(path.to_owned());
        }
    }
    data_type(act.data_type(), exp.data_type(), path, evolve, o, out);
}

fn data_type(act: &DataType, exp: &DataType, path: &str, evolve: bool, o: CheckOptions, out: &mut Compatibility) {
    use DataType as D;
    match (act, exp) {
        (D::List(a) | D::LargeList(a), D::List(e) | D::LargeList(e)) => {
            field(a, e, &format!("{path}[]"), evolve, o, out);
        }
        (D::FixedSizeList(a, n), D::FixedSizeList(e, m)) if n == m => {
            field(a, e, &format!("{path}[]"), evolve, o, out);
        }
        (D::Struct(a), D::Struct(e)) => {
            for ef in e.iter() {
                let child = format!("{path}.{}", ef.name());
                match a.iter().find(|f| f.name() == ef.name()) {
                    Some(af) => field(af, ef, &child, evolve, o, out),
                    None => out.violations.push(Violation::Missing { path: child }),
                }
            }
            for af in a.iter().filter(|af| !e.iter().any(|ef| ef.name() == af.name())) {
                let child = format!("{path}.{}", af.name());
                let found = af.data_type().to_string();
                if evolve && af.is_nullable() {
                    out.evolutions.push(Evolution::AddedColumn { path: child, data_type: found });
                } else {
                    out.violations.push(Violation::Unexpected { path: child, found });
                }
            }
        }
        (D::Map(a, _), D::Map(e, _)) => match (a.data_type(), e.data_type()) {
            (D::Struct(ak), D::Struct(ek)) if ak.len() == 2 && ek.len() == 2 => {
                field(&ak[0], &ek[0], &format!("{path}{{key}}"), evolve, o, out);
                field(&ak[1], &ek[1], &format!("{path}{{value}}"), evolve, o, out);
            }
            _ => mismatch(act, exp, path, out),
        },
        _ if same_logical_type(act, exp) => {}
        _ if evolve && is_safe_widening(exp, act) => out.evolutions.push(Evolution::Widened {
            path: path.to_owned(),
            from: exp.to_string(),
            to: act.to_string(),
        }),
        _ => mismatch(act, exp, path, out),
    }
}

fn mismatch(act: &DataType, exp: &DataType, path: &str, out: &mut Compatibility) {
    out.violations.push(Violation::TypeMismatch {
        path: path.to_owned(),
        expected: exp.to_string(),
        found: act.to_string(),
    });
}

/// Equal up to the encoding families (utf8, binary, dictionary) of the types module.
pub fn same_logical_type(a: &DataType, b: &DataType) -> bool {
    use DataType as D;
    let utf8 = |t: &DataType| matches!(t, D::Utf8 | D::LargeUtf8 | D::Utf8View);
    let bin = |t: &DataType| matches!(t, D::Binary | D::LargeBinary | D::BinaryView);
    match (a, b) {
        (D::Dictionary(_, v), other) | (other, D::Dictionary(_, v)) => same_logical_type(v, other),
        _ if utf8(a) && utf8(b) => true,
        _ if bin(a) && bin(b) => true,
        // The name of a list's element field (`item`, or `element` as PyArrow, DuckDB and
        // Spark write it) and of a map's entries are encoding, not schema.
        (D::List(x), D::List(y)) | (D::LargeList(x), D::LargeList(y)) => {
            same_logical_type(x.data_type(), y.data_type())
        }
        (D::FixedSizeList(x, n), D::FixedSizeList(y, m)) => n == m && same_logical_type(x.data_type(), y.data_type()),
        (D::Map(x, sx), D::Map(y, sy)) => sx == sy && same_entries(x.data_type(), y.data_type()),
        (D::Struct(x), D::Struct(y)) => {
            x.len() == y.len()
                && x.iter().zip(y.iter()).all(|(f, g)| {
                    f.name() == g.name()
                        && f.is_nullable() == g.is_nullable()
                        && same_logical_type(f.data_type(), g.data_type())
                })
        }
        _ => a == b,
    }
}

/// Map entries: the key and value types, whatever the entry fields are called.
fn same_entries(a: &DataType, b: &DataType) -> bool {
    match (a, b) {
        (DataType::Struct(x), DataType::Struct(y)) if x.len() == 2 && y.len() == 2 => {
            x.iter().zip(y.iter()).all(|(f, g)| same_logical_type(f.data_type(), g.data_type()))
        }
        _ => a == b,
    }
}

/// The widenings the evolve policy accepts (docs/contracts.md): a value of `from` always
/// fits `to` without loss.
/// - signed integers to wider signed integers; unsigned to wider unsigned, and unsigned to
///   a strictly wider signed integer;
/// - Float32 to Float64; any integer of 32 bits or fewer to Float64;
/// - Decimal(p, s) to Decimal(p', s') with s' >= s and p' - s' >= p - s;
/// - Date32 to Timestamp (any unit, no zone).
pub fn is_safe_widening(from: &DataType, to: &DataType) -> bool {
    use DataType as D;
    let signed = |t: &DataType| match t {
        D::Int8 => Some(8),
        D::Int16 => Some(16),
        D::Int32 => Some(32),
        D::Int64 => Some(64),
        _ => None,
    };
    let unsigned = |t: &DataType| match t {
        D::UInt8 => Some(8),
        D::UInt16 => Some(16),
        D::UInt32 => Some(32),
        D::UInt64 => Some(64),
        _ => None,
    };
    let decimal = |t: &DataType| match t {
        D::Decimal128(p, s) | D::Decimal256(p, s) => Some((i16::from(*p), i16::from(*s))),
        _ => None,
    };
    if let (Some(a), Some(b)) = (signed(from), signed(to)) {
        return a < b;
    }
    if let (Some(a), Some(b)) = (unsigned(from), unsigned(to)) {
        return a < b;
    }
    if let (Some(a), Some(b)) = (unsigned(from), signed(to)) {
        return a < b;
    }
    if let (Some((p, s)), Some((p2, s2))) = (decimal(from), decimal(to)) {
        return s2 >= s && p2 - s2 >= p - s && (p, s) != (p2, s2);
    }
    match (from, to) {
        (D::Float32, D::Float64) => true,
        (f, D::Float64) => signed(f).or(unsigned(f)).is_some_and(|bits| bits <= 32),
        (D::Date32, D::Timestamp(_, None)) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn opts(policy: EvolutionPolicy) -> CheckOptions {
        CheckOptions { policy, nullability_is_proven: true }
    }

    #[test]
    fn reports_every_violation_with_its_path() {
        let item = |price: DataType| {
            DataType::List(Arc::new(Field::new(
                "item",
                DataType::Struct(vec![Field::new("price", price, true)].into()),
                true,
            )))
        };
        let expected = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("items", item(DataType::Decimal128(15, 2)), true),
            Field::new("gone", DataType::Int32, true),
        ]);
        let actual = Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("items", item(DataType::Float64), true),
            Field::new("extra", DataType::Utf8, true),
        ]);
        let lines: Vec<String> = check(&actual, &expected, opts(EvolutionPolicy::Strict))
            .violations
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            lines,
            [
                "id: nullable where NOT NULL was promised",
                "items[].price: expected Decimal128(15, 2), found Float64",
                "gone: missing column",
                "extra: unexpected column of type Utf8",
            ]
        );
    }

    #[test]
    fn evolve_accepts_added_nullable_columns_and_widenings() {
        let expected = Schema::new(vec![Field::new("n", DataType::Int32, true)]);
        let actual = Schema::new(vec![Field::new("n", DataType::Int64, true), Field::new("new", DataType::Utf8, true)]);
        let strict = check(&actual, &expected, opts(EvolutionPolicy::Strict));
        assert_eq!(strict.violations.len(), 2);
        let evolve = check(&actual, &expected, opts(EvolutionPolicy::Evolve));
        assert!(evolve.is_ok(), "{evolve:?}");
        assert_eq!(evolve.evolutions.len(), 2);
        assert!(!is_safe_widening(&DataType::Int64, &DataType::Int32));
        assert!(!is_safe_widening(&DataType::Decimal128(15, 2), &DataType::Decimal128(15, 3)));
        assert!(is_safe_widening(&DataType::Decimal128(15, 2), &DataType::Decimal128(16, 3)));
    }

    #[test]
    fn planned_nullability_is_deferred_to_the_data() {
        let expected = Schema::new(vec![Field::new("a", DataType::Int64, false)]);
        let actual = Schema::new(vec![Field::new("a", DataType::Int64, true)]);
        let c =
            check(&actual, &expected, CheckOptions { policy: EvolutionPolicy::Strict, nullability_is_proven: false });
        assert!(c.is_ok());
        assert_eq!(c.deferred_not_null, ["a"]);
    }
}
