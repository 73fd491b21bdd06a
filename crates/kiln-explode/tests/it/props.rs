use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, Int64Builder, ListArray, ListBuilder, new_empty_array, new_null_array,
};
use arrow::buffer::NullBuffer;
use arrow::compute::concat;
use kiln_explode::{ExplodeOptions, explode, explode_zipped};
use proptest::prelude::*;

type Inner = Option<Vec<Option<i64>>>;

fn flat(rows: &[Inner]) -> ListArray {
    ListArray::from_iter_primitive::<arrow::datatypes::Int64Type, _, _>(rows.iter().cloned())
}

fn nested(rows: &[Option<Vec<Inner>>]) -> ListArray {
    let mut b = ListBuilder::new(ListBuilder::new(Int64Builder::new()));
    for row in rows {
        match row {
            None => b.append(false),
            Some(inner) => {
                for l in inner {
                    match l {
                        None => b.values().append(false),
                        Some(vs) => {
                            for v in vs {
                                b.values().values().append_option(*v);
                            }
                            b.values().append(true);
                        }
                    }
                }
                b.append(true);
            }
        }
    }
    b.finish()
}

/// Masks some parents NULL *without* emptying their offset range (legal Arrow).
fn mask(list: &ListArray, nulls: &[bool]) -> ListArray {
    let valid: Vec<bool> =
        (0..list.len()).map(|i| list.is_valid(i) && !nulls.get(i).copied().unwrap_or(false)).collect();
    let (field, offsets, values, _) = list.clone().into_parts();
    ListArray::new(field, offsets, values, Some(NullBuffer::from(valid)))
}

/// The obviously-correct version: one parent at a time.
fn naive(lists: &[&ListArray], o: &ExplodeOptions) -> (Vec<u32>, Vec<Option<i64>>, Vec<ArrayRef>) {
    let n = lists[0].len();
    let mut parents = Vec::new();
    let mut idx = Vec::new();
    let mut parts: Vec<Vec<ArrayRef>> = vec![Vec::new(); lists.len()];
    for i in 0..n {
        let len = |l: &ListArray| if l.is_null(i) { 0 } else { l.value(i).len() };
        let w = lists.iter().map(|l| len(l)).max().unwrap();
        if w == 0 {
            if o.keep_empty {
                parents.push(i as u32);
                idx.push(None);
                for (k, l) in lists.iter().enumerate() {
                    parts[k].push(new_null_array(l.values().data_type(), 1));
                }
            }
            continue;
        }
        for j in 0..w {
            parents.push(i as u32);
            idx.push(Some(j as i64 + o.idx_base));
            for (k, l) in lists.iter().enumerate() {
                parts[k].push(if j < len(l) {
                    l.value(i).slice(j, 1)
                } else {
                    new_null_array(l.values().data_type(), 1)
                });
            }
        }
    }
    let values = parts
        .into_iter()
        .zip(lists)
        .map(|(p, l)| {
            if p.is_empty() {
                new_empty_array(l.values().data_type())
            } else {
                concat(&p.iter().map(|a| a.as_ref()).collect::<Vec<_>>()).unwrap()
            }
        })
        .collect();
    (parents, idx, values)
}

fn inner() -> impl Strategy<Value = Inner> {
    prop::option::weighted(0.85, prop::collection::vec(prop::option::weighted(0.8, -50i64..50), 0..5))
}

fn options() -> impl Strategy<Value = ExplodeOptions> {
    (any::<bool>(), prop_oneof![Just(0i64), Just(1i64)]).prop_map(|(keep_empty, idx_base)| ExplodeOptions {
        keep_empty,
        with_idx: true,
        idx_base,
        with_flags: true,
    })
}

