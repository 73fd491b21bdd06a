use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, IntervalUnit, Schema, TimeUnit};
use kiln_contracts::types::map_type;
use kiln_contracts::{UnifyMode, arrow_to_sql, parse_sql_type, schema_fingerprint, unify};
use proptest::prelude::*;

/// Every leaf type a user can write (in its canonical encoding).
fn leaf() -> impl Strategy<Value = DataType> {
    prop_oneof![
        Just(DataType::Boolean),
        Just(DataType::Int8),
        Just(DataType::Int16),
        Just(DataType::Int32),
        Just(DataType::Int64),
        Just(DataType::UInt8),
        Just(DataType::UInt16),
        Just(DataType::UInt32),
        Just(DataType::UInt64),
        Just(DataType::Float32),
        Just(DataType::Float64),
        (1u8..=38).prop_flat_map(|p| (Just(p), 0..=p as i8)).prop_map(|(p, s)| DataType::Decimal128(p, s)),
        (39u8..=76).prop_flat_map(|p| (Just(p), 0..=p as i8)).prop_map(|(p, s)| DataType::Decimal256(p, s)),
        Just(DataType::Utf8View),
        Just(DataType::Binary),
        Just(DataType::Date32),
        Just(DataType::Time64(TimeUnit::Nanosecond)),
        prop_oneof![
            Just(TimeUnit::Second),
            Just(TimeUnit::Millisecond),
            Just(TimeUnit::Microsecond),
            Just(TimeUnit::Nanosecond)
        ]
        .prop_flat_map(|u| prop_oneof![
            Just(DataType::Timestamp(u, None)),
            Just(DataType::Timestamp(u, Some("UTC".into())))
        ]),
        Just(DataType::Interval(IntervalUnit::MonthDayNano)),
    ]
}

fn nested() -> impl Strategy<Value = DataType> {
    leaf().prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|t| DataType::List(Arc::new(Field::new("item", t, true)))),
            prop::collection::vec(inner.clone(), 1..4).prop_map(|ts| {
                DataType::Struct(Fields::from(
                    ts.into_iter().enumerate().map(|(i, t)| Field::new(format!("f{i}"), t, true)).collect::<Vec<_>>(),
                ))
            }),
            (leaf(), inner).prop_map(|(k, v)| map_type(k, v)),
        ]
    })
}

fn schema() -> impl Strategy<Value = Schema> {
    prop::collection::vec((nested(), any::<bool>(), prop::collection::vec(("[a-c]{1,3}", "[a-z]{0,4}"), 0..4)), 1..6)
        .prop_map(|cols| {
            Schema::new(
                cols.into_iter()
                    .enumerate()
                    .map(|(i, (t, nullable, meta))| {
                        Field::new(format!("c{i}"), t, nullable).with_metadata(meta.into_iter().collect())
                    })
                    .collect::<Vec<_>>(),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_sql_type_round_trips(t in nested()) {
        let sql = arrow_to_sql(&t).unwrap();
        prop_assert_eq!(parse_sql_type(&sql).unwrap(), t, "{}", sql);
    }

    #[test]
    fn fingerprint_ignores_metadata_order(s in schema()) {
        let reordered = Schema::new(s.fields().iter().map(|f| {
            let mut entries: Vec<(String, String)> = f.metadata().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            entries.reverse();
            let mut m = HashMap::with_capacity(entries.len() + 7); // a different hash layout
            m.extend(entries);
            f.as_ref().clone().with_metadata(m)
        }).collect::<Vec<_>>());
        prop_assert_eq!(schema_fingerprint(&s), schema_fingerprint(&reordered));
    }

    #[test]
    fn fingerprint_changes_under_any_single_change(s in schema(), which in any::<prop::sample::Index>(), change in 0..4u8) {
        let i = which.index(s.fields().len());
        let f = s.field(i).clone();
        let changed = match change {
            0 => f.clone().with_name(format!("{}x", f.name())),
            1 => f.clone().with_nullable(!f.is_nullable()),
            2 => f.clone().with_data_type(DataType::List(Arc::new(Field::new("item", f.data_type().clone(), true)))),
            _ => f.clone().with_data_type(if f.data_type() == &DataType::Int64 { DataType::Int32 } else { DataType::Int64 }),
        };
        let mut fields: Vec<Field> = s.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields[i] = changed;
        prop_assert_ne!(schema_fingerprint(&s), schema_fingerprint(&Schema::new(fields)));
    }

    #[test]
    fn permissive_unification_is_idempotent_and_order_independent(a in schema(), b in schema(), c in schema()) {
        let inputs = [("a", &a), ("b", &b), ("c", &c)];
        let forward = unify(&inputs, UnifyMode::Permissive);
        let backward = unify(&[inputs[2], inputs[1], inputs[0]], UnifyMode::Permissive);
        match (forward, backward) {
            (Ok(f), Ok(r)) => {
                let by_name = |s: &Schema| {
                    let mut v: Vec<(String, String)> = s.fields().iter().map(|f| (f.name().clone(), format!("{:?}/{}", f.data_type(), f.is_nullable()))).collect();
                    v.sort();
                    v
                };
                prop_assert_eq!(by_name(&f), by_name(&r));
                let again = unify(&[("u", &f), ("u", &f)], UnifyMode::Permissive).unwrap();
                prop_assert_eq!(&again, &f);
                let with_self = unify(&[("u", &f), ("a", &a)], UnifyMode::Permissive).unwrap();
                prop_assert_eq!(by_name(&with_self), by_name(&f));
            }
            (Err(_), Err(_)) => {}
            (f, r) => prop_assert!(false, "order changed success: {:?} vs {:?}", f.is_ok(), r.is_ok()),
        }
    }
}
