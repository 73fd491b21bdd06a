//! `kiln docs`: the site of the example, opened from disk in headless Chromium (the DOM
//! the page's script builds, screenshots), and `kiln docs --serve` over HTTP.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::example::small_example;
use crate::kiln;

/// The browser, or `None` (the test then says so and stops) unless
/// `KILN_REQUIRE_BROWSER` is set, as `.ci/run` does after installing Chromium.
fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|b| {
        let ok = Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success());
        ok.then(|| PathBuf::from(b))
    });
    if found.is_none() {
        assert!(
            std::env::var_os("KILN_REQUIRE_BROWSER").is_none(),
            "KILN_REQUIRE_BROWSER is set but there is no Chromium"
        );
        eprintln!("skipped: no Chromium (install the `chromium` package)");
    }
    found
}

fn headless(browser: &Path, args: &[&str], url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--window-size=1400,900"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium {args:?} {url}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn url(site: &Path, page: &str) -> String {
    format!("file://{}/{page}", site.canonicalize().unwrap().display())
}

/// The values of attribute `attr` of every element whose opening tag contains `marker`.
fn attrs(dom: &str, marker: &str, attr: &str) -> Vec<String> {
    dom.split('<')
        .filter(|tag| tag.contains(marker))
        .filter_map(|tag| {
            let start = tag.find(&format!(" {attr}=\""))? + attr.len() + 3;
            let end = start + tag[start..].find('"')?;
            Some(tag[start..end].replace("&amp;", "&"))
        })
        .collect()
}