fn check(lists: &[&ListArray], o: &ExplodeOptions) -> Result<(), TestCaseError> {
    let (p, i, v) = naive(lists, o);
    let arrays: Vec<&dyn Array> = lists.iter().map(|l| *l as &dyn Array).collect();
    let (parents, idx, values) = explode_zipped(&arrays, o).unwrap();
    prop_assert_eq!(parents.values().to_vec(), p);
    let got_idx: Vec<Option<i64>> = idx.unwrap().iter().collect();
    prop_assert_eq!(got_idx, i);
    for (got, want) in values.iter().zip(&v) {
        prop_assert_eq!(got.to_data(), want.to_data());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn flat_lists_match_the_reference(
        rows in prop::collection::vec(inner(), 0..12),
        nulls in prop::collection::vec(prop::bool::weighted(0.15), 12),
        slice in (0usize..6, 0usize..12),
        o in options(),
    ) {
        let list = mask(&flat(&rows), &nulls);
        let (off, len) = (slice.0.min(list.len()), slice.1);
        let list = list.slice(off, len.min(list.len() - off));
        check(&[&list], &o)?;
        // The single-list entry point agrees, and its flags describe the padding rows.
        let e = explode(&list, &o).unwrap();
        let (_, want_idx, _) = naive(&[&list], &o);
        let empty = e.is_empty_parent.unwrap();
        let null = e.is_null_parent.unwrap();
        for (r, want) in want_idx.iter().enumerate() {
            let parent = e.parents.value(r) as usize;
            prop_assert_eq!(null.value(r), want.is_none() && list.is_null(parent));
            prop_assert_eq!(empty.value(r), want.is_none() && list.is_valid(parent));
        }
    }

    #[test]
    fn nested_lists_match_the_reference(
        rows in prop::collection::vec(prop::option::weighted(0.85, prop::collection::vec(inner(), 0..4)), 0..10),
        off in 0usize..4,
        o in options(),
    ) {
        let list = nested(&rows);
        let off = off.min(list.len());
        let list = list.slice(off, list.len() - off);
        check(&[&list], &o)?;
    }

    #[test]
    fn zipped_lists_pad_the_shorter_with_null(
        pairs in prop::collection::vec((inner(), inner()), 0..10),
        o in options(),
    ) {
        let a = flat(&pairs.iter().map(|p| p.0.clone()).collect::<Vec<_>>());
        let b = flat(&pairs.iter().map(|p| p.1.clone()).collect::<Vec<_>>());
        check(&[&a, &b], &o)?;
    }
}

#[test]
fn contiguous_input_is_not_copied() {
    let list = flat(&[Some(vec![Some(1), Some(2)]), Some(vec![Some(3)])]);
    let e = explode(&list, &ExplodeOptions::default()).unwrap();
    let values: &Int64Array = e.values.as_primitive();
    // Same buffer as the child: a zero-copy slice.
    assert_eq!(
        values.values().inner().as_ptr(),
        list.values().as_primitive::<arrow::datatypes::Int64Type>().values().inner().as_ptr()
    );
    let _ = Arc::clone(&e.values);
}

/// Carried columns of several physical kinds (primitive, bytes, views, boolean, and a
/// struct that takes the `take` fallback), all with NULLs, for `n` rows.
fn carried(seed: &[Option<i64>]) -> Vec<ArrayRef> {
    use arrow::array::{BooleanArray, StringArray, StringViewArray, StructArray};
    use arrow::datatypes::{DataType, Field};
    let ints: ArrayRef = Arc::new(Int64Array::from(seed.to_vec()));
    let text = |v: &Option<i64>| v.map(|x| format!("row-{x}-{}", "x".repeat((x.unsigned_abs() % 20) as usize)));
    let strings: ArrayRef = Arc::new(StringArray::from(seed.iter().map(text).collect::<Vec<_>>()));
    let views: ArrayRef = Arc::new(StringViewArray::from(seed.iter().map(text).collect::<Vec<_>>()));
    let bools: ArrayRef = Arc::new(BooleanArray::from(seed.iter().map(|v| v.map(|x| x % 2 == 0)).collect::<Vec<_>>()));
    let structs: ArrayRef =
        Arc::new(StructArray::from(vec![(Arc::new(Field::new("a", DataType::Int64, true)), Arc::clone(&ints))]));
    vec![ints, strings, views, bools, structs]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `explode_columns` repeats the carried columns exactly as a `take` by the reference's
    /// parent indices would, in chunks of at most `target` rows.
    #[test]
    fn carried_columns_match_a_take_by_parent(
        rows in prop::collection::vec((inner(), prop::option::weighted(0.8, -99i64..99)), 0..14),
        off in 0usize..4,
        target in 1usize..7,
        o in options(),
    ) {
        let list = flat(&rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>());
        let seed: Vec<Option<i64>> = rows.iter().map(|r| r.1).collect();
        let off = off.min(list.len());
        let list = list.slice(off, list.len() - off);
        let carry: Vec<ArrayRef> = carried(&seed).iter().map(|c| c.slice(off, c.len() - off)).collect();
        let (parents, want_idx, want_values) = naive(&[&list], &o);
        let parents = arrow::array::UInt32Array::from(parents);
        let chunks = kiln_explode::explode_columns(&carry, &[&list], &o, target).unwrap();
        prop_assert!(chunks.iter().all(|c| c.iter().all(|a| a.len() <= target && a.len() == c[0].len())));
        if chunks.is_empty() {
            prop_assert_eq!(parents.len(), 0);
            return Ok(());
        }
        let column = |k: usize| -> ArrayRef {
            concat(&chunks.iter().map(|c| c[k].as_ref()).collect::<Vec<_>>()).unwrap()
        };
        for (k, c) in carry.iter().enumerate() {
            let want = arrow::compute::take(c.as_ref(), &parents, None).unwrap();
            prop_assert_eq!(column(k).to_data(), want.to_data(), "carried column {}", k);
        }
        prop_assert_eq!(column(carry.len()).to_data(), want_values[0].to_data());
        let idx: Vec<Option<i64>> = column(carry.len() + 1).as_primitive::<arrow::datatypes::Int64Type>().iter().collect();
        prop_assert_eq!(idx, want_idx);
    }
}
