//! `kiln init --example tpch` then `kiln build`, at a tiny scale factor.

use crate::{kiln, mask};

#[test]
fn example_builds_and_rebuilds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shop");
    let (code, out, err) = kiln(&["init", "--example", "tpch", dir.to_str().unwrap()], tmp.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("kiln.toml"), "{out}");
    let toml = std::fs::read_to_string(dir.join("kiln.toml")).unwrap();
    std::fs::write(dir.join("kiln.toml"), toml.replace("scale_factor = 0.1 ", "scale_factor = 0.01 ")).unwrap();

    let (code, out, err) = kiln(&["build", dir.to_str().unwrap()], tmp.path());
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    insta::assert_snapshot!("example_build_summary", mask(&out));

    // Nothing changed: a second build has nothing to do, and `plan` agrees.
    let (code, out2, err) = kiln(&["build", dir.to_str().unwrap()], tmp.path());
    assert_eq!(code, 0, "{err}");
    assert!(out2.contains("0 built, 6 fresh, 0 failed"), "{out2}");
    let plan = plan_json(&dir, tmp.path());
    let decisions: Vec<&str> =
        plan["products"].as_array().unwrap().iter().map(|p| p["decision"].as_str().unwrap()).collect();
    assert_eq!(decisions, ["fresh"; 6]);
    for p in plan["products"].as_array().unwrap() {
        assert_eq!(p["build_id"], p["current_build_id"]);
        for fp in ["schema_fp", "query_fp", "runtime_fp", "func_fp"] {
            assert_eq!(p["fingerprints"][fp].as_str().unwrap().len(), 64, "{fp}");
        }
    }
    assert!(plan["settings"]["performance"]["datafusion.execution.target_partitions"].is_string());
    // The plan above came from the compile cache; a cold compile (no cache, or a corrupt
    // one) decides the same.
    let cache = dir.join(".kiln/cache/compile.json");
    assert!(cache.exists());
    std::fs::write(&cache, "{ not json").unwrap();
    assert_eq!(plan_json(&dir, tmp.path())["products"], plan["products"]);
    std::fs::remove_file(&cache).unwrap();
    assert_eq!(plan_json(&dir, tmp.path())["products"], plan["products"]);

    // Performance settings do not change build ids; semantic ones do.
    let (code, out3, _) = kiln(
        &["plan", "--profile", "memory_limited", "--set", "datafusion.execution.batch_size=77", dir.to_str().unwrap()],
        tmp.path(),
    );
    assert_eq!(code, 0);
    assert!(out3.contains("0 to build, 6 fresh"), "{out3}");
    let (_, out4, _) =
        kiln(&["plan", "--set", "datafusion.execution.time_zone=+05:00", dir.to_str().unwrap()], tmp.path());
    assert!(out4.contains("6 to build, 0 fresh") && out4.contains("runtime settings changed"), "{out4}");
    // Rotating the PII key changes the functions of the product that hashes with it (and,
    // through its content, what reads it); products that never touch it stay fresh.
    let rotated = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["plan", dir.to_str().unwrap()])
        .env("KILN_PII_KEY", "a-rotated-key")
        .output()
        .unwrap();
    let rotated = String::from_utf8_lossy(&rotated.stdout);
    assert!(rotated.contains("customer_clean          build") && rotated.contains("functions changed"), "{rotated}");
    assert!(rotated.contains("orders_nested           fresh"), "{rotated}");

    // Lineage of the example's mart, through the staging product.
    let (code, json, err) =
        kiln(&["lineage", "revenue_by_nation_year.revenue", "--json", "-C", dir.to_str().unwrap()], tmp.path());
    assert_eq!(code, 0, "{err}");
    let lineage: serde_json::Value = serde_json::from_str(&json).unwrap();
    let cols = |kind: &str| -> Vec<String> {
        lineage["columns"][0][kind]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| format!("{}.{}", c["table"].as_str().unwrap(), c["column"].as_str().unwrap()))
            .collect()
    };
    assert_eq!(lineage["columns"].as_array().unwrap().len(), 1);
    assert_eq!(cols("value"), ["lineitem.l_discount", "lineitem.l_extendedprice"]);
    assert!(cols("join").contains(&"customer_clean.c_custkey".to_owned()), "{json}");
    assert_eq!(cols("group"), ["nation.n_name", "orders.o_orderdate", "region.r_name"]);

    // Change the staging product: it rebuilds with a semantic diff; its dependents rebuild
    // because it changed, naming the columns they read; the others stay fresh.
    let staging = dir.join("staging/customer_clean.sql");
    let sql = std::fs::read_to_string(&staging).unwrap();
    std::fs::write(&staging, sql.replace("FROM customer;", "FROM customer WHERE c_acctbal > 0;")).unwrap();
    let plan = plan_json(&dir, tmp.path());
    // Every decision and its reasons, as a user sees them (hashes masked).
    let (_, human, _) = kiln(&["plan", dir.to_str().unwrap()], tmp.path());
    insta::assert_snapshot!("example_plan_after_staging_change", mask_hex(&human));
    let by_name =
        |name: &str| plan["products"].as_array().unwrap().iter().find(|p| p["product"] == name).unwrap().clone();
    let staging_plan = by_name("customer_clean");
    assert_eq!(staging_plan["decision"], "build");
    let reason = &staging_plan["reasons"][0];
    assert_eq!(reason["kind"], "query_changed");
    assert_eq!(reason["diff"]["category"], "breaking");
    let summary = by_name("customer_order_summary");
    assert_eq!(summary["reasons"][0]["kind"], "upstream_changed");
    assert_eq!(summary["reasons"][0]["upstream"], "customer_clean");
    assert_eq!(summary["reasons"][0]["columns"], serde_json::json!(["c_custkey", "c_mktsegment", "c_nationkey"]));
    assert_eq!(by_name("orders_nested")["decision"], "fresh");
    let (code, out5, err) = kiln(&["build", dir.to_str().unwrap()], tmp.path());
    assert_eq!(code, 0, "{err}");
    assert!(out5.contains("4 built, 2 fresh"), "{out5}");
    assert!(out5.contains("customer_clean: query changed, breaking"), "{out5}");

    // Reformatting a product (case, whitespace, comments, alias names) changes nothing.
    let summary_sql = dir.join("marts/customer_order_summary.sql");
    let original = std::fs::read_to_string(&summary_sql).unwrap();
    let reformatted = format!(
        "/* reformatted */\n{}",
        original
            .replace("SELECT", "select")
            .replace("FROM", "from\n   ")
            .replace(" p.", " pc.")
            .replace(" p ON", " pc ON")
            .replace("JOIN", "join")
    );
    std::fs::write(&summary_sql, &reformatted).unwrap();
    let (_, out6, _) = kiln(&["plan", dir.to_str().unwrap()], tmp.path());
    assert!(out6.contains("0 to build, 6 fresh"), "{reformatted}\n{out6}");

    // An added column nobody downstream reads rebuilds only its product: segment_value
    // reads customer_order_summary, but not the new column.
    let widened = original.replace(
        "p.first_order, p.last_order",
        "p.first_order, p.last_order, p.total_spent / p.order_count AS avg_order",
    );
    std::fs::write(&summary_sql, &widened).unwrap();
    let plan = plan_json(&dir, tmp.path());
    let by_name =
        |name: &str| plan["products"].as_array().unwrap().iter().find(|p| p["product"] == name).unwrap().clone();
    let widened_plan = by_name("customer_order_summary");
    assert_eq!(widened_plan["decision"], "build");
    let kinds: Vec<&str> =
        widened_plan["reasons"].as_array().unwrap().iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["schema_changed", "query_changed"], "{widened_plan}");
    assert_eq!(widened_plan["reasons"][1]["diff"]["category"], "non_breaking", "{widened_plan}");
    assert_eq!(by_name("segment_value")["decision"], "fresh", "{plan}");
    let files_before = parquet_files(&dir.join("warehouse"));
    let (code, out7, err) = kiln(&["build", dir.to_str().unwrap()], tmp.path());
    assert_eq!(code, 0, "{err}");
    assert!(out7.contains("1 built, 5 fresh"), "{out7}");
    // The widened product's data, and its audit's failing rows (customer_order_summary__failures).
    assert_eq!(parquet_files(&dir.join("warehouse")), files_before + 2, "only the widened product wrote data");

    // And a no-op build writes no data file at all.
    let files_before = parquet_files(&dir.join("warehouse"));
    let (code, out8, _) = kiln(&["build", dir.to_str().unwrap()], tmp.path());
    assert_eq!(code, 0);
    assert!(out8.contains("0 built, 6 fresh"), "{out8}");
    assert_eq!(parquet_files(&dir.join("warehouse")), files_before);

    // init refuses to overwrite a project.
    let (code, _, err) = kiln(&["init", "--example", "tpch", dir.to_str().unwrap()], tmp.path());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("already has a kiln.toml"), "{err}");
}

/// `text` with every run of 12 or more hex digits replaced by `<hex>`.
fn mask_hex(text: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    for c in text.chars().chain(std::iter::once('\n')) {
        if c.is_ascii_hexdigit() {
            run.push(c);
            continue;
        }
        out.push_str(if run.len() >= 12 { "<hex>" } else { &run });
        run.clear();
        out.push(c);
    }
    out.pop();
    out
}

