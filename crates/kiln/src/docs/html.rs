//! The site's pages as HTML (server-side; `assets/site.js` draws the graphs).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use kiln_artifact::docs::{DocsNodePage, to_json};
use kiln_artifact::{BuildRecord, OperatorMetrics, RunSummary};
use serde::Serialize;

use super::Site;
use crate::KilnError;

const SITE_JS: &str = include_str!("assets/site.js");
const SITE_CSS: &str = include_str!("assets/site.css");

/// Every file of the site: path relative to its root -> bytes.
pub(super) fn render(site: &Site) -> Result<BTreeMap<String, Vec<u8>>, KilnError> {
    let mut files = BTreeMap::new();
    files.insert("assets/site.js".to_owned(), SITE_JS.as_bytes().to_vec());
    files.insert("assets/site.css".to_owned(), SITE_CSS.as_bytes().to_vec());
    files.insert("data/dag.json".to_owned(), to_json(&site.dag)?);
    files.insert("data/lineage.json".to_owned(), to_json(&site.lineage)?);
    files.insert("data/runs.json".to_owned(), to_json(&site.runs)?);
    let project = &site.dag.header.project;

    let mut body = String::new();
    if !site.dag.errors.is_empty() {
        body.push_str("<section class=\"problems\"><h2>Problems</h2><ul>");
        for e in &site.dag.errors {
            let _ = write!(body, "<li><pre>{}</pre></li>", esc(e));
        }
        body.push_str("</ul></section>");
    }
    body.push_str(
        "<div class=\"toolbar\"><label>select <input id=\"select\" size=\"30\" \
         placeholder=\"+name  name+  tag:t  path:dir/\"></label> \
         <label>exclude <input id=\"exclude\" size=\"20\"></label> \
         <span id=\"select-status\"></span></div>\
         <div class=\"legend\"><span class=\"st-built\">built</span><span class=\"st-fresh\">fresh</span>\
         <span class=\"st-reused\">reused</span><span class=\"st-failed\">failed</span>\
         <span class=\"st-audit_failed\">audit failed</span><span class=\"st-skipped\">skipped</span>\
         <span class=\"st-never_built\">never built</span><span class=\"st-defined\">source / stream</span>\
         <span class=\"stale\">would rebuild</span></div>\
         <div id=\"dag\" class=\"graph\"></div>",
    );
    files.insert("index.html".to_owned(), page(project, "DAG", "", "dag", &body, &site.dag)?);

    let body = "<div class=\"toolbar\"><label>column <select id=\"table\"></select> \
        <select id=\"column\"></select></label> \
        <label><input type=\"radio\" name=\"direction\" value=\"up\" checked> upstream</label> \
        <label><input type=\"radio\" name=\"direction\" value=\"down\"> downstream</label> \
        <span class=\"kinds\">edges: \
        <label class=\"k-value\"><input type=\"checkbox\" value=\"value\" checked> value</label> \
        <label class=\"k-filter\"><input type=\"checkbox\" value=\"filter\" checked> filter</label> \
        <label class=\"k-join\"><input type=\"checkbox\" value=\"join\" checked> join</label> \
        <label class=\"k-group\"><input type=\"checkbox\" value=\"group\" checked> group</label> \
        <label class=\"k-order\"><input type=\"checkbox\" value=\"order\" checked> order</label></span></div>\
        <div id=\"lineage\" class=\"graph\"></div>";
    files.insert("lineage.html".to_owned(), page(project, "Column lineage", "", "lineage", body, &site.lineage)?);

    files.insert("runs.html".to_owned(), page(project, "Runs", "", "runs", &runs_body(&site.runs.runs), &site.runs)?);

    for p in &site.pages {
        // Rendered whole here: the page needs no script data (its document is in data/).
        let html = page(project, &p.node.name, "../", "node", &node_body(p), &())?;
        files.insert(p.node.page.clone(), html);
        let json = p.node.page.trim_start_matches("nodes/").trim_end_matches(".html");
        files.insert(format!("data/products/{json}.json"), to_json(p)?);
    }
    Ok(files)
}

