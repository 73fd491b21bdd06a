use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::prelude::SessionContext;
use kiln_functions::registry::fingerprint_of;
use kiln_functions::{FunctionError, Registry, Secrets};

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn every_builtin_is_prefixed_documented_and_found_by_id_and_name() {
    let r = Registry::builtin(Secrets::default());
    let names: Vec<&str> = r.specs().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "kiln_sha256_hex",
            "kiln_pii_hash",
            "kiln_stable_id",
            "kiln_tumble_start",
            "kiln_tumble_end",
            "kiln_hop_starts",
            "kiln_interval_start",
            "kiln_interval_end",
            "json_get_str",
            "json_get_int",
            "json_get_float",
            "json_get_bool",
            "json_get_json",
            "json_get_array",
            "json_as_text",
            "json_contains",
            "json_length",
            "json_object_keys"
        ]
    );
    let catalog = r.catalog_markdown();
    for s in r.specs() {
        let (prefix, id) = if s.name.starts_with("json_") { ("json_", "json.") } else { ("kiln_", "kiln.") };
        assert!(s.name.starts_with(prefix) && s.id.starts_with(id) && s.id.ends_with(".v1"), "{}", s.name);
        assert!(!s.doc.is_empty() && !s.example.is_empty());
        assert!(catalog.contains(&format!("## `{}(", s.name)) && catalog.contains(s.doc));
        assert_eq!(r.by_id(s.id).unwrap().name, s.name);
        assert_eq!(r.by_name(s.name).unwrap().id, s.id);
    }
}

#[test]
fn installing_is_idempotent_and_never_shadows() {
    let ctx = SessionContext::new();
    let r = Registry::builtin(Secrets::default());
    r.install(&ctx).unwrap();
    r.install(&ctx).unwrap();

    let other = SessionContext::new();
    let impostor = create_udf(
        "kiln_stable_id",
        vec![DataType::Int64],
        DataType::Int64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| Ok(args[0].clone())),
    );
    other.register_udf(impostor);
    let err = r.install(&other).unwrap_err();
    assert!(matches!(&err, FunctionError::Shadow { name } if name == "kiln_stable_id"), "{err}");
    // Nothing was installed next to the conflict.
    assert!(!other.state().scalar_functions().contains_key("kiln_sha256_hex"));
}

#[test]
fn fingerprint_changes_with_specs_versions_and_secrets_only() {
    let a = Registry::builtin(Secrets::from_values([("k", "one")]));
    let b = Registry::builtin(Secrets::from_values([("k", "two"), ("other", "x")]));
    let used = set(&["kiln_pii_hash", "sum", "abs"]);
    let fp = |r: &Registry, u: &BTreeSet<String>, s: &[&str]| r.fingerprint(u, &set(s)).unwrap();
    // Non-Kiln functions do not matter; the same inputs give the same fingerprint.
    assert_eq!(fp(&a, &used, &["k"]), fp(&a, &set(&["kiln_pii_hash"]), &["k"]));
    // Rotating the key changes it; an unused secret does not.
    assert_ne!(fp(&a, &used, &["k"]), fp(&b, &used, &["k"]));
    assert_eq!(fp(&a, &set(&["kiln_sha256_hex"]), &[]), fp(&b, &set(&["kiln_sha256_hex"]), &[]));
    assert_ne!(fp(&a, &set(&["kiln_sha256_hex"]), &[]), fp(&a, &set(&["kiln_stable_id"]), &[]));
    // A spec change or an implementation-version bump changes it.
    let spec = a.by_name("kiln_sha256_hex").unwrap().clone();
    let base = fingerprint_of(&[&spec], &[]);
    assert_eq!(base, fp(&a, &set(&["kiln_sha256_hex"]), &[]));
    let mut bumped = spec.clone();
    bumped.implementation_version += 1;
    assert_ne!(fingerprint_of(&[&bumped], &[]), base);
    let mut redoc = spec.clone();
    redoc.null_semantics = "NULL in, empty string out";
    assert_ne!(fingerprint_of(&[&redoc], &[]), base);
    // A secret that cannot be resolved is an error naming it.
    assert!(a.fingerprint(&used, &set(&["missing"])).unwrap_err().to_string().contains("secret `missing`"));
}

/// The function-fingerprint encoding is versioned; this pins it against the documented
/// text (kiln_artifact::identity lists it with the other schemes).
#[test]
fn fingerprint_encoding_is_pinned() {
    use kiln_functions::spec::{ArgSpec, FunctionKind, FunctionSpec};
    use sha2::Digest;
    let spec = FunctionSpec {
        id: "kiln.x.v1",
        name: "kiln_x",
        kind: FunctionKind::Scalar,
        args: vec![ArgSpec { name: "v", types: "Utf8", literal: false }],
        variadic: false,
        returns: "Utf8",
        volatility: "immutable",
        deterministic: true,
        null_semantics: "NULL in, NULL out",
        optimizer_transparent: true,
        implementation_version: 2,
        doc: "d",
        example: "e",
    };
    let text = "kiln.functions.v1\nfunction id=9:kiln.x.v1\nname=6:kiln_x\nkind=Scalar\nvariadic=false\nreturns=4:Utf8\n\
                volatility=9:immutable\ndeterministic=true\nnulls=17:NULL in, NULL out\ntransparent=true\nimpl=2\ndoc=1:d\n\
                example=1:e\narg=1:v types=4:Utf8 literal=false\n\nsecret k abc\n";
    let expected: String = sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(fingerprint_of(&[&spec], &[("k".to_owned(), "abc".to_owned())]), expected);
}