/// The number of Parquet files under `dir`.
fn parquet_files(dir: &std::path::Path) -> usize {
    let mut count = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if p.extension().is_some_and(|e| e == "parquet") {
            count += 1;
        }
    }
    count
}

fn plan_json(dir: &std::path::Path, cwd: &std::path::Path) -> serde_json::Value {
    let (code, out, err) = kiln(&["plan", "--json", dir.to_str().unwrap()], cwd);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn build_json_is_the_run_summary() {
    let tmp = tempfile::tempdir().unwrap();
    crate::write_files(
        tmp.path(),
        &[
            ("kiln.toml", "[project]\nname = \"j\"\n"),
            ("data/t.csv", "a,b\n1,x\n2,y\n3,z\n"),
            (
                "models.sql",
                "CREATE SOURCE t (a BIGINT NOT NULL, b VARCHAR) WITH (connector = 'files', path = 'data/', format = 'csv');\n\
                 CREATE PRODUCT evens AS SELECT a, b FROM t WHERE a % 2 = 0;",
            ),
        ],
    );
    let (code, out, err) = kiln(&["build", "--json", "."], tmp.path());
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["products"][0]["product"], "evens");
    assert_eq!(json["products"][0]["action"], "built");
    assert_eq!(json["products"][0]["rows"], 1);
    assert!(json.get("warnings").is_none(), "a run without warnings lists none: {json}");
    let phases = json["products"][0]["phases"].as_object().unwrap();
    let names: Vec<&str> = phases.keys().map(String::as_str).collect();
    assert_eq!(names, ["commit", "compile", "execute_write", "plan"]);

    // The build record: inputs, plans, per-operator metrics, lineage.
    let id = json["products"][0]["build_id"].as_str().unwrap();
    let record = std::fs::read_to_string(tmp.path().join(format!(".kiln/builds/evens/{id}.json"))).unwrap();
    let record: serde_json::Value = serde_json::from_str(&record).unwrap();
    assert_eq!(record["status"], "committed");
    assert!(record["plans"]["physical"].as_str().unwrap().contains("DataSourceExec"), "{record}");
    let operators = record["operators"].as_array().unwrap();
    assert!(operators.iter().any(|o| o["operator"] == "FilterExec" && o["output_rows"] == 1), "{record}");
    assert!(operators.iter().any(|o| o["output_bytes"].as_u64().is_some_and(|b| b > 0)), "{record}");
    assert_eq!(record["lineage"][0]["filter"][0]["column"], "a");
    assert!(record["plans"]["optimized_sql"].as_str().unwrap().contains("WHERE"), "{record}");

    // Telemetry events, one line each, as they happened.
    let run_id = json["run_id"].as_str().unwrap();
    let events = std::fs::read_to_string(tmp.path().join(format!(".kiln/runs/{run_id}/events.jsonl"))).unwrap();
    let kinds: Vec<String> = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["run_started", "product_finished", "run_finished"]);
    let finished: serde_json::Value = serde_json::from_str(events.lines().nth(1).unwrap()).unwrap();
    assert_eq!(finished["build_id"], id);
    assert_eq!(finished["ordering_tier"], 1);
    assert!(finished["fingerprints"]["query_fp"].is_string());
}

#[test]
fn the_pii_key_never_leaves_the_process() {
    let key = "kiln-test-key-7d3f9a1c52e84b06";
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shop");
    kiln(&["init", "--example", "tpch", dir.to_str().unwrap()], tmp.path());
    let toml = std::fs::read_to_string(dir.join("kiln.toml")).unwrap();
    std::fs::write(dir.join("kiln.toml"), toml.replace("scale_factor = 0.1 ", "scale_factor = 0.01 ")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "--json", dir.to_str().unwrap()])
        .env("KILN_PII_KEY", key)
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut searched = 0;
    let mut stack = vec![dir.join(".kiln"), dir.join("warehouse")];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            let bytes = std::fs::read(&p).unwrap();
            assert!(!bytes.windows(key.len()).any(|w| w == key.as_bytes()), "key found in {}", p.display());
            searched += 1;
        }
    }
    assert!(searched >= 13, "searched only {searched} files");
    for stream in [&out.stdout, &out.stderr] {
        assert!(!String::from_utf8_lossy(stream).contains(key));
    }
    // The env key was used, not the fallback: no warning, and hashes differ from a
    // fallback build.
    assert!(!String::from_utf8_lossy(&out.stderr).contains("fallback"));
}

#[test]
fn functions_catalog_lists_every_builtin() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, out, _) = kiln(&["functions"], tmp.path());
    assert_eq!(code, 0);
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/functions.md")).unwrap();
    assert!(docs.starts_with(&out), "docs/functions.md must start with `kiln functions` output; regenerate it");
    let (code, json, _) = kiln(&["functions", "--json"], tmp.path());
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let names: Vec<&str> = v["functions"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"kiln_pii_hash") && names.contains(&"json_get_str") && names.len() == 18, "{names:?}");
}

