//! Human renderings of `kiln plan`, `kiln lineage`, `kiln test` and `kiln freshness`, and
//! `kiln test --junit` (the JSON shapes are in docs/json.md).

use kiln::artifact::{BaseColumn, Decision, Edit, EditOp, ExplainReport, Lineage, PlanReport, ProductDiff, Reason};

pub fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

pub fn plan(report: &PlanReport) {
    let width = report.products.iter().map(|p| p.product.len()).max().unwrap_or(7).max(7);
    out!("{:<width$}  {:<8}  {:<12}  why", "product", "decision", "build id");
    for p in &report.products {
        let decision = match p.decision {
            Decision::Fresh => "fresh",
            Decision::Build => "build",
            Decision::Failed => "FAILED",
        };
        let why = match (&p.error, p.reasons.is_empty()) {
            (Some(e), _) => e.clone(),
            (None, true) if !p.checks.is_empty() => "committed build is current; its checks changed".to_owned(),
            (None, true) => "committed build is current".to_owned(),
            (None, false) => p.reasons.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
        };
        out!("{:<width$}  {decision:<8}  {:<12}  {why}", p.product, short(p.build_id.as_deref().unwrap_or("-")));
        for reason in &p.reasons {
            if let Reason::QueryChanged { diff: Some(diff), .. } = reason {
                for e in &diff.edits {
                    let (sign, text) = match e.op {
                        EditOp::Insert => ('+', e.new.clone().unwrap_or_default()),
                        EditOp::Remove => ('-', e.old.clone().unwrap_or_default()),
                        EditOp::Update => {
                            ('~', format!("{} -> {}", e.old.as_deref().unwrap_or(""), e.new.as_deref().unwrap_or("")))
                        }
                    };
                    out!("{:<width$}    {sign} {} {}: {text}", "", e.path, e.role);
                }
            }
        }
        if !p.checks.is_empty() {
            out!("{:<width$}    checks: {}", "", p.checks.join(", "));
        }
        if let Some(plan) = &p.intervals {
            for line in intervals(plan) {
                out!("{:<width$}    {line}", "");
            }
        }
        if let Some(plan) = &p.merge {
            out!("{:<width$}    {}", "", merge(plan));
        }
    }
    let count = |d| report.products.iter().filter(|p| p.decision == d).count();
    out!(
        "{} to build, {} fresh, {} failed (profile {}, runtime {})",
        count(Decision::Build),
        count(Decision::Fresh),
        count(Decision::Failed),
        report.profile,
        short(&report.runtime_fp)
    );
}

pub fn lineage(lineage: &Lineage) {
    let list = |cols: &[BaseColumn]| cols.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    out!("{}", lineage.product);
    for c in &lineage.columns {
        out!("  {}", c.column);
        for (label, cols) in
            [("value", &c.value), ("filter", &c.filter), ("join", &c.join), ("group", &c.group), ("order", &c.order)]
        {
            if !cols.is_empty() {
                out!("    {label:<6}  {}", list(cols));
            }
        }
    }
}

/// `+ path role: text`, `- ...`, `~ path role: old -> new`.
fn edit(e: &Edit) -> String {
    let (sign, text) = match e.op {
        EditOp::Insert => ('+', e.new.clone().unwrap_or_default()),
        EditOp::Remove => ('-', e.old.clone().unwrap_or_default()),
        EditOp::Update => ('~', format!("{} -> {}", e.old.as_deref().unwrap_or(""), e.new.as_deref().unwrap_or(""))),
    };
    format!("{sign} {} {}: {text}", e.path, e.role)
}

pub fn diff(d: &ProductDiff) {
    if d.old_query_fp.as_deref() == Some(d.new_query_fp.as_str()) {
        out!("{}: unchanged since its committed build", d.product);
        return;
    }
    match (&d.diff, &d.old_query_fp) {
        (Some(diff), _) => {
            out!("{}: {}", d.product, diff.summary());
            for e in &diff.edits {
                out!("  {}", edit(e));
            }
        }
        (None, _) => out!(
            "{}: query changed ({} -> {}); the committed build's plan is not in the artifact store",
            d.product,
            short(d.old_query_fp.as_deref().unwrap_or("-")),
            short(&d.new_query_fp)
        ),
    }
}

