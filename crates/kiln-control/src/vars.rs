//! Project variables: `[vars]` in kiln.toml, `--var NAME=VALUE` on the command line, and
//! `$NAME` in SQL.
//!
//! A variable is a typed value, never text: `$start_date` is a DataFusion placeholder
//! that the compiler replaces by a literal of the variable's type after planning (so a
//! value cannot change the statement's structure, only a constant in it). The type comes
//! from kiln.toml: a TOML string is `VARCHAR`, an integer `BIGINT`, a float `DOUBLE`, a
//! boolean `BOOLEAN`, a TOML date (`1995-01-01`, unquoted) `DATE`, and
//! `{ type = "DECIMAL(15, 2)", value = "100.00" }` any SQL type Kiln knows. `--var`
//! values are read as the declared type (a variable that kiln.toml does not declare is a
//! usage error, as is a value its type cannot hold).
//!
//! Build identity: the literal is part of the product's plan, so its canonical plan, and
//! with it the build id, changes exactly when a variable it uses changes (a product that
//! uses none is unaffected). The compile cache key takes every variable's value
//! ([`Vars::fingerprint`]): changing one recompiles the project, which only costs
//! planning.

use std::collections::{BTreeMap, HashMap};

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::logical_expr::LogicalPlan;

use crate::error::ControlError;

/// The resolved variables of a run.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    values: BTreeMap<String, ScalarValue>,
    fp: String,
}

fn config_error(message: String) -> ControlError {
    ControlError::Config { file: "kiln.toml".into(), message }
}

/// A variable's name: what follows `$` in SQL.
fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Why a variable's value or use was refused (the caller adds where).
#[derive(Debug, thiserror::Error)]
pub enum VarError {
    /// A value its declared type cannot hold.
    #[error("`{text}` is not a {ty}")]
    NotOfType { text: String, ty: String },
    /// `$1`: positional parameters have no value in a project.
    #[error("`{0}`: variables are named (`$start_date`), declared in kiln.toml [vars]")]
    Positional(String),
    /// `$name` that kiln.toml does not declare.
    #[error("unknown variable `{id}` (kiln.toml [vars] declares: {declared})")]
    Unknown { id: String, declared: String },
    /// DataFusion could not list or replace the plan's placeholders.
    #[error("{0}")]
    Plan(String),
}

/// `text` read as a value of type `ty`.
fn typed(text: &str, ty: &DataType) -> Result<ScalarValue, VarError> {
    ScalarValue::Utf8(Some(text.to_owned())).cast_to(ty).ok().filter(|v| !v.is_null()).ok_or_else(|| {
        VarError::NotOfType {
            text: text.to_owned(),
            ty: kiln_contracts::arrow_to_sql(ty).unwrap_or_else(|| ty.to_string()),
        }
    })
}

/// One `[vars]` entry's value.
fn declared(name: &str, value: &toml::Value) -> Result<ScalarValue, ControlError> {
    let bad = |why: String| config_error(format!("[vars] {name}: {why}"));
    let bad_value = |e: VarError| bad(e.to_string());
    Ok(match value {
        toml::Value::String(s) => ScalarValue::Utf8(Some(s.clone())),
        toml::Value::Integer(i) => ScalarValue::Int64(Some(*i)),
        toml::Value::Float(f) => ScalarValue::Float64(Some(*f)),
        toml::Value::Boolean(b) => ScalarValue::Boolean(Some(*b)),
        toml::Value::Datetime(d) => match (d.date, d.time) {
            (Some(_), None) => typed(&d.to_string(), &DataType::Date32).map_err(bad_value)?,
            _ => return Err(bad("only a date (1995-01-01) is a TOML date value; for a timestamp use { type = \"TIMESTAMP\", value = \"...\" }".into())),
        },
        toml::Value::Table(t) => {
            let (Some(toml::Value::String(ty)), Some(toml::Value::String(text)), 2) =
                (t.get("type"), t.get("value"), t.len())
            else {
                return Err(bad("a table is { type = \"SQL TYPE\", value = \"...\" } (both strings)".into()));
            };
            let ty = kiln_contracts::parse_sql_type(ty).map_err(|e| bad(e.to_string()))?;
            typed(text, &ty).map_err(bad_value)?
        }
        toml::Value::Array(_) => return Err(bad("a variable is one value, not an array".into())),
    })
}