#[test]
fn query_diff_explain_rollback_gc() {
    let tmp = tempfile::tempdir().unwrap();
    crate::write_files(
        tmp.path(),
        &[
            ("kiln.toml", "[project]\nname = \"q\"\n"),
            ("data/t.csv", "a,b\n1,x\n2,y\n3,z\n4,w\n5,v\n6,u\n"),
            (
                "models.sql",
                "CREATE SOURCE t (a BIGINT NOT NULL, b VARCHAR) WITH (connector = 'files', path = 'data/', format = 'csv');\n\
                 CREATE PRODUCT evens ORDER BY (a) AS SELECT a, b FROM t WHERE a % 2 = 0;",
            ),
        ],
    );
    let dir = tmp.path();
    let run = |args: &[&str]| kiln(args, dir);
    assert_eq!(run(&["build", "."]).0, 0);

    // query: read-only SQL over committed products, in three formats.
    let (code, out, err) = run(&["query", "SELECT count(*) AS n, sum(a) AS s FROM evens", "--format", "csv"]);
    assert_eq!((code, out.as_str()), (0, "n,s\n3,12\n"), "{err}");
    let (_, out, _) = run(&["query", "SELECT a FROM evens ORDER BY a DESC LIMIT 1", "--format", "json"]);
    assert_eq!(out.trim(), r#"{"a":6}"#);
    let (_, out, _) = run(&["query", "SELECT b FROM evens WHERE a = 4"]);
    assert!(out.contains("| w |"), "{out}");
    for sql in ["COPY (SELECT 1) TO 'x.csv'", "SELECT * FROM 'data/t.csv'", "SET datafusion.execution.batch_size = 1"] {
        let (code, _, err) = run(&["query", sql]);
        assert_eq!(code, 1, "{sql}");
        assert!(err.contains("error: query: "), "{sql}: {err}");
    }

    // diff: unchanged, then a filter change.
    let (_, out, _) = run(&["diff", "evens"]);
    assert_eq!(out.trim(), "evens: unchanged since its committed build");
    let models = dir.join("models.sql");
    let sql = std::fs::read_to_string(&models).unwrap();
    std::fs::write(&models, sql.replace("a % 2 = 0", "a % 2 = 0 AND a > 2")).unwrap();
    let (code, out, err) = run(&["diff", "evens", "--json"]);
    assert_eq!(code, 0, "{err}");
    let diff: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(diff["diff"]["category"], "breaking");
    assert!(diff["diff"]["inserted"].as_u64().unwrap() + diff["diff"]["updated"].as_u64().unwrap() > 0, "{out}");

    // explain: plans, and with --analyze the metrics of running the new definition over the
    // committed inputs (4 and 6 pass the new filter).
    let (code, out, err) = run(&["explain", "evens", "--analyze", "--json"]);
    assert_eq!(code, 0, "{err}");
    let explain: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(explain["optimized"].as_str().unwrap().contains("Filter"), "{out}");
    assert!(explain["canonical"].as_str().unwrap().starts_with("kiln.query.v1"));
    assert_eq!(explain["operators"][0]["output_rows"], 2, "{out}");

    // rollback: build the change, then make the first build visible again; gc then deletes
    // the superseded second build, and reads still see the first.
    assert_eq!(run(&["build", "."]).0, 0);
    let (_, out, _) = run(&["query", "SELECT count(*) AS n FROM evens", "--format", "csv"]);
    assert_eq!(out, "n\n2\n");
    let (code, out, err) = run(&["rollback", "evens", "--json"]);
    assert_eq!(code, 0, "{err}");
    let rollback: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(rollback["to_run_id"].as_str().unwrap() < rollback["from_run_id"].as_str().unwrap());
    let (_, out, _) = run(&["query", "SELECT count(*) AS n FROM evens", "--format", "csv"]);
    assert_eq!(out, "n\n3\n");
    let (code, out, err) = run(&["gc", ".", "--json"]);
    assert_eq!(code, 0, "{err}");
    let gc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(gc["deleted"].as_array().unwrap().len(), 1, "{out}");
    assert_eq!(gc["kept"], 1);
    // The superseded build's record goes with it; the current build's stays.
    assert_eq!(gc["records"], 1, "{out}");
    let records: Vec<String> = std::fs::read_dir(tmp.path().join(".kiln/builds/evens"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(records, [format!("{}.json", rollback["to_build_id"].as_str().unwrap())]);
    let (_, out, _) = run(&["query", "SELECT count(*) AS n FROM evens", "--format", "csv"]);
    assert_eq!(out, "n\n3\n");
    let (code, _, err) = run(&["rollback", "evens"]);
    assert_eq!(code, 1);
    assert!(err.contains("no committed build before"), "{err}");
    // The definition still says a > 2, so the next build rebuilds it.
    let (_, out, _) = run(&["build", "."]);
    assert!(out.contains("1 built"), "{out}");
}

/// Initializes the example at scale factor 0.01 in `dir`.
pub(crate) fn small_example(dir: &std::path::Path, cwd: &std::path::Path) {
    let (code, _, err) = kiln(&["init", "--example", "tpch", dir.to_str().unwrap()], cwd);
    assert_eq!(code, 0, "{err}");
    let toml = std::fs::read_to_string(dir.join("kiln.toml")).unwrap();
    std::fs::write(dir.join("kiln.toml"), toml.replace("scale_factor = 0.1 ", "scale_factor = 0.01 ")).unwrap();
}

/// Every product's rows as sorted JSON lines (an order-independent rendering).
fn contents(dir: &std::path::Path, cwd: &std::path::Path, products: &[&str]) -> Vec<Vec<String>> {
    products
        .iter()
        .map(|p| {
            let sql = format!("SELECT * FROM {p}");
            let (code, out, err) = kiln(&["query", &sql, "--format", "json", "-C", dir.to_str().unwrap()], cwd);
            assert_eq!(code, 0, "{p}: {err}");
            let mut lines: Vec<String> = out.lines().map(str::to_owned).collect();
            lines.sort();
            lines
        })
        .collect()
}

#[test]
fn a_killed_build_leaves_a_consistent_state_and_the_next_build_finishes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (clean, killed) = (tmp.path().join("clean"), tmp.path().join("killed"));
    small_example(&clean, tmp.path());
    small_example(&killed, tmp.path());
    assert_eq!(kiln(&["build", clean.to_str().unwrap()], tmp.path()).0, 0);

    // Kill a build once its first product is committed (SIGKILL: no cleanup runs).
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", killed.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let first = killed.join("warehouse/customer_clean/_delta_log/00000000000000000000.json");
    let started = std::time::Instant::now();
    while !first.exists() && started.elapsed() < std::time::Duration::from_secs(120) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // Consistent: plan works, and every committed product reads back completely.
    let (code, out, err) = kiln(&["plan", "--json", killed.to_str().unwrap()], tmp.path());
    assert_eq!(code, 0, "{err}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    let committed: Vec<String> = plan["products"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["current_build_id"].is_string())
        .map(|p| p["product"].as_str().unwrap().to_owned())
        .collect();
    assert!(committed.contains(&"customer_clean".to_owned()), "{out}");
    let committed: Vec<&str> = committed.iter().map(String::as_str).collect();
    assert_eq!(contents(&killed, tmp.path(), &committed), contents(&clean, tmp.path(), &committed));

    // The next build finishes the job: what was committed is fresh, the rest is built, and
    // every product equals the clean build's.
    let (code, out, err) = kiln(&["build", "--json", killed.to_str().unwrap()], tmp.path());
    assert_eq!(code, 0, "{err}");
    let resumed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let fresh = resumed["products"].as_array().unwrap().iter().filter(|p| p["action"] == "fresh").count();
    let built = resumed["products"].as_array().unwrap().iter().filter(|p| p["action"] == "built").count();
    assert!(fresh >= 1 && built >= 1, "the kill must have landed midway: {out}");
    let all = [
        "customer_clean",
        "customer_order_summary",
        "revenue_by_nation_year",
        "segment_value",
        "orders_nested",
        "order_items",
    ];
    assert_eq!(contents(&killed, tmp.path(), &all), contents(&clean, tmp.path(), &all));
    // (Build ids differ between the two projects: each generated its own data files, and
    // a source's data version includes their modification times.)
    // And gc removes whatever the killed build left uncommitted.
    let (code, out, _) = kiln(&["gc", "--json", killed.to_str().unwrap()], tmp.path());
    assert_eq!(code, 0);
    let gc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(gc["deleted"].as_array().unwrap().iter().all(|d| d["committed"] == false), "{out}");
    // It leaves no empty directory behind, and the next gc has nothing left to do.
    fn empty_dirs(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        let entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        if entries.is_empty() {
            out.push(dir.to_owned());
        }
        entries.iter().filter(|p| p.is_dir()).for_each(|p| empty_dirs(p, out));
    }
    let mut left = Vec::new();
    empty_dirs(&killed.join("warehouse"), &mut left);
    assert!(left.is_empty(), "empty directories after gc: {left:?}");
    let (code, out, _) = kiln(&["gc", "--json", killed.to_str().unwrap()], tmp.path());
    assert_eq!(code, 0);
    let again: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((again["deleted"].as_array().unwrap().len(), &again["empty_dirs"]), (0, &serde_json::json!(0)), "{out}");
}

/// With the `substrait` feature, every build record points at its plan's Substrait bytes.
#[cfg(feature = "substrait")]
#[test]
fn build_records_carry_substrait_plans() {
    let tmp = tempfile::tempdir().unwrap();
    crate::write_files(
        tmp.path(),
        &[
            ("kiln.toml", "[project]\nname = \"s\"\n"),
            ("data/t.csv", "a,b\n1,x\n2,y\n"),
            (
                "models.sql",
                "CREATE SOURCE t (a BIGINT NOT NULL, b VARCHAR) WITH (connector = 'files', path = 'data/', format = 'csv');\n\
                 CREATE PRODUCT p AS SELECT a, upper(b) AS b FROM t WHERE a > 1;",
            ),
        ],
    );
    let (code, out, err) = kiln(&["build", "--json", "."], tmp.path());
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = summary["products"][0]["build_id"].as_str().unwrap();
    let records = tmp.path().join(".kiln/builds/p");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(records.join(format!("{id}.json"))).unwrap()).unwrap();
    // A content-addressed blob: its name is the sha256 of its bytes.
    let sha = record["substrait"].as_str().expect("a substrait blob");
    let bytes = std::fs::read(tmp.path().join(".kiln/blobs").join(&sha[..2]).join(sha)).unwrap();
    assert_eq!(format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(&bytes)), sha);
    // A protobuf Plan naming the table it reads and the function it calls.
    assert!(bytes.len() > 50);
    assert!(String::from_utf8_lossy(&bytes).contains("upper"), "{bytes:?}");
}

/// Same inputs and build id -> byte-identical data files (tier 3: ORDER BY), and the
/// manifest describes each file from its footer.
#[test]
fn a_rebuild_with_the_same_build_id_is_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let rows: String = (0..500).map(|i| format!("{},{},n{}\n", (i * 37) % 500, i % 7, i % 11)).collect();
    crate::write_files(
        tmp.path(),
        &[
            ("kiln.toml", "[project]\nname = \"d\"\n"),
            ("data/t.csv", &format!("a,g,s\n{rows}")),
            (
                "models.sql",
                "CREATE SOURCE t (a BIGINT NOT NULL, g BIGINT, s VARCHAR) WITH (connector = 'files', path = 'data/', format = 'csv');\n\
                 CREATE PRODUCT p ORDER BY (g, a DESC) WITH (max_rows_per_file = 120) AS SELECT a, g, upper(s) AS s FROM t;",
            ),
        ],
    );
    let build = || {
        let (code, out, err) = kiln(&["build", "--json", "."], tmp.path());
        assert_eq!(code, 0, "{err}");
        let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
        let run = summary["run_id"].as_str().unwrap().to_owned();
        (summary["products"][0]["build_id"].as_str().unwrap().to_owned(), run)
    };
    let files = |run: &str| -> Vec<(String, Vec<u8>)> {
        let dir = tmp.path().join("warehouse/p/builds").join(run);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".parquet"))
            .collect();
        names.sort();
        names.into_iter().map(|n| (n.clone(), std::fs::read(dir.join(&n)).unwrap())).collect()
    };
    let (id1, run1) = build();
    let manifest = crate::current_manifest(tmp.path(), "p");
    // 500 rows in files of at most 120; the first file holds g = 0 (72 rows) and g = 1.
    assert_eq!(manifest["files"].as_array().unwrap().len(), 5, "{manifest}");
    assert_eq!(manifest["ordering_tier"], 3);
    assert_eq!(manifest["files"][0]["columns"]["g"]["min"], "0");
    assert_eq!(manifest["files"][0]["columns"]["g"]["max"], "1");
    assert_eq!(manifest["files"][4]["columns"]["g"]["max"], "6");
    assert_eq!(manifest["files"][0]["columns"]["a"]["nulls"], 0);
    // Forget the commit (as if the warehouse had been restored from before it): the next
    // build has the same build id, writes a new build directory, and the same bytes.
    std::fs::remove_dir_all(tmp.path().join("warehouse/p/_delta_log")).unwrap();
    let (id2, run2) = build();
    assert_eq!(id1, id2);
    assert_ne!(run1, run2);
    let (first, second) = (files(&run1), files(&run2));
    assert_eq!(first.len(), 5);
    assert_eq!(first, second, "same inputs and build id must give byte-identical files");
}

