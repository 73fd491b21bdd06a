//! The run summary a build prints: one line per product, the checks, the reasons for
//! rebuilding, the warnings and the totals.

use kiln::artifact::{Action, RunSummary};

/// A line for the checks that ran, and one per check that did not pass.
fn print_checks<'a>(checks: impl Iterator<Item = &'a kiln::artifact::CheckRun>) {
    use kiln::artifact::CheckStatus;
    let checks: Vec<_> = checks.collect();
    if checks.is_empty() {
        return;
    }
    let count = |s: CheckStatus| checks.iter().filter(|c| c.status == s).count();
    let seconds: f64 = checks.iter().map(|c| c.seconds).sum();
    out!(
        "checks: {} passed, {} warned, {} failed in {seconds:.2}s",
        count(CheckStatus::Pass),
        count(CheckStatus::Warn),
        count(CheckStatus::Error)
    );
    for c in checks.iter().filter(|c| c.status != CheckStatus::Pass) {
        let what = match &c.error {
            Some(e) => e.clone(),
            None => format!("{} failing row(s)", c.failing_rows),
        };
        let label = if c.status == CheckStatus::Warn { "WARN " } else { "ERROR" };
        // A constraint's name already says its kind.
        let kind = if c.name.starts_with(&c.kind) { String::new() } else { format!(" ({})", c.kind) };
        out!("  {label} {}: {}{kind}: {what}", c.product, c.name);
    }
}

pub(crate) fn print_summary(summary: &RunSummary) {
    let width = summary.products.iter().map(|p| p.product.len()).max().unwrap_or(7).max(7);
    let with_audit = summary.products.iter().any(|p| p.action == Action::AuditFailed);
    let aw = if with_audit { 12 } else { 7 };
    out!("{:<width$}  {:<aw$}  {:>10}  {:>5}  {:>12}  {:>8}", "product", "action", "rows", "files", "bytes", "seconds");
    for p in &summary.products {
        let action = match p.action {
            Action::Built => "built",
            Action::Fresh => "fresh",
            Action::Reused => "reused",
            Action::Failed => "FAILED",
            Action::AuditFailed => "AUDIT FAILED",
            Action::Skipped => "skipped",
        };
        out!(
            "{:<width$}  {:<aw$}  {:>10}  {:>5}  {:>12}  {:>8.2}",
            p.product,
            action,
            p.rows,
            p.files,
            p.bytes,
            p.seconds
        );
    }
    print_checks(summary.products.iter().flat_map(|p| p.checks.iter()));
    // "never built" on a first build says nothing; any other reason is worth a line.
    let worth = |p: &&kiln::artifact::ProductRun| p.reasons.iter().any(|r| *r != kiln::artifact::Reason::NeverBuilt);
    for p in summary.products.iter().filter(worth) {
        let reasons: Vec<String> = p.reasons.iter().map(ToString::to_string).collect();
        out!("  {}: {}", p.product, reasons.join("; "));
    }
    for (p, plan) in summary.products.iter().filter_map(|p| p.intervals.as_deref().map(|i| (p, i))) {
        for line in crate::render::intervals(plan) {
            out!("  {}: {line}", p.product);
        }
    }
    for (p, plan) in summary.products.iter().filter_map(|p| p.merge.as_deref().map(|m| (p, m))) {
        out!("  {}: {}", p.product, crate::render::merge(plan));
    }
    for warning in &summary.warnings {
        out!("warning: {warning}");
    }
    let built = summary.products.iter().filter(|p| p.action == Action::Built).count();
    let fresh = summary.products.iter().filter(|p| p.action == Action::Fresh).count();
    let reused = summary.products.iter().filter(|p| p.action == Action::Reused).count();
    let failed = summary.products.iter().filter(|p| p.action.is_failure()).count();
    let skipped = summary.products.iter().filter(|p| p.action == Action::Skipped).count();
    let reused = if reused > 0 { format!(", {reused} reused") } else { String::new() };
    out!(
        "{built} built, {fresh} fresh{reused}, {failed} failed, {skipped} skipped in {:.2}s (run {})",
        summary.seconds,
        summary.run_id
    );
}
