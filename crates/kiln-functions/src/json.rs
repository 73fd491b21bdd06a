//! Functions over JSON text: datafusion-functions-json's (0.55, the DataFusion 55 line),
//! each with a spec so it is in the catalog and in `func_fp` like Kiln's own.
//!
//! Decision: only the typed functions are installed. `json_get` and the `->` / `->>`
//! operators return a union type, which no product table (a Delta table) can store and
//! whose cast rewrites would change plans Kiln did not write; `json_get_str(j, 'a')` and
//! the others say the type in their name instead. Every function reads JSON text
//! (`Utf8`, `LargeUtf8`, `Utf8View`, or a dictionary of them) and a path of keys (strings)
//! and array indices (integers); text that is not JSON, a missing key and a value of
//! another type all give NULL, as a lookup that finds nothing does.

use std::sync::{Arc, LazyLock};

use datafusion::logical_expr::ScalarUDF;
use datafusion_functions_json::udfs;

use crate::spec::{ArgSpec, FunctionKind, FunctionSpec};

const JSON: &str = "Utf8 | LargeUtf8 | Utf8View (JSON text)";
const PATH: &str = "Utf8 (an object key) | Int64 (an array index)";
const NULLS: &str = "NULL when the text is NULL or not JSON, the path does not exist, or the value has another type";

/// The library's version: part of every spec (and so of `func_fp`): upgrading the crate is
/// a change of implementation for every product that calls one of its functions.
const VERSION: u32 = 55_06;

fn spec(
    id: &'static str,
    name: &'static str,
    returns: &'static str,
    doc: &'static str,
    example: &'static str,
) -> FunctionSpec {
    FunctionSpec {
        id,
        name,
        kind: FunctionKind::Scalar,
        args: vec![
            ArgSpec { name: "json", types: JSON, literal: false },
            ArgSpec { name: "path", types: PATH, literal: false },
        ],
        variadic: true,
        returns,
        volatility: "immutable",
        deterministic: true,
        null_semantics: NULLS,
        optimizer_transparent: true,
        implementation_version: VERSION,
        doc,
        example,
    }
}

pub static GET_STR: LazyLock<FunctionSpec> = LazyLock::new(|| {
    spec(
        "json.get_str.v1",
        "json_get_str",
        "Utf8",
        "The string at `path` in the JSON text (datafusion-functions-json).",
        "SELECT json_get_str('{\"a\": {\"b\": \"x\"}}', 'a', 'b') -- x",
    )
});
pub static GET_INT: LazyLock<FunctionSpec> = LazyLock::new(|| {
    spec(
        "json.get_int.v1",
        "json_get_int",
        "Int64",
        "The integer at `path` in the JSON text (datafusion-functions-json).",
        "SELECT json_get_int('{\"items\": [10, 20]}', 'items', 1) -- 20",
    )
});
pub static GET_FLOAT: LazyLock<FunctionSpec> = LazyLock::new(|| {
    spec(
        "json.get_float.v1",
        "json_get_float",
        "Float64",
        "The number at `path` in the JSON text, as a double (integers too) (datafusion-functions-json).",
        "SELECT json_get_float('{\"price\": 9.5}', 'price') -- 9.5",
    )
});
pub static GET_BOOL: LazyLock<FunctionSpec> = LazyLock::new(|| {
    spec(
        "json.get_bool.v1",
        "json_get_bool",
        "Boolean",
        "The boolean at `path` in the JSON text (datafusion-functions-json).",
        "SELECT json_get_bool('{\"ok\": true}', 'ok') -- true",
    )
});
pub static GET_JSON: LazyLock<FunctionSpec> = LazyLock::new(|| {
    spec(
        "json.get_json.v1",
        "json_get_json",
        "Utf8 (JSON text)",
        "The value at `path` as JSON text, whatever its type (datafusion-functions-json).",
        "SELECT json_get_json('{\"a\": {\"b\": [1, 2]}}', 'a') -- {\"b\": [1, 2]}",
    )
});
pub static GET_ARRAY: LazyLock<FunctionSpec> = LazyLock::new(|| {
    spec(
        "json.get_array.v1",
        "json_get_array",
        "List(Utf8) (each element as JSON text)",
        "The array at `path`, each element as JSON text (datafusion-functions-json).",
        "SELECT json_get_array('{\"tags\": [\"a\", 1]}', 'tags') -- [\"a\", 1] as ['\"a\"', '1']",
    )
});
pub static AS_TEXT: LazyLock<FunctionSpec> = LazyLock::new(|| {
    spec(
        "json.as_text.v1",
        "json_as_text",
        "Utf8",
        "The value at `path` as text: a string without its quotes, anything else as JSON text \
         (datafusion-functions-json).",
        "SELECT json_as_text('{\"a\": 1}', 'a') -- 1",
    )
});
pub static CONTAINS: LazyLock<FunctionSpec> = LazyLock::new(|| {
    spec(
        "json.contains.v1",
        "json_contains",
        "Boolean",
        "Whether `path` exists in the JSON text (false, not NULL, when it does not) (datafusion-functions-json).",
        "SELECT json_contains('{\"a\": null}', 'a') -- true",
    )
});
pub static LENGTH: LazyLock<FunctionSpec> = LazyLock::new(|| {
    spec(
        "json.length.v1",
        "json_length",
        "UInt64 (cast to BIGINT to store it: Delta tables have no unsigned integers)",
        "The number of elements of the array or keys of the object at `path` (datafusion-functions-json).",
        "SELECT CAST(json_length('[1, 2, 3]') AS BIGINT) -- 3",
    )
});
pub static OBJECT_KEYS: LazyLock<FunctionSpec> = LazyLock::new(|| {
    spec(
        "json.object_keys.v1",
        "json_object_keys",
        "List(Utf8)",
        "The keys of the object at `path`, in document order (datafusion-functions-json).",
        "SELECT json_object_keys('{\"b\": 1, \"a\": 2}') -- [b, a]",
    )
});

/// The JSON functions with their specs.
pub(crate) fn functions() -> Vec<(&'static FunctionSpec, Arc<ScalarUDF>)> {
    vec![
        (&*GET_STR, udfs::json_get_str_udf()),
        (&*GET_INT, udfs::json_get_int_udf()),
        (&*GET_FLOAT, udfs::json_get_float_udf()),
        (&*GET_BOOL, udfs::json_get_bool_udf()),
        (&*GET_JSON, udfs::json_get_json_udf()),
        (&*GET_ARRAY, udfs::json_get_array_udf()),
        (&*AS_TEXT, udfs::json_as_text_udf()),
        (&*CONTAINS, udfs::json_contains_udf()),
        (&*LENGTH, udfs::json_length_udf()),
        (&*OBJECT_KEYS, udfs::json_object_keys_udf()),
    ]
}