/// existing_data = 'append' keeps every committed row and adds the build's;
/// 'delete_matching' replaces only the partitions the build writes; gc keeps the earlier
/// build directories the current manifests still list.
#[test]
fn append_and_delete_matching_keep_committed_files() {
    let tmp = tempfile::tempdir().unwrap();
    crate::write_files(
        tmp.path(),
        &[
            ("kiln.toml", "[project]\nname = \"inc\"\n"),
            ("data/1.csv", "id,day,v\n1,1,10\n2,1,20\n3,1,30\n"),
            (
                "models.sql",
                "CREATE SOURCE t (id BIGINT NOT NULL, day BIGINT NOT NULL, v BIGINT) WITH (connector = 'files', path = 'data/', format = 'csv');
                 CREATE PRODUCT log WITH (existing_data = 'append') AS SELECT id, day, v FROM t;
                 CREATE PRODUCT by_day PARTITIONED BY (day) WITH (existing_data = 'delete_matching') AS SELECT id, day, v FROM t;",
            ),
        ],
    );
    let build = || {
        let (code, out, err) = kiln(&["build", "."], tmp.path());
        assert_eq!(code, 0, "{out}{err}");
    };
    let count = |product: &str| -> String {
        let sql = format!("SELECT count(*) AS n, coalesce(sum(v), 0) AS s FROM {product}");
        let (code, out, err) = kiln(&["query", &sql, "--format", "csv"], tmp.path());
        assert_eq!(code, 0, "{err}");
        out.lines().nth(1).unwrap().to_owned()
    };
    build();
    assert_eq!((count("log"), count("by_day")), ("3,60".into(), "3,60".into()));

    // New data: day 1 corrected (one row), day 2 new.
    std::fs::remove_file(tmp.path().join("data/1.csv")).unwrap();
    std::fs::write(tmp.path().join("data/2.csv"), "id,day,v\n4,1,1\n5,2,2\n6,2,3\n").unwrap();
    build();
    assert_eq!(count("log"), "6,66"); // 3 + 3 rows
    assert_eq!(count("by_day"), "3,6"); // day 1 replaced by one row, day 2 added

    // Only day 3 now: the other days stay as committed.
    std::fs::remove_file(tmp.path().join("data/2.csv")).unwrap();
    std::fs::write(tmp.path().join("data/3.csv"), "id,day,v\n7,3,100\n").unwrap();
    build();
    assert_eq!(count("log"), "7,166");
    assert_eq!(count("by_day"), "4,106");
    let (_, out, _) = kiln(
        &["query", "SELECT day, count(*) AS n FROM by_day GROUP BY day ORDER BY day", "--format", "csv"],
        tmp.path(),
    );
    assert_eq!(out, "day,n\n1,1\n2,2\n3,1\n");
    // Filters on partition columns skip the other directories' files (the plan lists the
    // files it reads); filters that also read other columns prune nothing and stay right.
    let (_, plan, _) =
        kiln(&["query", "EXPLAIN SELECT count(*) FROM by_day WHERE day = 2", "--format", "csv"], tmp.path());
    assert!(plan.contains("day=2/") && !plan.contains("day=1/") && !plan.contains("day=3/"), "{plan}");
    let (_, out, _) =
        kiln(&["query", "SELECT count(*) AS n FROM by_day WHERE day >= 2", "--format", "csv"], tmp.path());
    assert_eq!(out, "n\n3\n");
    let (_, out, _) =
        kiln(&["query", "SELECT count(*) AS n FROM by_day WHERE day = 2 OR v > 50", "--format", "csv"], tmp.path());
    assert_eq!(out, "n\n3\n");

    // gc deletes nothing the current manifests list: reads are unchanged.
    let (code, out, err) = kiln(&["gc", "--json", "."], tmp.path());
    assert_eq!(code, 0, "{err}");
    let gc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let deleted: Vec<&str> = gc["deleted"].as_array().unwrap().iter().map(|d| d["product"].as_str().unwrap()).collect();
    // by_day's first build only held day 1, which the second build replaced.
    assert_eq!(deleted, ["by_day"], "{out}");
    assert_eq!((count("log"), count("by_day")), ("7,166".into(), "4,106".into()));

    // delete_matching without partitions is a located compile error.
    std::fs::write(
        tmp.path().join("bad.sql"),
        "CREATE PRODUCT bad WITH (existing_data = 'delete_matching') AS SELECT id FROM t;",
    )
    .unwrap();
    let (code, _, err) = kiln(&["build", "."], tmp.path());
    assert_eq!(code, 1);
    assert!(err.contains("bad.sql:1:1") && err.contains("it needs PARTITIONED BY"), "{err}");
}