pub fn explain(r: &ExplainReport) {
    let sections = [
        ("logical plan", Some(&r.logical)),
        ("optimized plan", Some(&r.optimized)),
        ("canonical plan (query_fp)", Some(&r.canonical)),
        ("physical plan", Some(&r.physical)),
        ("physical plan with metrics", r.analyzed.as_ref()),
    ];
    for (title, text) in sections {
        if let Some(text) = text {
            out!("== {} {title} ==\n{}", r.product, text.trim_end());
        }
    }
}

pub fn test(report: &kiln::artifact::TestReport) {
    use kiln::artifact::{CheckStatus, TestStatus};
    for c in &report.checks {
        let label = match c.status {
            CheckStatus::Pass => "pass ",
            CheckStatus::Warn => "WARN ",
            CheckStatus::Error => "ERROR",
        };
        let what = match &c.error {
            Some(e) => e.clone(),
            None if c.status == CheckStatus::Pass => String::new(),
            None => format!(": {} failing row(s)", c.failing_rows),
        };
        out!("{label} check {}: {}{what} ({:.2}s)", c.product, c.name, c.seconds);
    }
    for p in &report.not_built {
        out!("skip  checks of {p}: no committed build");
    }
    for t in &report.tests {
        let label = match t.status {
            TestStatus::Pass => "pass ",
            TestStatus::Fail => "FAIL ",
            TestStatus::Error => "ERROR",
        };
        out!("{label} test {} (for {}) ({:.2}s)", t.name, t.product, t.seconds);
        if let Some(e) = &t.error {
            out!("      {e}");
        }
        for m in &t.mismatches {
            out!("      ~ {m}");
        }
        for r in &t.missing {
            out!("      - missing    {r}");
        }
        for r in &t.unexpected {
            out!("      + unexpected {r}");
        }
    }
    let failed_checks = report.checks.iter().filter(|c| c.status == CheckStatus::Error).count();
    let warned = report.checks.iter().filter(|c| c.status == CheckStatus::Warn).count();
    let failed_tests = report.tests.iter().filter(|t| t.status != TestStatus::Pass).count();
    out!(
        "{} checks ({failed_checks} failed, {warned} warned), {} tests ({failed_tests} failed) in {:.2}s",
        report.checks.len(),
        report.tests.len(),
        report.seconds
    );
}

pub fn freshness(report: &kiln::artifact::FreshnessReport) {
    let width = report.sources.iter().map(|s| s.source.len()).max().unwrap_or(6).max(6);
    out!("{:<width$}  {:<6}  {:<24}  {:>12}  limits", "source", "status", "newest", "age");
    for s in &report.sources {
        let age = s.age_seconds.map_or("-".to_owned(), human_seconds);
        let limits = [("warn", s.warn_after_seconds), ("error", s.error_after_seconds)]
            .iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k} after {}", human_seconds(v))))
            .collect::<Vec<_>>()
            .join(", ");
        out!(
            "{:<width$}  {:<6}  {:<24}  {age:>12}  {limits}{}",
            s.source,
            s.status.as_str(),
            s.newest.as_deref().unwrap_or("-"),
            s.error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
        );
    }
    if report.sources.is_empty() {
        out!("no source declares freshness_warn or freshness_error");
    }
}

fn human_seconds(s: f64) -> String {
    match s {
        s if s < 120.0 => format!("{s:.0}s"),
        s if s < 7200.0 => format!("{:.0}m", s / 60.0),
        s if s < 172_800.0 => format!("{:.1}h", s / 3600.0),
        s => format!("{:.1}d", s / 86_400.0),
    }
}