/// A whole page: navigation, `body`, the page's document, the script.
fn page<T: Serialize>(
    project: &str,
    title: &str,
    root: &str,
    kind: &str,
    body: &str,
    data: &T,
) -> Result<Vec<u8>, KilnError> {
    let json = to_json(data)?;
    // `<` only occurs inside JSON strings, where `\u003c` means the same: the document
    // cannot end the script element.
    let json = String::from_utf8_lossy(&json).replace('<', "\\u003c");
    let mut out = String::with_capacity(body.len() + json.len() + 1024);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · {project}</title><link rel=\"stylesheet\" href=\"{root}assets/site.css\"></head>\
         <body data-page=\"{kind}\" data-root=\"{root}\"><header><span class=\"project\">{project}</span>\
         <nav><a href=\"{root}index.html\">DAG</a><a href=\"{root}lineage.html\">Lineage</a>\
         <a href=\"{root}runs.html\">Runs</a></nav></header><main><h1>{title}</h1>{body}</main>\
         <script type=\"application/json\" id=\"kiln-data\">{json}</script>\
         <script src=\"{root}assets/site.js\"></script></body></html>\n",
        title = esc(title),
        project = esc(project),
    );
    Ok(out.into_bytes())
}

fn node_body(p: &DocsNodePage) -> String {
    let n = &p.node;
    let mut b = String::new();
    let _ = write!(
        b,
        "<p class=\"meta\"><span class=\"badge\">{}</span> <span class=\"st st-{}\">{}</span>{} \
         defined in <code>{}:{}</code>{}</p>",
        esc(&n.kind),
        esc(&n.status),
        esc(&n.status.replace('_', " ")),
        n.plan.as_deref().map(|d| format!(" · plan: <b>{}</b>", esc(d))).unwrap_or_default(),
        esc(&n.path),
        n.line,
        if n.tags.is_empty() {
            String::new()
        } else {
            format!(" · tags {}", n.tags.iter().map(|t| format!("<code>{}</code>", esc(t))).collect::<String>())
        },
    );
    if let Some(d) = &p.description {
        b.push_str("<section class=\"description\">");
        for para in d.split("\n\n") {
            let _ = write!(b, "<p>{}</p>", esc(para));
        }
        b.push_str("</section>");
    }
    if let Some(e) = &p.error {
        let _ = write!(b, "<section class=\"problems\"><h2>Does not compile</h2><pre>{}</pre></section>", esc(e));
    }
    if !n.deps.is_empty() {
        b.push_str("<p>reads ");
        for d in &n.deps {
            let _ = write!(b, "<a href=\"../{}\">{}</a> ", esc(&super::page_of(d)), esc(d));
        }
        b.push_str("</p>");
    }
    if let Some(plan) = &p.plan
        && !plan.reasons.is_empty()
    {
        b.push_str("<section><h2>Would rebuild now, because</h2><ul>");
        for r in &plan.reasons {
            let _ = write!(b, "<li>{}</li>", esc(&r.to_string()));
        }
        b.push_str("</ul></section>");
    }
    if !p.columns.is_empty() {
        let lineage = matches!(n.kind.as_str(), "product" | "view");
        b.push_str("<section><h2>Contract</h2><table class=\"columns\"><tr><th>column</th><th>type</th><th>null</th>");
        if lineage {
            b.push_str("<th>lineage</th>");
        }
        b.push_str("</tr>");
        for c in &p.columns {
            let _ = write!(
                b,
                "<tr><td><code>{}</code></td><td><code>{}</code></td><td>{}</td>",
                esc(&c.name),
                esc(&c.sql_type),
                if c.nullable { "yes" } else { "NOT NULL" }
            );
            if lineage {
                let _ = write!(
                    b,
                    "<td><a href=\"../lineage.html#{0}.{1}\">upstream</a> · \
                     <a href=\"../lineage.html#{0}.{1}!down\">downstream</a></td>",
                    esc(&n.name),
                    esc(&c.name)
                );
            }
            b.push_str("</tr>");
        }
        b.push_str("</table>");
        if !p.constraints.is_empty() {
            b.push_str("<p>constraints: ");
            for c in &p.constraints {
                let _ = write!(b, "<code>{}</code> ", esc(c));
            }
            b.push_str("</p>");
        }
        b.push_str("</section>");
    }
    if !p.sql.is_empty() {
        b.push_str("<section><h2>SQL</h2><pre class=\"sql\">");
        for (class, text) in kiln_control::sqltext::highlight(&p.sql) {
            match class.as_str() {
                "" => b.push_str(&esc(text)),
                c => {
                    let _ = write!(b, "<span class=\"{c}\">{}</span>", esc(text));
                }
            }
        }
        b.push_str("</pre></section>");
    }
    if !p.checks.is_empty() {
        b.push_str(
            "<section><h2>Checks</h2><table><tr><th>check</th><th>kind</th><th>severity</th>\
             <th>last result</th><th>failing rows</th><th>defined</th></tr>",
        );
        for c in &p.checks {
            let tested;
            let (severity, status, failing) = match (&c.last, &c.test) {
                (Some(r), _) => (r.severity.as_str(), r.status.as_str(), r.failing_rows.to_string()),
                (None, Some(t)) => {
                    let wrong = t.run.missing.len() + t.run.unexpected.len();
                    tested = format!("{} ({})", t.run.status.as_str(), t.at);
                    ("", tested.as_str(), if wrong > 0 { wrong.to_string() } else { String::new() })
                }
                (None, None) if c.kind == "test" => ("", "not run (kiln test)", String::new()),
                (None, None) => ("", "not run on this build", String::new()),
            };
            let _ = write!(
                b,
                "<tr class=\"check-{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                match (&c.last, &c.test) {
                    (Some(r), _) => r.status.as_str(),
                    (None, Some(t)) => t.run.status.as_str(),
                    (None, None) => "none",
                },
                esc(&c.name),
                esc(&c.kind),
                esc(severity),
                esc(status),
                failing,
                c.at.as_deref().map(esc).unwrap_or_default()
            );
        }
        b.push_str("</table></section>");
    }
    if let Some(build) = &p.build {
        build_section(&mut b, build);
    }
    if !p.builds.is_empty() {
        b.push_str(
            "<section><h2>Builds</h2><table class=\"builds\"><tr><th>time</th><th>action</th><th>build</th>\
             <th>rows</th><th>files</th><th>bytes</th><th>seconds</th><th>why</th></tr>",
        );
        for x in &p.builds {
            let why: Vec<String> = x.reasons.iter().chain(&x.error).map(|r| esc(r)).collect();
            let _ = write!(
                b,
                "<tr><td><a href=\"../runs.html#{}\">{}</a></td><td class=\"st-{}\">{}</td><td><code>{}</code></td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{}</td></tr>",
                esc(&x.run_id),
                esc(&x.at),
                esc(&x.action),
                esc(&x.action.replace('_', " ")),
                x.build_id.as_deref().map(|id| esc(&id[..id.len().min(12)])).unwrap_or_default(),
                x.rows,
                x.files,
                x.bytes,
                x.seconds,
                why.join("<br>")
            );
        }
        b.push_str("</table></section>");
    }
    if let Some(d) = &p.diff {
        let _ = write!(
            b,
            "<section><h2>Semantic diff</h2><p>build <code>{}</code> → <code>{}</code>: {}</p><ul class=\"diff\">",
            esc(&d.from_build[..d.from_build.len().min(12)]),
            esc(&d.to_build[..d.to_build.len().min(12)]),
            esc(&d.diff.summary())
        );
        for e in &d.diff.edits {
            let (op, sign) = match e.op {
                kiln_artifact::EditOp::Insert => ("insert", "+"),
                kiln_artifact::EditOp::Remove => ("remove", "−"),
                kiln_artifact::EditOp::Update => ("update", "~"),
            };
            let _ = write!(
                b,
                "<li class=\"edit-{op}\">{sign} <code>{}</code> {}: {}{}</li>",
                esc(&e.path),
                esc(&e.role),
                e.old.as_deref().map(|o| format!("<del>{}</del> ", esc(o))).unwrap_or_default(),
                e.new.as_deref().map(|n| format!("<ins>{}</ins>", esc(n))).unwrap_or_default()
            );
        }
        b.push_str("</ul></section>");
    }
    if let Some(c) = &p.canonical {
        let _ = write!(b, "<details><summary>Canonical plan</summary><pre>{}</pre></details>", esc(c));
    }
    b
}