/// A build killed at each point of the write and commit protocol (`KILN_FAILPOINT`
/// aborts the process there, like a kill) leaves the previous build readable and nothing
/// of its own visible; the next build completes, and gc reclaims what the killed ones left.
#[test]
fn a_build_killed_at_any_write_or_commit_point_leaves_the_previous_build() {
    let tmp = tempfile::tempdir().unwrap();
    let rows = |n: i64, k: i64| -> String { (0..n).map(|i| format!("{i},{}\n", i * k)).collect() };
    crate::write_files(
        tmp.path(),
        &[
            ("kiln.toml", "[project]\nname = \"crash\"\n"),
            ("data/t.csv", &format!("a,b\n{}", rows(100, 1))),
            (
                "models.sql",
                "CREATE SOURCE t (a BIGINT NOT NULL, b BIGINT) WITH (connector = 'files', path = 'data/', format = 'csv');
                 CREATE PRODUCT p ORDER BY (a) WITH (max_rows_per_file = 30) AS SELECT a, b FROM t;",
            ),
        ],
    );
    let query = || {
        let (code, out, err) =
            kiln(&["query", "SELECT count(*) AS n, sum(b) AS s FROM p", "--format", "csv"], tmp.path());
        assert_eq!(code, 0, "{err}");
        out.lines().nth(1).unwrap().to_owned()
    };
    assert_eq!(kiln(&["build", "."], tmp.path()).0, 0);
    assert_eq!(query(), "100,4950");

    // New data: 100 rows with b = 2a.
    std::fs::write(tmp.path().join("data/t.csv"), format!("a,b\n{}", rows(100, 2))).unwrap();
    for point in ["after_file", "before_commit"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["build", "."])
            .env("KILN_FAILPOINT", point)
            .current_dir(tmp.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{point}: the build should have been killed");
        assert_eq!(query(), "100,4950", "{point}: the previous build must stay the visible one");
    }
    // Killed right after its Delta commit: the new build is complete and visible.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "."])
        .env("KILN_FAILPOINT", "after_commit")
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(query(), "100,9900");
    // The next build finds it committed: nothing to do.
    let (code, out, err) = kiln(&["build", "."], tmp.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 fresh"), "{out}");

    // gc: the first build (superseded) and the two killed builds' leftovers.
    let (code, out, err) = kiln(&["gc", "--json", "."], tmp.path());
    assert_eq!(code, 0, "{err}");
    let gc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let deleted = gc["deleted"].as_array().unwrap();
    let committed: Vec<bool> = deleted.iter().map(|d| d["committed"].as_bool().unwrap()).collect();
    // Killed before their commit, after_file and before_commit are in no version.
    assert_eq!(committed.iter().filter(|c| !**c).count(), 2, "{out}");
    assert_eq!(committed.len(), 3, "{out}");
    assert_eq!(query(), "100,9900");
}

/// A source laid out in Hive directories: the partition columns come from the paths, a
/// filter on them reads only the matching directories, and a new directory is new data.
#[test]
fn hive_partitioned_sources_read_partition_values_from_paths() {
    let tmp = tempfile::tempdir().unwrap();
    crate::write_files(
        tmp.path(),
        &[
            ("kiln.toml", "[project]\nname = \"hive\"\n"),
            ("data/year=2023/region=eu/a.csv", "a,b\n1,x\n2,y\n"),
            ("data/year=2023/region=us/a.csv", "a,b\n3,z\n"),
            ("data/year=2024/region=eu/a.csv", "a,b\n4,w\n5,v\n6,u\n"),
            (
                "models.sql",
                "CREATE SOURCE t (a BIGINT NOT NULL, b VARCHAR, year INT, region VARCHAR)
                   WITH (connector = 'files', path = 'data/', format = 'csv', partitioned_by = 'year, region');
                 CREATE PRODUCT per_year ORDER BY (year, region) AS
                   SELECT year, region, count(*) AS n, sum(a) AS s FROM t GROUP BY year, region;
                 CREATE PRODUCT recent ORDER BY (a) AS SELECT a, b FROM t WHERE year = 2024;",
            ),
        ],
    );
    let (code, out, err) = kiln(&["build", "."], tmp.path());
    assert_eq!(code, 0, "{out}{err}");
    let csv = |sql: &str| kiln(&["query", sql, "--format", "csv"], tmp.path()).1;
    assert_eq!(csv("SELECT * FROM per_year"), "year,region,n,s\n2023,eu,2,3\n2023,us,1,3\n2024,eu,3,15\n");
    assert_eq!(csv("SELECT * FROM recent"), "a,b\n4,w\n5,v\n6,u\n");
    // A new partition directory is a new data version: both products rebuild.
    crate::write_files(tmp.path(), &[("data/year=2024/region=us/a.csv", "a,b\n7,t\n")]);
    let (_, out, _) = kiln(&["build", "."], tmp.path());
    assert!(out.contains("2 built"), "{out}");
    assert_eq!(csv("SELECT count(*) AS n FROM recent"), "n\n4\n");

    // Partition columns must be declared last, in directory order.
    std::fs::write(
        tmp.path().join("models.sql"),
        "CREATE SOURCE t (year INT, a BIGINT NOT NULL, b VARCHAR, region VARCHAR)
           WITH (connector = 'files', path = 'data/', format = 'csv', partitioned_by = 'year, region');
         CREATE PRODUCT p AS SELECT a FROM t;",
    )
    .unwrap();
    let (code, _, err) = kiln(&["build", "."], tmp.path());
    assert_ne!(code, 0);
    assert!(err.contains("the partition columns must be the last declared columns"), "{err}");
}

/// Parquet write options of a product reach the files (read back from their footers),
/// are recorded in the manifest, and a bad value is a located option error.
#[test]
fn write_options_reach_the_files() {
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    let tmp = tempfile::tempdir().unwrap();
    let rows: String = (0..450).map(|i| format!("{i},s{}\n", i % 9)).collect();
    crate::write_files(
        tmp.path(),
        &[
            ("kiln.toml", "[project]\nname = \"w\"\n"),
            ("data/t.csv", &format!("a,b\n{rows}")),
            (
                "models.sql",
                "CREATE SOURCE t (a BIGINT NOT NULL, b VARCHAR) WITH (connector = 'files', path = 'data/', format = 'csv');
                 CREATE PRODUCT p ORDER BY (a) WITH (compression = 'snappy; b: zstd(5)', max_rows_per_row_group = 100,
                   bloom_filter_columns = 'a', statistics = 'chunk; b: none', dictionary = 'a: false',
                   basename_template = 'data-{build_id}-{partition}-{seq}') AS SELECT a, b FROM t;",
            ),
        ],
    );
    let (code, out, err) = kiln(&["build", "."], tmp.path());
    assert_eq!(code, 0, "{out}{err}");
    let manifest = crate::current_manifest(tmp.path(), "p");
    assert_eq!(manifest["write_options"]["compression"], "snappy; b: zstd(5)");
    let file = manifest["files"][0]["path"].as_str().unwrap();
    let build_id = manifest["build_id"].as_str().unwrap();
    assert!(file.ends_with(&format!("/data-{build_id}-00000-00000.parquet")), "{file}");
    let path = tmp.path().join("warehouse").join(file);
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let meta = reader.metadata();
    assert_eq!(meta.num_row_groups(), 5, "450 rows in row groups of 100");
    let group = meta.row_group(0);
    assert_eq!(group.column(0).compression().to_string(), "SNAPPY");
    // (Footers record the codec, not its level.)
    assert!(group.column(1).compression().to_string().starts_with("ZSTD"));
    assert!(group.column(0).bloom_filter_offset().is_some(), "a has a bloom filter");
    assert!(group.column(1).bloom_filter_offset().is_none(), "b has none");
    assert!(group.column(0).statistics().is_some(), "a has chunk statistics");
    assert!(group.column(1).statistics().is_none(), "b has none");
    assert!(group.column(0).column_index_offset().is_none(), "chunk statistics write no page index");
    let encodings = |c: usize| format!("{:?}", group.column(c).encodings().collect::<Vec<_>>());
    assert!(!encodings(0).contains("DICTIONARY"), "a is not dictionary-encoded: {}", encodings(0));
    assert!(encodings(1).contains("DICTIONARY"), "b is: {}", encodings(1));

    std::fs::write(
        tmp.path().join("models.sql"),
        "CREATE SOURCE t (a BIGINT NOT NULL, b VARCHAR) WITH (connector = 'files', path = 'data/', format = 'csv');
         CREATE PRODUCT p WITH (compression = 'zip') AS SELECT a FROM t;",
    )
    .unwrap();
    let (code, _, err) = kiln(&["build", "."], tmp.path());
    assert_eq!(code, 1);
    assert!(err.contains("models.sql:2:33: invalid option: compression = 'zip': expected a Parquet codec"), "{err}");
}

/// Ordering tier 2 keeps the producer's order: with one partition, the files in manifest
/// order hold the source's rows in file order (tier 1 spreads batches over writers, so it
/// does not); the manifest says which tier it is.
#[test]
fn tier_two_keeps_the_producer_order() {
    let tmp = tempfile::tempdir().unwrap();
    // Ids in a scrambled but known order, many batches' worth.
    let ids: Vec<u64> = (0..20_000u64).map(|i| (i * 7919) % 20_000).collect();
    let rows: String = ids.iter().map(|i| format!("{i},{}\n", i % 10)).collect();
    crate::write_files(
        tmp.path(),
        &[
            ("kiln.toml", "[project]\nname = \"t2\"\n"),
            ("data/t.csv", &format!("id,v\n{rows}")),
            (
                "models.sql",
                "CREATE SOURCE t (id BIGINT NOT NULL, v BIGINT) WITH (path = 'data/', format = 'csv');
                 CREATE PRODUCT kept WITH (ordering_tier = '2', max_rows_per_file = 3000) AS SELECT id FROM t WHERE v <> 3;
                 CREATE PRODUCT spread WITH (max_rows_per_file = 3000) AS SELECT id FROM t WHERE v <> 3;",
            ),
        ],
    );
    let (code, out, err) = kiln(&["build", ".", "--set", "datafusion.execution.target_partitions=1"], tmp.path());
    assert_eq!(code, 0, "{out}{err}");
    let expected: Vec<u64> = ids.iter().copied().filter(|i| i % 10 != 3).collect();
    let in_file_order = |product: &str| -> Vec<u64> {
        let manifest = crate::current_manifest(tmp.path(), product);
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut out = Vec::new();
        for file in crate::manifest_files(tmp.path(), &manifest) {
            let batches = rt.block_on(async {
                let ctx = datafusion::prelude::SessionContext::new();
                ctx.read_parquet(file, Default::default()).await.unwrap().collect().await.unwrap()
            });
            for b in batches {
                let col = b.column(0).as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().unwrap();
                out.extend(col.values().iter().map(|v| *v as u64));
            }
        }
        out
    };
    assert_eq!(crate::current_manifest(tmp.path(), "kept")["ordering_tier"], 2);
    assert_eq!(in_file_order("kept"), expected);
    let spread = in_file_order("spread");
    assert_ne!(spread, expected, "tier 1 is free to reorder");
    let (mut a, mut b) = (spread, expected);
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b, "but keeps every row");
}

/// `kiln produce` appends stdin's records to a topic as immutable segments: keyed records
/// keep their partition, offsets continue across calls, the partition count is fixed.
#[test]
fn produce_appends_segments_to_topics() {
    let tmp = tempfile::tempdir().unwrap();
    crate::write_files(tmp.path(), &[("kiln.toml", "[project]\nname = \"p\"\n")]);
    let produce = |args: &[&str], input: &str| crate::produce(tmp.path(), args, input);
    let input: String = (0..10).map(|i| format!("{{\"user\": \"u{}\", \"i\": {i}}}\n", i % 3)).collect();
    let (code, out) = produce(&["clicks", "--partitions", "2", "--key", "user"], &input);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = produce(&["clicks", "--key", "user"], "{\"user\": \"u1\", \"i\": 10}\n\nnot json\n");
    assert_eq!(code, Some(0), "{out}");
    let topic = tmp.path().join("warehouse/_topics/clicks");
    let by_partition: Vec<Vec<String>> = (0..2)
        .map(|p| {
            let mut segments: Vec<_> =
                std::fs::read_dir(topic.join(p.to_string())).unwrap().map(|e| e.unwrap().path()).collect();
            segments.sort();
            segments
                .iter()
                .flat_map(|s| std::fs::read_to_string(s).unwrap().lines().map(str::to_owned).collect::<Vec<_>>())
                .collect()
        })
        .collect();
    // Every record once; each user's records in one partition, in input order.
    let all: usize = by_partition.iter().map(Vec::len).sum();
    assert_eq!(all, 12, "{by_partition:?}");
    for user in ["u0", "u1", "u2"] {
        let holders: Vec<usize> =
            (0..2).filter(|&p| by_partition[p].iter().any(|l| l.contains(&format!("\"{user}\"")))).collect();
        assert_eq!(holders.len(), 1, "{user}: {by_partition:?}");
        let seen: Vec<&String> =
            by_partition[holders[0]].iter().filter(|l| l.contains(&format!("\"{user}\""))).collect();
        let mut sorted = seen.clone();
        sorted.sort_by_key(|l| l.split("\"i\": ").nth(1).unwrap().trim_end_matches('}').parse::<u32>().unwrap());
        assert_eq!(seen, sorted, "{user}");
    }
    assert!(by_partition.iter().flatten().any(|l| l == "not json"), "the log keeps raw records");
    let (code, out) = produce(&["clicks", "--partitions", "3"], "{}\n");
    assert_eq!(code, Some(1));
    assert!(out.contains("topic `clicks` has 2 partition(s), not 3"), "{out}");
}

