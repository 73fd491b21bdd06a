//! Every identity scheme against its documented text, hashed here with sha2 directly:
//! a change to any encoding fails this test until its version (and the text) is bumped.

use std::collections::BTreeMap;

use kiln_artifact::identity::*;
use kiln_artifact::{BaseColumn, BuildFingerprints, ColumnShape, ContentVersions, ProductShape};

/// sha256 of `text`, lowercase hex, computed without Kiln's helpers.
fn sha256(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn build_ids() {
    let fps = BuildFingerprints {
        schema_fp: "s".into(),
        query_fp: "q".into(),
        runtime_fp: "r".into(),
        func_fp: "f".into(),
        upstream: [("b".to_owned(), "2".to_owned()), ("a".to_owned(), "1".to_owned())].into_iter().collect(),
    };
    assert_eq!(build_id("p", &fps), sha256("kiln.build.v1\np\ns\nq\nr\nf\nupstream a 1\nupstream b 2\n"));
    assert_eq!(BUILD_ID_VERSION, 1);
}

#[test]
fn settings_and_layouts() {
    let settings: BTreeMap<String, String> =
        [("b".to_owned(), "2".to_owned()), ("a".to_owned(), "x=y".to_owned())].into_iter().collect();
    assert_eq!(runtime_fp(&settings), sha256("kiln.runtime.v1\na=x=y\nb=2\n"));
    assert_eq!(settings_fp(&settings), sha256("kiln.settings.v1\na=x=y\nb=2\n"));
    assert_eq!(layout_fp("abc", ""), "abc", "no layout: the schema's own fingerprint");
    assert_eq!(
        layout_fp("abc", "partition region\nwrite compression=snappy\n"),
        sha256("kiln.layout.v1\nabc\npartition region\nwrite compression=snappy\n")
    );
    assert_eq!(query_fp("kiln.query.v1\nOutput\n"), sha256("kiln.query.v1\nOutput\n"));
}

#[test]
fn content_versions_and_scopes() {
    assert_eq!(row_shape_fp("kiln.query.v1\nOutput\n"), sha256("kiln.row_shape.v1\nkiln.query.v1\nOutput\n"));
    assert_eq!(column_def_fp("t.a", "Int64"), sha256("kiln.column_def.v1\nt.a\nInt64\n"));
    let base = |t: &str, c: &str| BaseColumn { table: t.into(), column: c.into() };
    let shape = ProductShape {
        rows_fp: "R".into(),
        tables: vec!["src".into(), "up".into()],
        columns: vec![
            ColumnShape {
                name: "x".into(),
                fp: "FX".into(),
                values: vec![base("up", "a")],
                others: vec![base("src", "k")],
            },
            ColumnShape {
                name: "y".into(),
                fp: "FY".into(),
                values: vec![base("src", "v")],
                others: vec![base("src", "k")],
            },
        ],
    };
    let src = ContentVersions { rows: "S".into(), columns: Default::default() };
    let up = ContentVersions { rows: "U".into(), columns: [("a".to_owned(), "UA".to_owned())].into_iter().collect() };
    let lookup = |t: &str| match t {
        "src" => Some(&src),
        "up" => Some(&up),
        _ => None,
    };
    let v = content_versions(&shape, "RT", "FN", &lookup);
    let rows = sha256("kiln.rows.v1\nR\nRT\nFN\ntable src S\ntable up U\nref src.k S\n");
    assert_eq!(v.rows, rows);
    assert_eq!(v.columns["x"], sha256(&format!("kiln.column.v1\n{rows}\nFX\nref src.k S\nref up.a UA\n")));
    assert_eq!(v.columns["y"], sha256(&format!("kiln.column.v1\n{rows}\nFY\nref src.k S\nref src.v S\n")));
    assert_eq!(
        scoped_upstream(&v, &["x".to_owned(), "zz".to_owned()]),
        sha256(&format!("kiln.upstream.v1\n{rows}\nx {}\nzz {rows}\n", v.columns["x"]))
    );
}

#[test]
fn caches_batches_and_checkpoints() {
    let inputs = [("b".to_owned(), "2".to_owned()), ("a".to_owned(), "1".to_owned())];
    assert_eq!(
        compile_key("0.1.0", "S", "F", "file:0", &inputs),
        sha256("kiln.compile.v1\n0.1.0\nS\nF\nfile:0\ninput a 1\ninput b 2\n")
    );
    assert_eq!(
        ingest_batch_id("D", "https://h/p?page=2", 3, 7),
        sha256("kiln.ingest.v1\nD\nhttps://h/p?page=2\n3\n7\n")
    );
    assert_eq!(checkpoint_id("D", "{\"url\":\"log://t\"}"), sha256("kiln.stream.v1\nD\n{\"url\":\"log://t\"}\n"));
    assert_eq!(side_build_id("C", "v__late"), sha256("kiln.side.v1\nC\nv__late\n"));
}

#[test]
fn sources() {
    for (kind, tag) in [
        (SourceKind::Http, "kiln.http_source.v1"),
        (SourceKind::Kafka, "kiln.kafka_source.v1"),
        (SourceKind::Log, "kiln.log_source.v1"),
        (SourceKind::FilesStream, "kiln.files_stream.v1"),
    ] {
        assert_eq!(source_definition(kind, "SFP", "t\nfalse\n"), sha256(&format!("{tag}\nSFP\nt\nfalse\n")));
    }
    let entries = vec![("a/1.parquet".to_owned(), 10, 5u128), ("b.parquet".to_owned(), 3, 7)];
    assert_eq!(listing_version(&entries), sha256("kiln.source_version.v1\n11:a/1.parquet 10 5\n9:b.parquet 3 7\n"));
    assert_eq!(source_rejects("SFP", "DV", "Csv gzip", 1), sha256("kiln.source_rejects.v1\nSFP\nDV\nCsv gzip\n1\n"));
}

/// No two schemes share a tag.
#[test]
fn tags_are_distinct() {
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/identity.rs")).unwrap();
    let mut tags: Vec<&str> = src
        .match_indices("\"kiln.")
        .map(|(i, _)| src[i + 1..].split('"').next().unwrap_or_default())
        .filter(|t| t.ends_with(|c: char| c.is_ascii_digit()))
        .collect();
    let n = tags.len();
    tags.sort();
    tags.dedup();
    assert_eq!(tags.len(), n, "{tags:?}");
    assert!(n >= 14, "{tags:?}");
}