fn build_section(b: &mut String, r: &BuildRecord) {
    let _ = write!(
        b,
        "<section class=\"last-build\"><h2>Committed build</h2><p>build <code>{}</code> of run \
         <a href=\"../runs.html#{}\"><code>{}</code></a>; phases: {}</p>",
        esc(&r.build_id),
        esc(&r.run_id),
        esc(&r.run_id),
        r.phases.iter().map(|(k, v)| format!("{} {v:.3} s", esc(k))).collect::<Vec<_>>().join(", ")
    );
    if !r.operators.is_empty() {
        b.push_str(
            "<table class=\"metrics\"><tr><th>operator</th><th>output rows</th><th>output bytes</th>\
             <th>compute ms</th><th>spills</th></tr>",
        );
        for OperatorMetrics { depth, operator, output_rows, output_bytes, elapsed_compute_ns, spill_count, .. } in
            &r.operators
        {
            let opt = |v: &Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
            let _ = write!(
                b,
                "<tr><td class=\"op\" style=\"padding-left:{}em\"><code>{}</code></td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td></tr>",
                0.3 + *depth as f64 * 1.2,
                esc(operator),
                opt(output_rows),
                opt(output_bytes),
                elapsed_compute_ns.map(|n| format!("{:.2}", n as f64 / 1e6)).unwrap_or_default(),
                opt(spill_count)
            );
        }
        b.push_str("</table>");
    }
    let _ = write!(
        b,
        "<details><summary>Physical plan</summary><pre>{}</pre></details>\
         <details><summary>Optimized logical plan</summary><pre>{}</pre></details>",
        esc(&r.plans.physical),
        esc(&r.plans.optimized)
    );
    if let Some(sql) = &r.plans.optimized_sql {
        let _ = write!(b, "<details><summary>Optimized plan as SQL</summary><pre>{}</pre></details>", esc(sql));
    }
    b.push_str("</section>");
}