/// A product over a `log` source ingests the topic from the offsets its manifest
/// committed: records produced later are appended, malformed ones rejected with their
/// partition and offset.
#[test]
fn products_ingest_log_topics() {
    let tmp = tempfile::tempdir().unwrap();
    crate::write_files(
        tmp.path(),
        &[
            ("kiln.toml", "[project]\nname = \"p\"\n"),
            (
                "models.sql",
                "CREATE SOURCE clicks (user VARCHAR NOT NULL, n BIGINT) WITH (connector = 'log', topic = 'clicks', on_error = 'reject', batch_records = '3');
                 CREATE PRODUCT raw_clicks AS SELECT user, n FROM clicks;
                 CREATE PRODUCT per_user ORDER BY (user) AS SELECT user, sum(n) AS total FROM raw_clicks GROUP BY user;",
            ),
        ],
    );
    let produce = |args: &[&str], input: &str| assert_eq!(crate::produce(tmp.path(), args, input).0, Some(0));
    produce(
        &["clicks", "--partitions", "2"],
        "{\"user\": \"a\", \"n\": 1}\n{\"user\": \"b\", \"n\": 2}\n{\"n\": 3}\n{\"user\": \"a\", \"n\": 4}\n",
    );
    let (code, out, err) = kiln(&["build", "."], tmp.path());
    assert_eq!(code, 0, "{out}{err}");
    let (_, out, _) = kiln(&["query", "SELECT user, total FROM per_user", "--format", "csv"], tmp.path());
    assert_eq!(out, "user,total\na,5\nb,2\n");
    // Round-robin: lines 0 and 2 in partition 0, 1 and 3 in partition 1; `{"n": 3}` is
    // partition 0's offset 1.
    let rejected = crate::current_manifest(tmp.path(), "raw_clicks__rejected");
    let rows = crate::read_rows(crate::manifest_files(tmp.path(), &rejected), &["file", "line", "reason"], "line");
    assert_eq!(rows, ["| log://clicks/0 | 1 | column `user` is NOT NULL but the field is empty |"]);

    produce(&["clicks"], "{\"user\": \"b\", \"n\": 10}\n");
    let (code, out, err) = kiln(&["build", "."], tmp.path());
    assert_eq!(code, 0, "{out}{err}");
    let (_, out, _) = kiln(&["query", "SELECT user, total FROM per_user", "--format", "csv"], tmp.path());
    assert_eq!(out, "user,total\na,5\nb,12\n");
    let manifest = crate::current_manifest(tmp.path(), "raw_clicks");
    assert_eq!(manifest["positions"]["clicks"]["offsets"], serde_json::json!({"0": 3, "1": 2}));
    assert_eq!(manifest["totals"]["rows_written"], 4);
    assert_eq!(manifest["totals"]["rows_rejected"], 1);
}

/// GROUP BY TUMBLE(...) and HOP(...) with their _START/_END bounds, in batch products
/// (hand-computed windows: epoch-aligned, half-open), and located errors.
#[test]
fn tumble_and_hop_windows_in_products() {
    let tmp = tempfile::tempdir().unwrap();
    let events = "ts,user,amount\n2024-01-01T00:00:01,a,1\n2024-01-01T00:00:04,b,2\n2024-01-01T00:00:09,a,3\n\
                  2024-01-01T00:00:10,a,4\n2024-01-01T00:00:15,b,5\n2024-01-01T00:00:27,a,6\n";
    crate::write_files(
        tmp.path(),
        &[
            ("kiln.toml", "[project]\nname = \"w\"\n"),
            ("data/e.csv", events),
            (
                "models.sql",
                "CREATE SOURCE e (ts TIMESTAMP NOT NULL, user VARCHAR, amount BIGINT) WITH (path = 'data/', format = 'csv');
                 CREATE PRODUCT tumbling ORDER BY (w, user) AS
                   SELECT TUMBLE_START(ts, INTERVAL '10' SECOND) AS w, TUMBLE_END(ts, INTERVAL '10' SECOND) AS w_end,
                          user, count(*) AS n, sum(amount) AS total
                   FROM e GROUP BY TUMBLE(ts, INTERVAL '10' SECOND), user;
                 CREATE PRODUCT hopping ORDER BY (w) AS
                   SELECT HOP_START(ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND) AS w,
                          HOP_END(ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND) AS w_end, count(*) AS n
                   FROM e WHERE amount > 0 GROUP BY HOP(ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND);",
            ),
        ],
    );
    let (code, out, err) = kiln(&["build", "."], tmp.path());
    assert_eq!(code, 0, "{out}{err}");
    let (_, out, _) = kiln(&["query", "SELECT w, w_end, user, n, total FROM tumbling", "--format", "csv"], tmp.path());
    assert_eq!(
        out,
        "w,w_end,user,n,total\n\
         2024-01-01T00:00:00,2024-01-01T00:00:10,a,2,4\n\
         2024-01-01T00:00:00,2024-01-01T00:00:10,b,1,2\n\
         2024-01-01T00:00:10,2024-01-01T00:00:20,a,1,4\n\
         2024-01-01T00:00:10,2024-01-01T00:00:20,b,1,5\n\
         2024-01-01T00:00:20,2024-01-01T00:00:30,a,1,6\n"
    );
    // Each event is in the two 10 s windows starting at multiples of 5 s that hold it.
    let (_, out, _) = kiln(&["query", "SELECT w, w_end, n FROM hopping", "--format", "csv"], tmp.path());
    assert_eq!(
        out,
        "w,w_end,n\n\
         2023-12-31T23:59:55,2024-01-01T00:00:05,2\n\
         2024-01-01T00:00:00,2024-01-01T00:00:10,3\n\
         2024-01-01T00:00:05,2024-01-01T00:00:15,2\n\
         2024-01-01T00:00:10,2024-01-01T00:00:20,2\n\
         2024-01-01T00:00:15,2024-01-01T00:00:25,1\n\
         2024-01-01T00:00:20,2024-01-01T00:00:30,1\n\
         2024-01-01T00:00:25,2024-01-01T00:00:35,1\n"
    );

    for (query, expected) in [
        (
            "SELECT TUMBLE_START(ts, INTERVAL '5' SECOND) AS w FROM e GROUP BY TUMBLE(ts, INTERVAL '10' SECOND)",
            "models.sql:2:30: product `bad`: TUMBLE_START must repeat the arguments of the GROUP BY window",
        ),
        (
            "SELECT count(*) AS n FROM e GROUP BY TUMBLE(ts, INTERVAL '10' SECOND), HOP(ts, INTERVAL '1' SECOND, INTERVAL '2' SECOND)",
            "models.sql:2:94: product `bad`: one window per SELECT: GROUP BY has two",
        ),
        (
            "SELECT count(*) AS n FROM e GROUP BY TUMBLE(ts)",
            "models.sql:2:60: product `bad`: expected TUMBLE(ts, size), found 1 argument(s)",
        ),
        (
            "SELECT count(*) AS n FROM e GROUP BY TUMBLE(ts, INTERVAL '0' SECOND)",
            "models.sql:2:60: product `bad`: window interval `INTERVAL '0' SECOND` must be positive",
        ),
        (
            "SELECT count(*) AS n FROM e GROUP BY HOP(ts, INTERVAL '10' SECOND, INTERVAL '5' SECOND)",
            "models.sql:2:60: product `bad`: HOP slide `INTERVAL '10' SECOND` exceeds its size `INTERVAL '5' SECOND`",
        ),
        (
            "SELECT count(*) AS n FROM e GROUP BY TUMBLE(user, INTERVAL '10' SECOND)",
            "kiln_tumble_start: `ts` must be a timestamp, got Utf8View",
        ),
    ] {
        let sql = format!(
            "CREATE SOURCE e (ts TIMESTAMP NOT NULL, user VARCHAR, amount BIGINT) WITH (path = 'data/', format = 'csv');\nCREATE PRODUCT bad AS {query};\n"
        );
        std::fs::write(tmp.path().join("models.sql"), sql).unwrap();
        let (code, _, err) = kiln(&["build", "."], tmp.path());
        assert_eq!(code, 1, "{query}");
        assert!(err.contains(expected), "{query}:\n{err}");
    }
}