/// What `kiln ls --json ARGS` lists in `dir`, audits and tests left out (they are on
/// their product's page, not the DAG).
fn definitions(dir: &Path, args: &[&str]) -> BTreeSet<String> {
    let (code, listed, err) = kiln(&[&["ls", "--json", "-C", dir.to_str().unwrap()], args].concat(), dir);
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    listed["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| !matches!(n["kind"].as_str(), Some("audit" | "test")))
        .map(|n| n["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Lineage edges drawn: (from, to, kind).
fn edges(dom: &str) -> BTreeSet<(String, String, String)> {
    let tags: Vec<&str> = dom.split('<').filter(|t| t.starts_with("path class=\"edge k-")).collect();
    tags.iter()
        .map(|t| {
            let get = |a: &str| attrs(&format!("<{t}"), "edge", a).pop().unwrap();
            (get("data-from"), get("data-to"), get("data-kind"))
        })
        .collect()
}

/// The share of pixels below the toolbars (y >= 150) that differ from the page's
/// background.
fn drawn_share(png_file: &Path) -> f64 {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png_file).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let (w, h) = (info.width as usize, info.height as usize);
    let background = |p: &[u8]| p[..3].iter().all(|&c| c >= 0xf8);
    let (mut drawn, mut total) = (0usize, 0usize);
    for y in 150..h {
        for x in 0..w {
            let at = (y * w + x) * channels;
            total += 1;
            drawn += usize::from(!background(&buf[at..at + channels]));
        }
    }
    drawn as f64 / total as f64
}

/// Every file of the site references only files of the site: no URL with a scheme or a
/// host in any `src`/`href`, no CSS `url()` or `@import`, and the script's only request is
/// `--serve`'s version endpoint.
fn assert_self_contained(site: &Path) {
    let files: Vec<PathBuf> = crate::files_under(site).into_iter().map(|f| site.join(f)).collect();
    assert!(files.len() > 10, "{files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.display().to_string();
        if name.ends_with(".html") {
            for attr in ["src", "href"] {
                for value in attrs(&text, &format!("{attr}=\""), attr) {
                    let scheme = value.split('/').next().unwrap_or_default().contains(':');
                    assert!(!scheme && !value.starts_with("//"), "{name}: {attr}={value}");
                    if !value.starts_with('#') {
                        let target = file.parent().unwrap().join(value.split('#').next().unwrap());
                        assert!(target.exists(), "{name}: {attr}={value} is not in the site");
                    }
                }
            }
        }
        if name.ends_with(".css") {
            assert!(!text.contains("url(") && !text.contains("@import"), "{name}");
        }
        if name.ends_with(".js") {
            let requests: Vec<&str> = text.match_indices("fetch(").map(|(i, _)| &text[i..i + 25]).collect();
            assert_eq!(requests, ["fetch(\"/__kiln/version\", "], "{name}");
            assert!(!text.contains("XMLHttpRequest") && !text.contains("import("), "{name}");
            let urls: Vec<&str> = text.match_indices("://").map(|(i, _)| &text[i.saturating_sub(5)..i + 20]).collect();
            assert_eq!(urls, ["\"http://www.w3.org/2000/s"], "{name}: only the SVG namespace name");
        }
    }
}

#[test]
fn docs_site_of_the_example_renders_in_a_browser() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shop");
    small_example(&dir, tmp.path());
    let d = dir.to_str().unwrap();
    let (code, _, err) = kiln(&["build", "-C", d], tmp.path());
    assert_eq!(code, 0, "{err}");
    // A semantic change to one product, built: its page shows the diff and two builds.
    let sql = dir.join("marts/segment_value.sql");
    let text = std::fs::read_to_string(&sql).unwrap();
    let changed = text.replacen("GROUP BY", "WHERE c_mktsegment <> 'NONE'\nGROUP BY", 1);
    assert_ne!(changed, text, "the example's segment_value groups");
    std::fs::write(&sql, changed).unwrap();
    let (code, _, err) = kiln(&["build", "-C", d], tmp.path());
    assert_eq!(code, 0, "{err}");

    let (code, _, err) = kiln(&["test", "-C", d], tmp.path());
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = kiln(&["docs", "-C", d], tmp.path());
    assert_eq!(code, 0, "{err}");
    let site = dir.join(".kiln/docs");
    assert!(out.contains("index.html"), "{out}");
    assert_self_contained(&site);

    let Some(browser) = chromium() else { return };
    // DAG page: every definition of the example, with its last status.
    let dom = headless(&browser, &["--dump-dom"], &url(&site, "index.html"));
    let drawn: BTreeSet<String> = attrs(&dom, "class=\"node ", "data-name").into_iter().collect();
    assert_eq!(drawn, definitions(&dir, &[]));
    for product in [
        "customer_clean",
        "customer_order_summary",
        "revenue_by_nation_year",
        "segment_value",
        "orders_nested",
        "order_items",
    ] {
        assert!(dom.contains(&format!("data-name=\"{product}\" data-kind=\"product\" data-status=\"")), "{product}");
    }
    let status = |name: &str| {
        attrs(&dom, &format!("data-name=\"{name}\""), "data-status").pop().unwrap_or_else(|| panic!("{name}"))
    };
    assert_eq!(status("segment_value"), "built");
    assert_eq!(status("customer_clean"), "fresh", "the second run found it fresh");
    assert_eq!(status("orders"), "defined");

    // Selections in the page are the CLI's.
    for selector in ["+revenue_by_nation_year", "customer_clean+1", "tag:finance", "path:nested/ segment_value"] {
        let hash = selector.replace('+', "%2B").replace(' ', "%20");
        let dom = headless(&browser, &["--dump-dom"], &format!("{}#select={hash}", url(&site, "index.html")));
        let selected: BTreeSet<String> = attrs(&dom, " selected\"", "data-name").into_iter().collect();
        let expected = definitions(&dir, &["--select", selector]);
        assert!(!expected.is_empty(), "{selector}");
        assert_eq!(selected, expected, "{selector}");
    }

    // Lineage of revenue_by_nation_year.revenue: its direct edges, by kind, as the SQL
    // says (value: the price expression; join: every join key; group: the GROUP BY;
    // order: the product's ORDER BY (region, nation, order_year)).
    let dom = headless(&browser, &["--dump-dom"], &url(&site, "lineage.html#revenue_by_nation_year.revenue"));
    let drawn = edges(&dom);
    let target = "revenue_by_nation_year.revenue";
    let direct: BTreeSet<(String, String)> =
        drawn.iter().filter(|(_, to, _)| to == target).map(|(from, _, kind)| (from.clone(), kind.clone())).collect();
    let expected: BTreeSet<(String, String)> = [
        ("lineitem.l_extendedprice", "value"),
        ("lineitem.l_discount", "value"),
        ("lineitem.l_orderkey", "join"),
        ("orders.o_orderkey", "join"),
        ("orders.o_custkey", "join"),
        ("customer_clean.c_custkey", "join"),
        ("customer_clean.c_nationkey", "join"),
        ("nation.n_nationkey", "join"),
        ("nation.n_regionkey", "join"),
        ("region.r_regionkey", "join"),
        ("region.r_name", "group"),
        ("nation.n_name", "group"),
        ("orders.o_orderdate", "group"),
        ("region.r_name", "order"),
        ("nation.n_name", "order"),
        ("orders.o_orderdate", "order"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(direct, expected);
    // ... and on to the sources: customer_clean's keys come from customer's.
    assert!(
        drawn.contains(&("customer.c_custkey".into(), "customer_clean.c_custkey".into(), "value".into())),
        "{drawn:?}"
    );
    // Edge kinds filter the graph: value edges only, followed to the sources.
    let values =
        edges(&headless(&browser, &["--dump-dom"], &url(&site, &format!("lineage.html#{target}!kinds=value"))));
    let expected: BTreeSet<(String, String, String)> =
        [("lineitem.l_extendedprice", target, "value"), ("lineitem.l_discount", target, "value")]
            .iter()
            .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
            .collect();
    assert_eq!(values, expected);
    let down = headless(&browser, &["--dump-dom"], &url(&site, "lineage.html#customer_clean.c_custkey!down"));
    let down = edges(&down);
    assert!(down.contains(&("customer_clean.c_custkey".into(), target.into(), "join".into())), "{down:?}");
    assert!(down.iter().all(|(_, to, _)| to != "customer_clean.c_custkey"), "downstream only");

    // The product page: the committed build's per-operator metrics, and the diff.
    let manifest = crate::current_manifest(&dir, "revenue_by_nation_year");
    let build_id = manifest["build_id"].as_str().unwrap();
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join(format!(".kiln/builds/revenue_by_nation_year/{build_id}.json"))).unwrap(),
    )
    .unwrap();
    let dom = headless(&browser, &["--dump-dom"], &url(&site, "nodes/revenue_by_nation_year.html"));
    let operators = record["operators"].as_array().unwrap();
    assert!(!operators.is_empty());
    for op in operators {
        let rows = op["output_rows"].as_u64().map(|r| r.to_string()).unwrap_or_default();
        let name = op["operator"].as_str().unwrap().replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        assert!(dom.contains(&format!("<code>{name}</code></td><td>{rows}</td>")), "{name}: {rows} rows");
    }
    assert!(dom.contains(build_id), "the committed build's id");
    assert!(dom.contains("revenue_is_positive") && dom.contains("check-pass"), "its audit passed");
    assert!(dom.contains("Revenue (extended price net of discount)"), "the description above the statement");
    assert!(dom.contains("<span class=\"kw\">SELECT</span>"), "highlighted SQL");
    let segment = headless(&browser, &["--dump-dom"], &url(&site, "nodes/segment_value.html"));
    assert!(segment.contains("Semantic diff") && segment.contains("breaking"), "the WHERE added");
    assert!(segment.contains("c_mktsegment"), "the edit names the predicate");
    let test_row = segment.split("<tr").find(|r| r.contains("segment_value_per_nation")).expect("its unit test");
    assert!(test_row.contains("check-pass") && test_row.contains("<td>test</td>"), "{test_row}");
    let runs = headless(&browser, &["--dump-dom"], &url(&site, "runs.html"));
    assert_eq!(runs.matches("<section class=\"run\"").count(), 2, "two runs");

    // Another environment's site shows its own runs only.
    let (code, _, err) = kiln(&["build", "--env", "dev", "-C", d], tmp.path());
    assert_eq!(code, 0, "{err}");
    let dev_site = tmp.path().join("dev-site");
    let (code, _, err) = kiln(&["docs", "--env", "dev", "--out", dev_site.to_str().unwrap(), "-C", d], tmp.path());
    assert_eq!(code, 0, "{err}");
    let dev_runs = std::fs::read_to_string(dev_site.join("runs.html")).unwrap();
    assert_eq!(dev_runs.matches("<section class=\"run\"").count(), 1, "dev's one run");
    assert!(dev_runs.contains("env <code>dev</code>"));
    let dev_dag: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dev_site.join("data/dag.json")).unwrap()).unwrap();
    assert_eq!(dev_dag["env"], "dev");
    let (code, _, err) = kiln(&["docs", "-C", d], tmp.path());
    assert_eq!(code, 0, "{err}");
    let prod_runs = std::fs::read_to_string(site.join("runs.html")).unwrap();
    assert_eq!(prod_runs.matches("<section class=\"run\"").count(), 2, "prod's runs, not dev's");

    // Screenshots: something is drawn where the graphs are.
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("docs-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    for (page, file) in [("index.html", "dag.png"), ("lineage.html#revenue_by_nation_year.revenue", "lineage.png")] {
        let png_file = shots.join(file);
        let _ = std::fs::remove_file(&png_file);
        headless(&browser, &[&format!("--screenshot={}", png_file.display())], &url(&site, page));
        let share = drawn_share(&png_file);
        assert!(share > 0.02, "{file}: only {:.2}% of the pixels are drawn", share * 100.0);
    }
}

