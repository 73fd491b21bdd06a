//! Semantic diff of two canonical plans: an edit script over plan nodes and their items.
//!
//! Nodes are matched top-down. Two nodes of the same kind are compared item by item within
//! each role (a longest common subsequence; an unmatched removal and insertion at the same
//! place pair up as an update) and then child by child. A node of another kind is a node
//! removal plus insertion, except that a node inserted above (or removed from above) an
//! otherwise matching subtree is reported as just that insertion (removal).
//!
//! Categories ([`ChangeCategory`]):
//! - metadata-only: no edits (the texts differ only in formatting, comments, aliases or
//!   CTE-vs-subquery form, which the canonical form erases);
//! - non-breaking: every edit is an inserted output column, or a column-level edit that
//!   only feeds columns (projection expressions and nodes, scanned columns, aggregate and
//!   window expressions): the `Output` node then says which columns changed, and it only
//!   gained some;
//! - breaking: anything else (a removed, renamed or redefined output column, a filter, a
//!   join, a grouping, an order, a limit, a table).

use kiln_artifact::{CanonicalPlan, ChangeCategory, Edit, EditOp, PlanDiff, PlanItem, PlanNode};

/// The semantic diff from `old` to `new`.
pub fn diff(old: &CanonicalPlan, new: &CanonicalPlan) -> PlanDiff {
    let mut edits = Vec::new();
    diff_node(&old.root, &new.root, &old.root.kind, &mut edits);
    let count = |op| edits.iter().filter(|e| e.op == op).count();
    let (inserted, removed, updated) = (count(EditOp::Insert), count(EditOp::Remove), count(EditOp::Update));
    let category = if edits.is_empty() {
        ChangeCategory::MetadataOnly
    } else if edits.iter().all(is_column_level) {
        ChangeCategory::NonBreaking
    } else {
        ChangeCategory::Breaking
    };
    PlanDiff { category, inserted, removed, updated, edits }
}

fn is_column_level(edit: &Edit) -> bool {
    let kind = edit.path.rsplit('/').next().unwrap_or_default();
    let kind = kind.split('[').next().unwrap_or_default();
    match (kind, edit.role.as_str()) {
        ("Output", "column") => edit.op == EditOp::Insert,
        ("Projection", _) => true,
        ("TableScan", "column") | ("Aggregate", "aggregate") | ("Window", "window") => true,
        _ => false,
    }
}

fn node_edit(op: EditOp, path: &str, node: &PlanNode) -> Edit {
    let items: Vec<String> = node.items.iter().map(|i| format!("{}: {}", i.role, i.text)).collect();
    let text = Some(if items.is_empty() { node.kind.clone() } else { format!("{} ({})", node.kind, items.join("; ")) });
    let (old, new) = if op == EditOp::Remove { (text, None) } else { (None, text) };
    Edit { op, path: path.to_owned(), role: "node".into(), old, new }
}

fn child_path(parent: &str, node: &PlanNode, index: usize, siblings: usize) -> String {
    if siblings > 1 { format!("{parent}/{}[{index}]", node.kind) } else { format!("{parent}/{}", node.kind) }
}

fn diff_node(a: &PlanNode, b: &PlanNode, path: &str, edits: &mut Vec<Edit>) {
    if a == b {
        return;
    }
    if a.kind != b.kind {
        // A node inserted above `a`, or `b` the input of a removed node.
        if let Some(pos) = b.children.iter().position(|c| c.kind == a.kind && c.children.len() == a.children.len()) {
            edits.push(node_edit(EditOp::Insert, path_with_kind(path, &b.kind).as_str(), b));
            let inner = child_path(&path_with_kind(path, &b.kind), &b.children[pos], pos, b.children.len());
            diff_node(a, &b.children[pos], &inner, edits);
            return;
        }
        if let Some(pos) = a.children.iter().position(|c| c.kind == b.kind && c.children.len() == b.children.len()) {
            edits.push(node_edit(EditOp::Remove, path_with_kind(path, &a.kind).as_str(), a));
            let inner = child_path(&path_with_kind(path, &a.kind), &a.children[pos], pos, a.children.len());
            diff_node(&a.children[pos], b, &inner, edits);
            return;
        }
        edits.push(node_edit(EditOp::Remove, path, a));
        edits.push(node_edit(EditOp::Insert, path, b));
        return;
    }
    diff_items(&a.items, &b.items, path, edits);
    diff_children(&a.children, &b.children, path, edits);
}