/// README.md's "Streams" walk-through, run as written: the example's stream and views,
/// `kiln produce`, `kiln stream --until-idle`, and the tables it shows (hand-checked).
#[test]
fn readme_stream_walkthrough() {
    let tmp = tempfile::tempdir().unwrap();
    let shop = tmp.path().join("shop");
    let shop_s = shop.to_str().unwrap();
    let (code, _, err) = kiln(&["init", "--example", "tpch", shop_s], tmp.path());
    assert_eq!(code, 0, "{err}");
    let produce = |input: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["produce", "order_events", "-C", shop_s])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(input.as_bytes())?;
                child.wait_with_output()
            })
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let events = std::fs::read_to_string(shop.join("streams/order_events.ndjson")).unwrap();
    assert_eq!(produce(&events).trim(), "appended 13 records to topic `order_events` (partition 0: offsets 0..=12)");
    let (code, out, err) = kiln(&["stream", shop_s, "--until-idle"], tmp.path());
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("revenue_per_minute: 12 events") && out.contains("0 late, 1 rejected, 7 rows emitted"),
        "{out}"
    );
    let query = |sql: &str| {
        let (code, out, err) = kiln(&["query", sql, "-C", shop_s], tmp.path());
        assert_eq!(code, 0, "{err}");
        out.trim().to_owned()
    };
    let revenue = query("SELECT * FROM revenue_per_minute ORDER BY window_start, status");
    let expected = "\
+---------------------+---------------------+-----------+--------+---------+
| window_start        | window_end          | status    | events | revenue |
+---------------------+---------------------+-----------+--------+---------+
| 2026-11-20T12:00:00 | 2026-11-20T12:01:00 | paid      | 1      | 120.00  |
| 2026-11-20T12:00:00 | 2026-11-20T12:01:00 | placed    | 4      | 1740.50 |
| 2026-11-20T12:01:00 | 2026-11-20T12:02:00 | paid      | 2      | 1580.50 |
| 2026-11-20T12:02:00 | 2026-11-20T12:03:00 | cancelled | 1      | 40.00   |
| 2026-11-20T12:02:00 | 2026-11-20T12:03:00 | placed    | 1      | 2200.00 |
| 2026-11-20T12:03:00 | 2026-11-20T12:04:00 | paid      | 1      | 2200.00 |
| 2026-11-20T12:04:00 | 2026-11-20T12:05:00 | placed    | 1      | 300.00  |
+---------------------+---------------------+-----------+--------+---------+";
    assert_eq!(revenue, expected);
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    assert!(readme.contains(expected), "README.md shows this table");
    let rejected = query("SELECT line, reason FROM order_events__rejected");
    assert!(rejected.contains("| 9    | no event time: `event_time` is missing or null |"), "{rejected}");
    // Five-minute windows every minute, closed up to 12:05:55 (hand-counted).
    let active = query("SELECT window_start, customers, events FROM active_customers ORDER BY window_start");
    let lines: Vec<String> = active
        .lines()
        .skip(3)
        .filter(|l| l.starts_with("| "))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        lines,
        [
            "| 2026-11-20T11:56:00 | 3 | 5 |",
            "| 2026-11-20T11:57:00 | 3 | 7 |",
            "| 2026-11-20T11:58:00 | 4 | 9 |",
            "| 2026-11-20T11:59:00 | 4 | 10 |",
            "| 2026-11-20T12:00:00 | 5 | 11 |",
        ]
    );
    let large = query("SELECT order_id, status FROM large_orders ORDER BY event_time");
    assert_eq!(large.lines().filter(|l| l.contains("placed") || l.contains("paid")).count(), 4, "{large}");

    produce(
        "{\"order_id\": 9, \"customer_id\": 2, \"status\": \"placed\", \"amount\": 10.00, \"event_time\": \"2026-11-20T12:00:30Z\"}\n\
         {\"order_id\": 7, \"customer_id\": 1, \"status\": \"paid\", \"amount\": 55.00, \"event_time\": \"2026-11-20T12:07:10Z\"}\n",
    );
    let (code, _, err) = kiln(&["stream", shop_s, "--until-idle"], tmp.path());
    assert_eq!(code, 0, "{err}");
    let late = query("SELECT order_id, event_time, kiln_watermark FROM revenue_per_minute__late");
    let expected_late = "\
+----------+---------------------+---------------------+
| order_id | event_time          | kiln_watermark      |
+----------+---------------------+---------------------+
| 9        | 2026-11-20T12:00:30 | 2026-11-20T12:05:55 |
+----------+---------------------+---------------------+";
    assert_eq!(late, expected_late);
    assert!(readme.contains(expected_late), "README.md shows this table");
    let newest = query(
        "SELECT status, events, revenue FROM revenue_per_minute WHERE window_start = TIMESTAMP '2026-11-20 12:06:00'",
    );
    assert!(newest.contains("| placed | 1      | 55.00   |"), "{newest}");
    assert!(!query("SELECT * FROM revenue_per_minute WHERE events > 4").contains("2026"), "order 9 counted nowhere");
}

/// `max_bytes_per_file` on a product rolls its files by size (it was accepted and then
/// never reached the writer): 20,000 distinct BIGINTs, uncompressed and without
/// dictionary, are 160 KB of values, read in batches of 8,192 (64 KB); the size is checked
/// after each batch, so at 40 KiB per file every full batch ends a file: three files (one
/// without the option), all rows kept, and the option is recorded in the manifest.
#[test]
fn products_roll_files_by_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let csv: String = std::iter::once("v\n".to_owned()).chain((1..=20_000).map(|v| format!("{v}\n"))).collect();
    crate::write_files(
        tmp.path(),
        &[
            ("kiln.toml", "[project]\nname = \"bytes\"\n"),
            ("data/t.csv", &csv),
            (
                "p.sql",
                "CREATE SOURCE t (v BIGINT NOT NULL) WITH (connector = 'files', path = 'data/', format = 'csv');\n\
                 CREATE PRODUCT p WITH (max_bytes_per_file = '40KiB', compression = 'uncompressed', dictionary = 'false', \
                 ordering_tier = '2') AS SELECT v FROM t;",
            ),
        ],
    );
    let (code, out, err) = kiln(&["build", "."], tmp.path());
    assert_eq!(code, 0, "{out}{err}");
    let manifest = crate::current_manifest(tmp.path(), "p");
    let files = manifest["files"].as_array().unwrap();
    let rows: u64 = files.iter().map(|f| f["rows"].as_u64().unwrap()).sum();
    assert_eq!(rows, 20_000);
    assert_eq!(files.len(), 3, "{files:?}");
    assert_eq!(manifest["write_options"]["max_bytes_per_file"], "40KiB");
}

/// The example's checks: its constraints and error-level audit pass, its warn-level audit
/// fires on exactly the customers whose last order is before 1998 (counted here with
/// plain DataFusion over the generated orders files), and its unit tests pass.
#[test]
fn example_checks_warn_and_unit_tests_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shop");
    small_example(&dir, tmp.path());
    let (code, out, err) = kiln(&["build", "--json", dir.to_str().unwrap()], tmp.path());
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut checks: Vec<(String, String)> = summary["products"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["checks"].as_array().cloned().unwrap_or_default())
        .map(|c| {
            (
                format!("{}.{}", c["product"].as_str().unwrap(), c["name"].as_str().unwrap()),
                c["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    checks.sort();
    let dormant = summary["products"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["checks"].as_array().cloned().unwrap_or_default())
        .find(|c| c["name"] == "dormant_customers")
        .unwrap()["failing_rows"]
        .as_u64()
        .unwrap();
    let pass = |s: &str| (s.to_owned(), "pass".to_owned());
    assert_eq!(
        checks,
        [
            ("customer_clean.check(c_acctbal BETWEEN -999.99 AND 9999.99)".to_owned(), "pass".to_owned()),
            pass(
                "customer_clean.check(c_mktsegment IN ('AUTOMOBILE', 'BUILDING', 'FURNITURE', 'HOUSEHOLD', 'MACHINERY'))"
            ),
            pass("customer_clean.primary_key(c_custkey)"),
            ("customer_order_summary.dormant_customers".to_owned(), "warn".to_owned()),
            pass("revenue_by_nation_year.check(orders > 0)"),
            pass("revenue_by_nation_year.revenue_is_positive"),
            pass("revenue_by_nation_year.unique(nation, order_year)"),
        ]
    );
    let expected = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let ctx = datafusion::prelude::SessionContext::new();
        let orders = dir.join("data/orders");
        ctx.register_parquet("orders", orders.to_str().unwrap(), Default::default()).await.unwrap();
        let sql = "SELECT count(*) FROM (SELECT o_custkey FROM orders GROUP BY o_custkey HAVING max(o_orderdate) < DATE '1998-01-01')";
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        datafusion::arrow::util::display::array_value_to_string(batches[0].column(0), 0).unwrap().parse::<u64>().unwrap()
    });
    assert!(expected > 0);
    assert_eq!(dormant, expected);
    let (code, text, err) = kiln(&["build", dir.to_str().unwrap()], tmp.path());
    assert_eq!(code, 0, "{err}");
    assert!(!text.contains("checks:"), "fresh products with unchanged checks do not re-run them:\n{text}");

    let (code, out, err) = kiln(&["test", dir.to_str().unwrap()], tmp.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("pass  test summary_per_customer (for customer_order_summary)"), "{out}");
    assert!(out.contains("pass  test segment_value_per_nation (for segment_value)"), "{out}");
    assert!(out.contains("7 checks (0 failed, 1 warned), 2 tests (0 failed)"), "{out}");
}

/// Every data file of every product, by path under the warehouse (the run's directory
/// masked), with its sha256.
fn data_files(warehouse: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    use sha2::Digest;
    let parquet = crate::files_under(warehouse).into_iter().filter(|p| p.extension().is_some_and(|x| x == "parquet"));
    parquet
        .map(|rel| {
            let digest = format!("{:x}", sha2::Sha256::digest(std::fs::read(warehouse.join(&rel)).unwrap()));
            // builds/<run id>/: each run's directory is named by the run.
            let rel = rel.to_string_lossy().into_owned();
            let mut parts: Vec<&str> = rel.split('/').collect();
            if let Some(i) = parts.iter().position(|s| *s == "builds") {
                parts[i + 1] = "<run>";
            }
            (parts.join("/"), digest)
        })
        .collect()
}

/// Performance settings change neither build ids nor bytes: the example built from an
/// empty warehouse under four combinations of batch size, partitions, memory pool and
/// product concurrency writes the same files, byte for byte.
#[test]
fn performance_settings_do_not_change_the_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shop");
    example_at(&dir, "0.02");
    let settings: [&[&str]; 4] = [
        &[],
        &["--profile", "memory_limited"],
        &["--set", "datafusion.execution.batch_size=77", "--set", "datafusion.execution.target_partitions=3"],
        &["--profile", "dev", "--set", "datafusion.execution.batch_size=1000", "--set", "kiln.max_parallel_products=4"],
    ];
    let mut first: Option<std::collections::BTreeMap<String, String>> = None;
    for args in settings {
        let _ = std::fs::remove_dir_all(dir.join("warehouse"));
        let _ = std::fs::remove_dir_all(dir.join(".kiln"));
        let mut all = vec!["build"];
        all.extend_from_slice(args);
        all.push(dir.to_str().unwrap());
        let (code, out, err) = kiln(&all, tmp.path());
        assert_eq!(code, 0, "{args:?}\n{out}\n{err}");
        assert!(out.contains("6 built"), "{args:?}\n{out}");
        let files = data_files(&dir.join("warehouse"));
        assert!(files.keys().any(|f| f.starts_with("orders_nested/")), "{files:?}");
        match &first {
            None => first = Some(files),
            Some(expected) => assert_eq!(&files, expected, "files under {args:?} differ from the default profile's"),
        }
    }
}