/// `kiln test --junit`: one test suite for the checks and one for the unit tests.
pub fn junit(report: &kiln::artifact::TestReport) -> String {
    use kiln::artifact::{CheckStatus, TestStatus};
    fn esc(s: &str) -> String {
        s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
    }
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
    let failures = report.checks.iter().filter(|c| c.status == CheckStatus::Error).count();
    let time: f64 = report.checks.iter().map(|c| c.seconds).sum();
    out.push_str(&format!(
        "  <testsuite name=\"kiln checks\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" time=\"{time:.3}\">\n",
        report.checks.len()
    ));
    for c in &report.checks {
        out.push_str(&format!(
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
            esc(&c.product),
            esc(&c.name),
            c.seconds
        ));
        let message = c.error.clone().unwrap_or_else(|| format!("{} failing row(s)", c.failing_rows));
        match c.status {
            CheckStatus::Pass => out.push_str("/>\n"),
            CheckStatus::Warn => out
                .push_str(&format!(">\n      <system-out>warning: {}</system-out>\n    </testcase>\n", esc(&message))),
            CheckStatus::Error => out.push_str(&format!(
                ">\n      <failure type=\"{}\" message=\"{}\"/>\n    </testcase>\n",
                esc(&c.kind),
                esc(&message)
            )),
        }
    }
    out.push_str("  </testsuite>\n");
    let failures = report.tests.iter().filter(|t| t.status == TestStatus::Fail).count();
    let errors = report.tests.iter().filter(|t| t.status == TestStatus::Error).count();
    let time: f64 = report.tests.iter().map(|t| t.seconds).sum();
    out.push_str(&format!(
        "  <testsuite name=\"kiln unit tests\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{time:.3}\">\n",
        report.tests.len()
    ));
    for t in &report.tests {
        out.push_str(&format!(
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
            esc(&t.product),
            esc(&t.name),
            t.seconds
        ));
        let mut detail: Vec<String> = t.mismatches.iter().map(|m| format!("~ {m}")).collect();
        detail.extend(t.missing.iter().map(|r| format!("- missing {r}")));
        detail.extend(t.unexpected.iter().map(|r| format!("+ unexpected {r}")));
        match t.status {
            TestStatus::Pass => out.push_str("/>\n"),
            TestStatus::Fail => out.push_str(&format!(
                ">\n      <failure message=\"rows differ\">{}</failure>\n    </testcase>\n",
                esc(&detail.join("\n"))
            )),
            TestStatus::Error => out.push_str(&format!(
                ">\n      <error message=\"{}\"/>\n    </testcase>\n",
                esc(t.error.as_deref().unwrap_or("error"))
            )),
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

pub fn ls(report: &kiln::artifact::ListReport) {
    let width = report.nodes.iter().map(|n| n.name.len()).max().unwrap_or(4).max(4);
    let at_width = report.nodes.iter().map(|n| n.at.len()).max().unwrap_or(2).max(2);
    let status = |n: &kiln::artifact::ListedNode| match (n.version, n.rows) {
        (Some(v), Some(rows)) => format!("{} v{v}, {rows} rows", n.status),
        _ => n.status.clone(),
    };
    let sw = report.nodes.iter().map(|n| status(n).len()).max().unwrap_or(6).max(6);
    out!("{:<width$}  {:<7}  {:<at_width$}  {:<sw$}  tags", "name", "kind", "at", "status");
    for n in &report.nodes {
        let target = n.target.as_ref().map(|t| format!("checks {t}")).unwrap_or_default();
        let tags = n.tags.join(", ");
        let last = [tags, target].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join("; ");
        out!("{:<width$}  {:<7}  {:<at_width$}  {:<sw$}  {last}", n.name, n.kind, n.at, status(n));
    }
}

pub fn envs(list: &kiln::artifact::env::EnvList) {
    for e in &list.environments {
        let created = e.created.as_deref().map(|c| format!(", created {c}")).unwrap_or_default();
        if e.name == e.from {
            out!("{}: {} products", e.name, e.products);
        } else if e.differs.is_empty() {
            out!("{} (from {}{created}): {} products, all as in prod", e.name, e.from, e.products);
        } else {
            out!(
                "{} (from {}{created}): {} products, {} differ from prod: {}",
                e.name,
                e.from,
                e.products,
                e.differs.len(),
                e.differs.join(", ")
            );
        }
    }
}

pub fn env_diff(r: &kiln::artifact::env::EnvDiffReport) {
    for p in &r.products {
        let id = |b: &Option<String>| b.as_deref().map_or("-".to_owned(), |b| short(b).to_owned());
        match p.status.as_str() {
            "same" => out!("{}: same build {}", p.product, id(&p.a_build_id)),
            "only_a" => out!("{}: only in {} ({})", p.product, r.a, id(&p.a_build_id)),
            "only_b" => out!("{}: only in {} ({})", p.product, r.b, id(&p.b_build_id)),
            _ => {
                let reasons: Vec<String> = p.reasons.iter().map(ToString::to_string).collect();
                out!(
                    "{}: different build ({} {}, {} {}): {}",
                    p.product,
                    r.a,
                    id(&p.a_build_id),
                    r.b,
                    id(&p.b_build_id),
                    reasons.join("; ")
                );
            }
        }
    }
}

pub fn table_diff(r: &kiln::artifact::env::TableDiffReport) {
    out!(
        "{}: {} {} rows (build {}), {} {} rows (build {})",
        r.product,
        r.a.env,
        r.a.rows,
        short(&r.a.build_id),
        r.b.env,
        r.b.rows,
        short(&r.b.build_id)
    );
    for c in &r.columns_only_a {
        out!("  column {c}: only in {}", r.a.env);
    }
    for c in &r.columns_only_b {
        out!("  column {c}: only in {}", r.b.env);
    }
    for c in &r.columns_retyped {
        out!("  column {c}");
    }
    let Some(rows) = &r.rows else { return };
    out!(
        "  by {}: {} only in {}, {} only in {}, {} changed",
        rows.key.join(", "),
        rows.only_a,
        r.a.env,
        rows.only_b,
        r.b.env,
        rows.changed
    );
    for k in &rows.sample_only_a {
        out!("    only in {}: {k}", r.a.env);
    }
    for k in &rows.sample_only_b {
        out!("    only in {}: {k}", r.b.env);
    }
    for c in &rows.columns {
        out!("  {}: {} rows differ", c.column, c.changed);
        for [k, a, b] in &c.sample {
            out!("    {k}: {a} -> {b}");
        }
    }
}

/// A product merged by key, for `kiln plan` and the build summary: what it merges (or
/// why it is computed whole), and after a run the rows updated and inserted.
pub fn merge(plan: &kiln::artifact::merge::MergePlan) -> String {
    let n = |n: u64, what: &str| if n == 1 { format!("1 {what}") } else { format!("{n} {what}s") };
    let what = match &plan.rebuild {
        Some(why) => format!("computed whole from {} of `{}` ({why})", n(plan.files, "file"), plan.input),
        None => {
            format!("merges {} of `{}` by ({})", n(plan.files, "new file"), plan.input, plan.unique_key.join(", "))
        }
    };
    match (plan.updated, plan.inserted) {
        (Some(u), Some(i)) if plan.rebuild.is_none() => format!(
            "{what}: {} updated, {i} inserted, {} rewritten",
            n(u, "row"),
            n(plan.rewritten_files.unwrap_or(0), "committed file")
        ),
        _ => what,
    }
}

/// An incremental product's intervals, for `kiln plan` and the build summary: the filter,
/// then the runs of intervals it computes with their reasons (at most 12 lines of them).
pub fn intervals(plan: &kiln::artifact::intervals::IntervalPlan) -> Vec<String> {
    let mut lines = vec![format!(
        "intervals: {} of {} {}s in {} {} (time column `{}`; filter {})",
        plan.intervals,
        plan.held,
        plan.grain,
        plan.batches,
        if plan.batches == 1 { "commit" } else { "commits" },
        plan.column,
        plan.filter
    )];
    if let Some(input) = &plan.after {
        lines.push(format!(
            "  decided once `{input}` is built (its rewritten intervals say which); as of its committed build:"
        ));
    }
    const SHOWN: usize = 12;
    use kiln::artifact::intervals::{format_day, parse_day};
    for run in plan.compute.iter().take(SHOWN) {
        // The last interval's first day: ranges read inclusively, as --start/--end do.
        let last = parse_day(&run.end).map_or_else(|| run.end.clone(), |e| format_day(plan.grain.floor(e - 1)));
        let range = if run.intervals == 1 {
            run.start.clone()
        } else {
            format!("{} .. {last} ({} {}s)", run.start, run.intervals, plan.grain)
        };
        lines.push(format!("  {range}: {}", run.reason.as_str()));
    }
    if plan.compute.len() > SHOWN {
        lines.push(format!("  ... {} more ranges (kiln plan --json lists them all)", plan.compute.len() - SHOWN));
    }
    if let Some(note) = &plan.forward_only {
        lines.push(format!("  {note}"));
    }
    lines
}
