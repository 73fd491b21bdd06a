//! `kiln init`: scaffold a project, empty or from an embedded example.

use std::path::Path;

use crate::KilnError;

/// The files of the TPC-H example, embedded from `examples/tpch/` at compile time.
pub const TPCH_EXAMPLE: [(&str, &str); 13] = [
    ("kiln.toml", include_str!("../../../examples/tpch/kiln.toml")),
    ("sources.sql", include_str!("../../../examples/tpch/sources.sql")),
    ("staging/customer_clean.sql", include_str!("../../../examples/tpch/staging/customer_clean.sql")),
    ("marts/revenue_by_nation_year.sql", include_str!("../../../examples/tpch/marts/revenue_by_nation_year.sql")),
    ("marts/customer_order_summary.sql", include_str!("../../../examples/tpch/marts/customer_order_summary.sql")),
    ("marts/segment_value.sql", include_str!("../../../examples/tpch/marts/segment_value.sql")),
    ("nested/orders_nested.sql", include_str!("../../../examples/tpch/nested/orders_nested.sql")),
    ("nested/order_items.sql", include_str!("../../../examples/tpch/nested/order_items.sql")),
    ("streams/order_events.sql", include_str!("../../../examples/tpch/streams/order_events.sql")),
    ("streams/order_events.ndjson", include_str!("../../../examples/tpch/streams/order_events.ndjson")),
    ("tests/audits.sql", include_str!("../../../examples/tpch/tests/audits.sql")),
    ("tests/unit.sql", include_str!("../../../examples/tpch/tests/unit.sql")),
    ("tests/fixtures/customer_clean.csv", include_str!("../../../examples/tpch/tests/fixtures/customer_clean.csv")),
];

const EMPTY_TOML: &str = "[project]\nname = \"NAME\"\n\n[storage]\nwarehouse = \"warehouse\"\nartifacts = \".kiln\"\n\n[profile]\ndefault = \"prod_fast\"\n";

/// Writes a new project into `dir` (created if missing). Refuses to overwrite an existing
/// kiln.toml. `example` is `None` for an empty project or `Some("tpch")`.
pub fn init(dir: &Path, example: Option<&str>) -> Result<Vec<String>, KilnError> {
    let files: Vec<(String, String)> = match example {
        None => {
            let name = dir.file_name().map_or("project".into(), |n| n.to_string_lossy().into_owned());
            vec![("kiln.toml".into(), EMPTY_TOML.replace("NAME", &name))]
        }
        Some("tpch") => TPCH_EXAMPLE.iter().map(|(p, t)| ((*p).to_owned(), (*t).to_owned())).collect(),
        Some(other) => return Err(KilnError::Usage(format!("unknown example `{other}` (available: tpch)"))),
    };
    if dir.join("kiln.toml").exists() {
        return Err(KilnError::Usage(format!("{} already has a kiln.toml", dir.display())));
    }
    let mut written = Vec::new();
    for (path, text) in files {
        let dest = dir.join(&path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|source| KilnError::Io { context: format!("cannot create {}", parent.display()), source })?;
        }
        std::fs::write(&dest, text)
            .map_err(|source| KilnError::Io { context: format!("cannot write {}", dest.display()), source })?;
        written.push(path);
    }
    Ok(written)
}
