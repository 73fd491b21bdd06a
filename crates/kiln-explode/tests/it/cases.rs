use std::sync::Arc;

use arrow::array::{
    Array, AsArray, FixedSizeListArray, Int32Array, Int64Array, Int64Builder, LargeListArray, MapBuilder, RecordBatch,
    StringArray, StringBuilder, StructArray,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use kiln_explode::{ExplodeError, ExplodeOptions, explode, explode_batch, unpack_struct};

#[test]
fn large_and_fixed_size_lists() {
    let large =
        LargeListArray::from_iter_primitive::<Int64Type, _, _>([Some(vec![Some(1), Some(2)]), None, Some(vec![])]);
    let o = ExplodeOptions { keep_empty: true, ..Default::default() };
    let e = explode(&large, &o).unwrap();
    assert_eq!(e.parents.values().to_vec(), [0, 0, 1, 2]);
    assert_eq!(e.idx.unwrap().iter().collect::<Vec<_>>(), [Some(0), Some(1), None, None]);
    assert_eq!(e.values.as_primitive::<Int64Type>().iter().collect::<Vec<_>>(), [Some(1), Some(2), None, None]);

    let fixed = FixedSizeListArray::from_iter_primitive::<Int64Type, _, _>(
        [Some(vec![Some(1), Some(2)]), None, Some(vec![Some(5), None])],
        2,
    );
    let sliced = fixed.slice(1, 2);
    let e = explode(&sliced, &ExplodeOptions::default()).unwrap();
    assert_eq!(e.parents.values().to_vec(), [1, 1]);
    assert_eq!(e.values.as_primitive::<Int64Type>().iter().collect::<Vec<_>>(), [Some(5), None]);
}

#[test]
fn maps_explode_to_key_and_value() {
    let mut b = MapBuilder::new(None, StringBuilder::new(), Int64Builder::new());
    b.keys().append_value("a");
    b.values().append_value(1);
    b.keys().append_value("b");
    b.values().append_null();
    b.append(true).unwrap();
    b.append(false).unwrap();
    let map = b.finish();
    let e = explode(&map, &ExplodeOptions { idx_base: 1, ..Default::default() }).unwrap();
    let (k, v) = e.map_columns().unwrap();
    assert_eq!(k.as_string::<i32>().iter().collect::<Vec<_>>(), [Some("a"), Some("b")]);
    assert_eq!(v.as_primitive::<Int64Type>().iter().collect::<Vec<_>>(), [Some(1), None]);
    assert_eq!(e.idx.unwrap().iter().collect::<Vec<_>>(), [Some(1), Some(2)]);
}

#[test]
fn batches_carry_parents_in_order_and_respect_the_target_size() {
    let list = arrow::array::ListArray::from_iter_primitive::<Int64Type, _, _>([
        Some(vec![Some(10), Some(11), Some(12)]),
        Some(vec![]),
        Some(vec![Some(20), Some(21)]),
    ]);
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int32, false),
        Field::new("items", list.data_type().clone(), true),
        Field::new("tag", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int32Array::from(vec![1, 2, 3])),
            Arc::new(list),
            Arc::new(StringArray::from(vec!["x", "y", "z"])),
        ],
    )
    .unwrap();
    let out = explode_batch(&batch, 1, "item", &ExplodeOptions::default(), 2).unwrap();
    assert_eq!(out.iter().map(RecordBatch::num_rows).collect::<Vec<_>>(), [2, 2, 1]);
    let all = arrow::compute::concat_batches(&out[0].schema(), &out).unwrap();
    let names: Vec<_> = all.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["id", "tag", "item", "idx"]);
    assert_eq!(all.column(0).as_primitive::<arrow::datatypes::Int32Type>().values().to_vec(), [1, 1, 1, 3, 3]);
    assert_eq!(all.column(2).as_primitive::<Int64Type>().values().to_vec(), [10, 11, 12, 20, 21]);
    assert_eq!(all.column(3).as_primitive::<Int64Type>().values().to_vec(), [0, 1, 2, 0, 1]);
    assert_eq!(all.column(1).as_string::<i32>().iter().flatten().collect::<String>(), "xxxzz");
}

#[test]
fn structs_unpack_to_dotted_columns_and_non_lists_are_refused() {
    let s = StructArray::from(vec![
        (Arc::new(Field::new("a", DataType::Int64, true)), Arc::new(Int64Array::from(vec![1, 2])) as _),
        (Arc::new(Field::new("b", DataType::Utf8, true)), Arc::new(StringArray::from(vec!["p", "q"])) as _),
    ]);
    let cols = unpack_struct("item", &s).unwrap();
    assert_eq!(cols.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["item.a", "item.b"]);
    let err = explode(&Int64Array::from(vec![1]), &ExplodeOptions::default()).unwrap_err();
    assert!(matches!(err, ExplodeError::NotAList(DataType::Int64)));
}
