//! The JSON functions through SQL: known answers, and random documents and paths against
//! serde_json's reading of the same text.

use proptest::prelude::*;
use serde_json::Value;

use crate::{column, ctx_with};

#[tokio::test]
async fn known_answers() {
    let ctx = ctx_with(&[]);
    let doc =
        r#"'{"a": {"b": "x", "n": 7, "f": 2.5, "t": true, "arr": [10, "y", null], "nil": null}, "k": [1, 2, 3]}'"#;
    let one = |sql: String| {
        let ctx = ctx.clone();
        async move { column(&ctx, &sql).await.remove(0) }
    };
    assert_eq!(one(format!("SELECT json_get_str({doc}, 'a', 'b')")).await, "x");
    assert_eq!(one(format!("SELECT json_get_int({doc}, 'a', 'n')")).await, "7");
    assert_eq!(one(format!("SELECT json_get_int({doc}, 'k', 2)")).await, "3");
    assert_eq!(one(format!("SELECT json_get_float({doc}, 'a', 'f')")).await, "2.5");
    assert_eq!(one(format!("SELECT json_get_bool({doc}, 'a', 't')")).await, "true");
    assert_eq!(one(format!("SELECT json_get_json({doc}, 'a', 'arr')")).await, r#"[10, "y", null]"#);
    assert_eq!(one(format!("SELECT json_get_array({doc}, 'a', 'arr')")).await, r#"[10, "y", null]"#);
    assert_eq!(one(format!("SELECT json_as_text({doc}, 'a', 'n')")).await, "7");
    assert_eq!(one(format!("SELECT json_contains({doc}, 'a', 'nil')")).await, "true");
    assert_eq!(one(format!("SELECT json_contains({doc}, 'a', 'zz')")).await, "false");
    assert_eq!(one(format!("SELECT CAST(json_length({doc}, 'k') AS BIGINT)")).await, "3");
    assert_eq!(one(format!("SELECT json_object_keys({doc}, 'a')")).await, "[b, n, f, t, arr, nil]");
    // Nothing found, another type, not JSON: NULL.
    assert_eq!(one(format!("SELECT json_get_str({doc}, 'a', 'n')")).await, "NULL");
    assert_eq!(one(format!("SELECT json_get_int({doc}, 'nope')")).await, "NULL");
    assert_eq!(one("SELECT json_get_str('{not json', 'a')".into()).await, "NULL");
    assert_eq!(one("SELECT json_get_str(CAST(NULL AS VARCHAR), 'a')".into()).await, "NULL");
}

/// A random JSON value of bounded depth.
fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-1_000_000i64..1_000_000).prop_map(Value::from),
        (-1000.0f64..1000.0).prop_map(|f| Value::from((f * 8.0).round() / 8.0)),
        "[a-z\"\\\\ é]{0,6}".prop_map(Value::String),
        (-1000i64..1000).prop_map(|i| Value::String(i.to_string())),
        prop_oneof![Just("true"), Just("false"), Just("2.5")].prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-c]", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One step of a path: a key or an index.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

fn follow<'a>(v: &'a Value, path: &[Step]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, step| match step {
        Step::Key(k) => v.as_object()?.get(k),
        Step::Index(i) => v.as_array()?.get(*i),
    })
}

fn sql_text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn typed_getters_agree_with_serde_json(
        doc in value(),
        path in prop::collection::vec(prop_oneof!["[a-c]".prop_map(Step::Key), (0usize..3).prop_map(Step::Index)], 1..4),
    ) {
        let text = serde_json::to_string(&doc).unwrap();
        let args: String = path
            .iter()
            .map(|s| match s {
                Step::Key(k) => format!(", {}", sql_text(k)),
                Step::Index(i) => format!(", {i}"),
            })
            .collect();
        let found = follow(&doc, &path);
        let sql = format!(
            "SELECT json_get_str({t}{args}), json_get_int({t}{args}), json_get_bool({t}{args}), \
             json_contains({t}{args}), json_get_float({t}{args})",
            t = sql_text(&text)
        );
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let ctx = ctx_with(&[]);
        let row: Vec<String> = rt.block_on(async {
            let mut cells = Vec::new();
            for i in 0..5 {
                let sql = format!("SELECT c{i} FROM ({sql}) AS q(c0, c1, c2, c3, c4)");
                cells.push(column(&ctx, &sql).await.remove(0));
            }
            cells
        });
        let null = || "NULL".to_owned();
        let expected_str = found.and_then(Value::as_str).map_or_else(null, str::to_owned);
        // An integral float (`1.0`) counts as an integer, and a string holding a number or
        // a boolean as that value (docs/functions.md, "JSON functions").
        let as_int = |v: &Value| match v {
            Value::Number(n) => n.as_i64().or_else(|| {
                n.as_f64().filter(|f| f.fract() == 0.0 && *f >= i64::MIN as f64 && *f < -(i64::MIN as f64)).map(|f| f as i64)
            }),
            Value::String(s) => s.parse::<i64>().ok(),
            _ => None,
        };
        let expected_int = found.and_then(as_int).map_or_else(null, |i| i.to_string());
        let as_bool = |v: &Value| v.as_bool().or_else(|| v.as_str()?.parse::<bool>().ok());
        let as_float = |v: &Value| v.as_f64().or_else(|| v.as_str()?.parse::<f64>().ok());
        let expected_bool = found.and_then(as_bool).map_or_else(null, |b| b.to_string());
        let expected_float = found.and_then(as_float).map(|f| f.to_string());
        prop_assert_eq!(&row[0], &expected_str, "json_get_str of {} at {:?}", text, path);
        prop_assert_eq!(&row[1], &expected_int, "json_get_int of {} at {:?}", text, path);
        prop_assert_eq!(&row[2], &expected_bool, "json_get_bool of {} at {:?}", text, path);
        prop_assert_eq!(&row[3], &found.is_some().to_string(), "json_contains of {} at {:?}", text, path);
        match expected_float {
            Some(f) => prop_assert_eq!(row[4].parse::<f64>().ok(), f.parse::<f64>().ok(), "json_get_float of {}", text),
            None => prop_assert_eq!(&row[4], "NULL", "json_get_float of {} at {:?}", text, path),
        }
    }
}