/// README.md's "A short tour", run as written, in order, against a fresh `kiln init
/// --example tpch shop` (generated at scale factor 0.01 instead of 0.1, to be quick; the
/// `[...]` parts are the README's optional arguments and are left out): every command
/// succeeds and says what the README says it does.
#[test]
fn readme_tour_runs_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let tour = readme.split("## A short tour").nth(1).unwrap();
    let block = tour.split("```sh\n").nth(1).unwrap().split("```").next().unwrap();
    let optional = |line: &str| {
        let mut out = String::new();
        let mut depth = 0;
        for c in line.chars() {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                _ if depth == 0 => out.push(c),
                _ => {}
            }
        }
        out.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_kiln"), bin.join("kiln")).unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(home.join(".local/share/bash-completion/completions")).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut builds = 0;
    let mut ran = 0;
    for line in block.lines() {
        let command = optional(line.split("  #").next().unwrap());
        if command.is_empty() {
            continue;
        }
        let out = std::process::Command::new("bash")
            .args(["-c", &command])
            .current_dir(tmp.path())
            .env("PATH", &path)
            .env("HOME", &home)
            .output()
            .unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "`{command}`:\n{stdout}\n{stderr}");
        ran += 1;
        let words = command.split_whitespace().collect::<Vec<_>>();
        match words.get(1).copied() {
            Some("init") => set_scale_factor(&tmp.path().join("shop"), "0.01"),
            Some("build") if command.contains("--json") => {
                let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
                assert_eq!(summary["products"].as_array().unwrap().len(), 6, "{stdout}");
            }
            Some("build") => {
                builds += 1;
                assert!(stdout.contains(" built, ") && stdout.contains(" fresh"), "`{command}`:\n{stdout}");
                if builds == 1 {
                    assert!(stdout.contains("6 built, 0 fresh"), "{stdout}");
                }
                if line.contains("nothing changed") {
                    assert!(stdout.contains("0 built, 6 fresh"), "`{command}`:\n{stdout}");
                }
            }
            Some("ls") => assert!(stdout.contains("orders_nested") && stdout.contains("lineitem"), "{stdout}"),
            Some("plan") => assert!(stdout.contains("decision") && stdout.contains("6 fresh"), "{stdout}"),
            Some("lineage") => assert!(stdout.contains("l_extendedprice"), "{stdout}"),
            Some("query") => assert!(stdout.contains("nation") && stdout.contains("EGYPT"), "{stdout}"),
            Some("explain") => assert!(stdout.to_lowercase().contains("physical"), "{stdout}"),
            Some("functions") => assert!(stdout.contains("kiln_pii_hash"), "{stdout}"),
            Some("test") => {
                assert!(stdout.contains("checks (0 failed") && stdout.contains("tests (0 failed)"), "{stdout}")
            }
            Some("completions") => {
                let script = home.join(".local/share/bash-completion/completions/kiln");
                assert!(std::fs::read_to_string(script).unwrap().contains("kiln"));
            }
            Some("produce") => assert!(stdout.contains("clicks") || stderr.contains("clicks"), "{stdout}{stderr}"),
            _ => {}
        }
    }
    assert!(ran >= 20, "the tour has {ran} commands");
}

/// A product and a source removed from the project: gc lists their tables and keeps them;
/// `--drop-removed` deletes them (the source's rejected records too) and nothing else; with a file that does not
/// parse, whose products are unknown, it refuses.
#[test]
fn gc_lists_and_drops_removed_products() {
    let tmp = tempfile::tempdir().unwrap();
    let sql = "CREATE SOURCE t (a BIGINT NOT NULL) WITH (connector = 'files', path = 'data/', format = 'csv', on_error = 'reject');\n\
               CREATE PRODUCT keep AS SELECT a FROM t;\n";
    crate::write_files(
        tmp.path(),
        &[
            ("kiln.toml", "[project]\nname = \"g\"\n"),
            ("data/t.csv", "a\n1\nx\n"),
            ("models.sql", sql),
            ("data/u.csv", "a\ny\n"),
            (
                "gone.sql",
                "CREATE SOURCE u (a BIGINT NOT NULL) WITH (connector = 'files', path = 'data/u.csv', format = 'csv', on_error = 'reject');\n\
                 CREATE PRODUCT gone AS SELECT a + 1 AS b FROM t UNION ALL SELECT a FROM u;\n",
            ),
        ],
    );
    let (code, out, err) = kiln(&["build", "."], tmp.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(tmp.path().join("warehouse/u__rejected/_delta_log").is_dir());
    std::fs::remove_file(tmp.path().join("gone.sql")).unwrap();

    let (code, out, err) = kiln(&["gc", "--json", "."], tmp.path());
    assert_eq!(code, 0, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["removed"], serde_json::json!(["gone", "u__rejected"]), "{out}");
    assert!(tmp.path().join("warehouse/gone/_delta_log").is_dir(), "kept without --drop-removed");

    std::fs::write(tmp.path().join("broken.sql"), "CREATE PRODUCT x AS SELEC 1;").unwrap();
    let (code, _, err) = kiln(&["gc", "--drop-removed", "."], tmp.path());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--drop-removed") && err.contains("broken.sql"), "{err}");
    assert!(tmp.path().join("warehouse/gone/_delta_log").is_dir());
    std::fs::remove_file(tmp.path().join("broken.sql")).unwrap();

    let (code, out, err) = kiln(&["gc", "--drop-removed", "."], tmp.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("dropped the tables of removed products: gone, u__rejected"), "{out}");
    assert!(!tmp.path().join("warehouse/gone").exists() && !tmp.path().join("warehouse/u__rejected").exists());
    assert!(tmp.path().join("warehouse/t__rejected/_delta_log").is_dir(), "t is still defined");
    let (code, out, _) = kiln(&["query", "SELECT a FROM keep", "--format", "csv"], tmp.path());
    assert_eq!((code, out.as_str()), (0, "a\n1\n"));
    let (_, out, _) = kiln(&["gc", "."], tmp.path());
    assert!(!out.contains("no longer defined"), "{out}");
}

/// `kiln init --example tpch DIR`, generating scale factor `sf`.
fn example_at(dir: &std::path::Path, sf: &str) {
    let (code, _, err) = kiln(&["init", "--example", "tpch", dir.to_str().unwrap()], dir.parent().unwrap());
    assert_eq!(code, 0, "{err}");
    set_scale_factor(dir, sf);
}

/// The example at `dir` generates scale factor `sf` (instead of 0.1).
fn set_scale_factor(dir: &std::path::Path, sf: &str) {
    let toml = dir.join("kiln.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, text.replace("scale_factor = 0.1 ", &format!("scale_factor = {sf} "))).unwrap();
}