fn runs_body(runs: &[RunSummary]) -> String {
    let mut b = String::new();
    if runs.is_empty() {
        b.push_str("<p>No runs kept yet: <code>kiln build</code> records one per run.</p>");
    }
    for run in runs {
        let count = |a: &str| run.products.iter().filter(|p| p.action.as_str() == a).count();
        let _ = write!(
            b,
            "<section class=\"run\" id=\"{id}\"><h2>{at} <code>{id}</code></h2><p>env <code>{}</code> · profile <code>{}</code> · \
             {:.2} s · {} built, {} fresh, {} reused, {} failed, {} audit failed, {} skipped</p>",
            esc(&run.env),
            esc(&run.profile),
            run.seconds,
            count("built"),
            count("fresh"),
            count("reused"),
            count("failed"),
            count("audit_failed"),
            count("skipped"),
            id = esc(&run.run_id),
            at = esc(&super::run_time(&run.run_id)),
        );
        for e in run.errors.iter().chain(&run.warnings) {
            let _ = write!(b, "<p class=\"warning\">{}</p>", esc(e));
        }
        b.push_str(
            "<table><tr><th>product</th><th>action</th><th>rows</th><th>seconds</th><th>phases</th>\
             <th>why</th></tr>",
        );
        for p in &run.products {
            let why: Vec<String> =
                p.reasons.iter().map(ToString::to_string).chain(p.error.clone()).map(|r| esc(&r)).collect();
            let _ = write!(
                b,
                "<tr><td><a href=\"{}\">{}</a></td><td class=\"st-{}\">{}</td><td>{}</td><td>{:.2}</td><td>{}</td>\
                 <td>{}</td></tr>",
                esc(&super::page_of(&p.product)),
                esc(&p.product),
                p.action.as_str(),
                p.action.as_str().replace('_', " "),
                p.rows,
                p.seconds,
                p.phases.iter().map(|(k, v)| format!("{} {v:.2}", esc(k))).collect::<Vec<_>>().join(", "),
                why.join("<br>")
            );
        }
        b.push_str("</table></section>");
    }
    b
}

/// `text` escaped for HTML text and attribute values.
pub(super) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}
