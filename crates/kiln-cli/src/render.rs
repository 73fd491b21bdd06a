//! Human renderings of `kiln plan` and `kiln lineage` (the JSON shapes are in docs/json.md).

use kiln::artifact::{BaseColumn, Decision, Edit, EditOp, ExplainReport, Lineage, PlanReport, ProductDiff, Reason};

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

pub fn plan(report: &PlanReport) {
    let width = report.products.iter().map(|p| p.product.len()).max().unwrap_or(7).max(7);
    println!("{:<width$}  {:<8}  {:<12}  why", "product", "decision", "build id");
    for p in &report.products {
        let decision = match p.decision {
            Decision::Fresh => "fresh",
            Decision::Build => "build",
            Decision::Failed => "FAILED",
        };
        let why = match (&p.error, p.reasons.is_empty()) {
            (Some(e), _) => e.clone(),
            (None, true) => "committed build is current".to_owned(),
            (None, false) => p.reasons.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
        };
        println!("{:<width$}  {decision:<8}  {:<12}  {why}", p.product, short(p.build_id.as_deref().unwrap_or("-")));
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
                    println!("{:<width$}    {sign} {} {}: {text}", "", e.path, e.role);
                }
            }
        }
    }
    let count = |d| report.products.iter().filter(|p| p.decision == d).count();
    println!(
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
    println!("{}", lineage.product);
    for c in &lineage.columns {
        println!("  {}", c.column);
        for (label, cols) in
            [("value", &c.value), ("filter", &c.filter), ("join", &c.join), ("group", &c.group), ("order", &c.order)]
        {
            if !cols.is_empty() {
                println!("    {label:<6}  {}", list(cols));
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
        println!("{}: unchanged since its committed build", d.product);
        return;
    }
    match (&d.diff, &d.old_query_fp) {
        (Some(diff), _) => {
            println!("{}: {}", d.product, diff.summary());
            for e in &diff.edits {
                println!("  {}", edit(e));
            }
        }
        (None, _) => println!(
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
            println!("== {} {title} ==\n{}", r.product, text.trim_end());
        }
    }
}