impl Vars {
    /// Resolves kiln.toml's `[vars]` with the `--var` overrides.
    pub fn resolve(
        decls: &BTreeMap<String, toml::Value>,
        overrides: &[(String, String)],
    ) -> Result<Self, ControlError> {
        let mut values = BTreeMap::new();
        for (name, value) in decls {
            if !valid_name(name) {
                return Err(config_error(format!(
                    "[vars] {name}: a variable's name is letters, digits and `_`, starting with a letter or `_`"
                )));
            }
            values.insert(name.clone(), declared(name, value)?);
        }
        for (name, text) in overrides {
            let Some(current) = values.get(name) else {
                let known: Vec<&str> = values.keys().map(String::as_str).collect();
                return Err(ControlError::Var(format!(
                    "--var {name}: no variable `{name}` in kiln.toml [vars] (declared: {})",
                    if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                )));
            };
            let value =
                typed(text, &current.data_type()).map_err(|e| ControlError::Var(format!("--var {name}: {e}")))?;
            values.insert(name.clone(), value);
        }
        let listed: Vec<String> = values.iter().map(|(k, v)| format!("{k}:{}:{v:?}", v.data_type())).collect();
        let fp = kiln_artifact::plan::sha256_hex(listed.join("\n").as_bytes());
        Ok(Self { values, fp })
    }

    /// A hash of every variable's name, type and value (the compile cache's key).
    pub fn fingerprint(&self) -> &str {
        &self.fp
    }

    /// `plan` with every `$name` replaced by its variable's value (the error: why not, for
    /// the caller to locate).
    pub(crate) fn bind(&self, plan: LogicalPlan) -> Result<LogicalPlan, VarError> {
        let used = plan.get_parameter_names().map_err(|e| VarError::Plan(e.strip_backtrace()))?;
        if used.is_empty() {
            return Ok(plan);
        }
        let mut params = HashMap::new();
        let mut used: Vec<String> = used.into_iter().collect();
        used.sort();
        for id in used {
            let name = id.strip_prefix('$').unwrap_or(&id);
            match self.values.get(name) {
                Some(v) => {
                    params.insert(name.to_owned(), v.clone().into());
                }
                None if name.chars().all(|c| c.is_ascii_digit()) => return Err(VarError::Positional(id)),
                None => {
                    let known: Vec<&str> = self.values.keys().map(String::as_str).collect();
                    let declared = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
                    return Err(VarError::Unknown { id, declared });
                }
            }
        }
        plan.replace_params_with_values(&ParamValues::Map(params)).map_err(|e| VarError::Plan(e.strip_backtrace()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decls(text: &str) -> BTreeMap<String, toml::Value> {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn toml_values_and_overrides_are_typed() {
        let d = decls(
            "s = \"EUROPE\"\nn = 10\nf = 0.5\nb = true\nd = 1995-01-01\nm = { type = \"DECIMAL(15, 2)\", value = \"100.5\" }",
        );
        let v = Vars::resolve(&d, &[("n".into(), "42".into()), ("d".into(), "1996-02-29".into())]).unwrap();
        let got: Vec<String> = v.values.iter().map(|(k, v)| format!("{k}={v} {}", v.data_type())).collect();
        assert_eq!(
            got,
            [
                "b=true Boolean",
                "d=1996-02-29 Date32",
                "f=0.5 Float64",
                "m=100.50 Decimal128(15, 2)",
                "n=42 Int64",
                "s=EUROPE Utf8"
            ]
        );
        let other = Vars::resolve(&d, &[("n".into(), "43".into())]).unwrap();
        assert_ne!(v.fingerprint(), other.fingerprint());
    }

    #[test]
    fn bad_declarations_and_overrides_are_clear_errors() {
        let d = decls("n = 10\nd = 1995-01-01");
        let err = |r: Result<Vars, ControlError>| r.unwrap_err().to_string();
        assert!(
            err(Vars::resolve(&d, &[("x".into(), "1".into())]))
                .contains("no variable `x` in kiln.toml [vars] (declared: d, n)")
        );
        assert!(err(Vars::resolve(&d, &[("n".into(), "ten".into())])).contains("`ten` is not a BIGINT"));
        assert!(err(Vars::resolve(&d, &[("d".into(), "1995-02-30".into())])).contains("is not a DATE"));
        assert!(err(Vars::resolve(&decls("t = 1995-01-01T10:00:00"), &[])).contains("only a date"));
        assert!(err(Vars::resolve(&decls("m = { type = \"NOPE\", value = \"1\" }"), &[])).contains("[vars] m"));
        assert!(err(Vars::resolve(&decls("\"a-b\" = 1"), &[])).contains("a variable's name"));
        assert!(err(Vars::resolve(&decls("a = [1]"), &[])).contains("not an array"));
    }
}