fn get(addr: &str, path: &str) -> (String, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

#[test]
fn docs_serve_rebuilds_when_the_project_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("kiln.toml"), "[project]\nname = \"served\"\n").unwrap();
    std::fs::create_dir_all(dir.join("data/t")).unwrap();
    std::fs::write(dir.join("data/t/t.csv"), "k,v\n1,2\n").unwrap();
    std::fs::write(
        dir.join("a.sql"),
        "CREATE SOURCE t (k BIGINT, v BIGINT) WITH (connector = 'files', path = 'data/t/', format = 'csv');\n\
         -- Doubled values.\nCREATE PRODUCT doubled AS SELECT k, v * 2 AS v2 FROM t;\n",
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["docs", "--serve", "--port", "0"])
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0, "kiln docs --serve ended");
        if let Some(rest) = line.strip_prefix("serving http://") {
            break rest.split('/').next().unwrap().to_owned();
        }
    };
    let (status, index) = get(&addr, "/");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(index.contains("\"name\": \"doubled\""), "{index}");
    let (_, page) = get(&addr, "/nodes/doubled.html");
    assert!(page.contains("Doubled values."), "{page}");
    assert_eq!(get(&addr, "/../kiln.toml").0, "HTTP/1.1 400 Bad Request");
    assert_eq!(get(&addr, "/nope.html").0, "HTTP/1.1 404 Not Found");
    let (_, first) = get(&addr, "/__kiln/version");

    // A new product, and one that does not compile: the site shows both.
    std::fs::write(
        dir.join("b.sql"),
        "CREATE PRODUCT tripled AS SELECT k, v * 3 AS v3 FROM t;\nCREATE PRODUCT broken AS SELECT nope FROM t;\n",
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while get(&addr, "/__kiln/version").1 == first {
        assert!(std::time::Instant::now() < deadline, "the site was not rebuilt");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (_, index) = get(&addr, "/index.html");
    assert!(index.contains("\"name\": \"tripled\""), "{index}");
    let (_, broken) = get(&addr, "/nodes/broken.html");
    assert!(broken.contains("Does not compile") && broken.contains("nope"), "{broken}");

    // Ctrl-C: exit 130.
    let ok = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success();
    assert!(ok);
    assert_eq!(child.wait().unwrap().code(), Some(130));
}