/// `path` with its last segment's kind replaced by `kind` (for a node inserted at `path`).
fn path_with_kind(path: &str, kind: &str) -> String {
    match path.rsplit_once('/') {
        Some((parent, _)) => format!("{parent}/{kind}"),
        None => kind.to_owned(),
    }
}

fn diff_items(a: &[PlanItem], b: &[PlanItem], path: &str, edits: &mut Vec<Edit>) {
    let mut roles: Vec<&str> = Vec::new();
    for item in a.iter().chain(b) {
        if !roles.contains(&item.role.as_str()) {
            roles.push(&item.role);
        }
    }
    for role in roles {
        let old: Vec<&str> = a.iter().filter(|i| i.role == role).map(|i| i.text.as_str()).collect();
        let new: Vec<&str> = b.iter().filter(|i| i.role == role).map(|i| i.text.as_str()).collect();
        let mut removed: Vec<&str> = Vec::new();
        let mut inserted: Vec<&str> = Vec::new();
        let mut flush = |removed: &mut Vec<&str>, inserted: &mut Vec<&str>| {
            let paired = removed.len().min(inserted.len());
            for i in 0..paired {
                edits.push(Edit {
                    op: EditOp::Update,
                    path: path.to_owned(),
                    role: role.to_owned(),
                    old: Some(removed[i].to_owned()),
                    new: Some(inserted[i].to_owned()),
                });
            }
            for r in &removed[paired..] {
                edits.push(Edit {
                    op: EditOp::Remove,
                    path: path.to_owned(),
                    role: role.to_owned(),
                    old: Some((*r).to_owned()),
                    new: None,
                });
            }
            for n in &inserted[paired..] {
                edits.push(Edit {
                    op: EditOp::Insert,
                    path: path.to_owned(),
                    role: role.to_owned(),
                    old: None,
                    new: Some((*n).to_owned()),
                });
            }
            removed.clear();
            inserted.clear();
        };
        for step in lcs(&old, &new, |x, y| x == y) {
            match step {
                Step::Same(..) => flush(&mut removed, &mut inserted),
                Step::Remove(i) => removed.push(old[i]),
                Step::Insert(j) => inserted.push(new[j]),
            }
        }
        flush(&mut removed, &mut inserted);
    }
}

fn diff_children(a: &[PlanNode], b: &[PlanNode], path: &str, edits: &mut Vec<Edit>) {
    if a.len() == b.len() {
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            diff_node(x, y, &child_path(path, x, i, a.len()), edits);
        }
        return;
    }
    let mut removed: Vec<usize> = Vec::new();
    let mut inserted: Vec<usize> = Vec::new();
    let flush = |removed: &mut Vec<usize>, inserted: &mut Vec<usize>, edits: &mut Vec<Edit>| {
        let paired = removed.len().min(inserted.len());
        for k in 0..paired {
            let (i, j) = (removed[k], inserted[k]);
            diff_node(&a[i], &b[j], &child_path(path, &a[i], i, a.len()), edits);
        }
        for &i in &removed[paired..] {
            edits.push(node_edit(EditOp::Remove, &child_path(path, &a[i], i, a.len()), &a[i]));
        }
        for &j in &inserted[paired..] {
            edits.push(node_edit(EditOp::Insert, &child_path(path, &b[j], j, b.len()), &b[j]));
        }
        removed.clear();
        inserted.clear();
    };
    for step in lcs(a, b, |x, y| x == y) {
        match step {
            Step::Same(..) => flush(&mut removed, &mut inserted, edits),
            Step::Remove(i) => removed.push(i),
            Step::Insert(j) => inserted.push(j),
        }
    }
    flush(&mut removed, &mut inserted, edits);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Same(usize, usize),
    Remove(usize),
    Insert(usize),
}

/// A longest-common-subsequence alignment of `a` and `b` as a sequence of steps.
fn lcs<T>(a: &[T], b: &[T], eq: impl Fn(&T, &T) -> bool) -> Vec<Step> {
    let (n, m) = (a.len(), b.len());
    let mut table = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            table[i][j] = if eq(&a[i], &b[j]) { table[i + 1][j + 1] + 1 } else { table[i + 1][j].max(table[i][j + 1]) };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut steps = Vec::with_capacity(n + m);
    while i < n && j < m {
        if eq(&a[i], &b[j]) {
            steps.push(Step::Same(i, j));
            i += 1;
            j += 1;
        } else if table[i + 1][j] >= table[i][j + 1] {
            steps.push(Step::Remove(i));
            i += 1;
        } else {
            steps.push(Step::Insert(j));
            j += 1;
        }
    }
    steps.extend((i..n).map(Step::Remove));
    steps.extend((j..m).map(Step::Insert));
    steps
}
