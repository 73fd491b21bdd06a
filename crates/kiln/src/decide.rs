//! Deciding each selected product, in dependency order: its build id from its
//! fingerprints and its upstreams' versions, then fresh (the committed build has that id)
//! or build (with the reasons). `build` and `plan` run the same [`Session::step`]; `build`
//! then acts on it.

use kiln_artifact::identity::{build_id, content_versions, scoped_upstream};
use kiln_artifact::{Action, BuildFingerprints, ContentVersions, Decision, Manifest, Reason};
use kiln_control::dag::NodeKind;
use kiln_control::decision::decide;

use crate::KilnError;
use crate::session::Session;

/// What deciding a product found.
pub(crate) enum Step {
    /// It cannot be built: it failed, or an upstream did (`Skipped`).
    Blocked {
        action: Action,
        reason: String,
    },
    /// It ingests a micro-batch source: decided by polling it, not by fingerprints.
    Ingest {
        feed: String,
    },
    /// It does not compile now.
    Failed(String),
    Fresh {
        fps: BuildFingerprints,
        id: String,
        manifest: Manifest,
    },
    Build {
        fps: BuildFingerprints,
        id: String,
        reasons: Vec<Reason>,
        current: Option<Manifest>,
    },
}

/// A product's decision with what the caller needs to act on it.
pub(crate) enum Decided {
    Fresh { fps: BuildFingerprints, id: String, manifest: Manifest },
    Build { fps: BuildFingerprints, id: String, reasons: Vec<Reason>, current: Option<Manifest> },
    Failed(String),
}

impl Session {
    /// Decides product `i` whose committed build is `current` (see the module docs), and
    /// records what downstream products read of it: its build id and content versions as
    /// of this decision.
    pub(crate) async fn step(&mut self, i: usize, current: Option<Manifest>) -> Result<Step, KilnError> {
        if let Some((action, reason)) = self.blocked(i) {
            return Ok(Step::Blocked { action, reason });
        }
        if let Some(feed) = self.ingest_feed(i) {
            return Ok(Step::Ingest { feed });
        }
        Ok(match self.decide(i, current).await? {
            Decided::Failed(e) => {
                self.nodes[i].failed = Some(e.clone());
                Step::Failed(e)
            }
            Decided::Fresh { fps, id, manifest } => {
                self.nodes[i].version = Some(id.clone());
                self.record_content(i);
                Step::Fresh { fps, id, manifest }
            }
            Decided::Build { fps, id, reasons, current } => {
                self.nodes[i].version = Some(id.clone());
                self.record_content(i);
                Step::Build { fps, id, reasons, current }
            }
        })
    }

    /// Why product `i` cannot be built now, if it cannot: its own failure or an upstream's.
    pub(crate) fn blocked(&mut self, i: usize) -> Option<(Action, String)> {
        let graph = &self.graph;
        let upstream =
            graph.nodes[i].deps.iter().find(|&&d| self.nodes[d].failed.is_some()).map(|&d| graph.nodes[d].name.clone());
        if let Some(reason) = &self.nodes[i].failed {
            let skipped = upstream.is_some() && !self.nodes[i].known();
            return Some((if skipped { Action::Skipped } else { Action::Failed }, reason.clone()));
        }
        if let Some(up) = upstream {
            let reason = format!("upstream `{up}` failed");
            self.nodes[i].failed = Some(reason.clone());
            return Some((Action::Skipped, reason));
        }
        None
    }

    /// The fingerprints and build id of product `i` (compiled or cached) from its
    /// upstreams' versions: a source's data version, or the version of exactly the columns
    /// it reads from an upstream product (kiln_artifact::identity::scoped_upstream).
    pub(crate) fn identity(&self, i: usize) -> Option<(BuildFingerprints, String)> {
        let state = &self.nodes[i];
        let (name, schema_fp, query_fp, func_fp, shape) = match (&state.compiled, &state.cached) {
            (Some(c), _) => (&c.name, &c.schema_fp, &c.query_fp, &c.func_fp, &c.shape),
            (None, Some(c)) => (&c.product, &c.schema_fp, &c.query_fp, &c.func_fp, &c.shape),
            (None, None) => return None,
        };
        let graph = &self.graph;
        let upstream = graph.nodes[i]
            .deps
            .iter()
            .filter_map(|&d| {
                let up = &graph.nodes[d];
                let version = match up.kind {
                    NodeKind::Product | NodeKind::View => {
                        self.nodes[d].content.as_ref().map(|c| scoped_upstream(c, &shape.uses(&up.name)))
                    }
                    NodeKind::Source | NodeKind::Stream => self.nodes[d].version.clone(),
                    NodeKind::Audit | NodeKind::Test => None, // nothing reads them (dag)
                }?;
                Some((up.name.clone(), version))
            })
            .collect();
        let fps = BuildFingerprints {
            schema_fp: schema_fp.clone(),
            query_fp: query_fp.clone(),
            runtime_fp: self.substrate.runtime_fp().to_owned(),
            func_fp: func_fp.clone(),
            upstream,
        };
        let id = build_id(name, &fps);
        Some((fps, id))
    }

    /// Computes and records the content versions of product `i` as of its inputs now (what
    /// its committed build holds once it is fresh or built).
    pub(crate) fn record_content(&mut self, i: usize) -> Option<ContentVersions> {
        let state = &self.nodes[i];
        let (func_fp, shape) = match (&state.compiled, &state.cached) {
            (Some(c), _) => (&c.func_fp, &c.shape),
            (None, Some(c)) => (&c.func_fp, &c.shape),
            (None, None) => return None,
        };
        let lookup = |table: &str| self.graph.get(table).and_then(|d| self.nodes[d].content.as_ref());
        let content = content_versions(shape, self.substrate.runtime_fp(), func_fp, &lookup);
        self.nodes[i].content = Some(content.clone());
        Some(content)
    }

    /// The decision for product `i` with committed build `current`, compiling it only when
    /// the answer needs its plan (never-built and fresh products are decided from
    /// fingerprints alone).
    pub(crate) async fn decide(&mut self, i: usize, current: Option<Manifest>) -> Result<Decided, KilnError> {
        let Some((fps, id)) = self.identity(i) else { return Ok(Decided::Failed("not compiled".into())) };
        match &current {
            None => return Ok(Decided::Build { fps, id, reasons: vec![Reason::NeverBuilt], current }),
            Some(m) if m.build_id == id => {
                // An incremental product's build may lack intervals (a backfill limited by
                // --start/--end, or one killed between its batches), or be restated (as
                // may a product merged by key).
                let range = self.intervals.range.filter(|_| self.selected.contains(&i));
                let missing = m.intervals.as_ref().map_or(0, |s| crate::incremental::incomplete(s, range));
                let restate = self.intervals.restate
                    && self.selected.contains(&i)
                    && (m.intervals.is_some() || m.merge.is_some());
                if missing == 0 && !restate {
                    return Ok(Decided::Fresh { fps, id, manifest: m.clone() });
                }
                if let Err(e) = self.ensure_compiled(i).await {
                    return Ok(Decided::Failed(e.to_string()));
                }
                let reasons = if missing > 0 {
                    vec![Reason::IntervalsMissing { intervals: missing }]
                } else {
                    vec![Reason::Restated]
                };
                return Ok(Decided::Build { fps, id, reasons, current });
            }
            Some(_) => {}
        }
        if let Err(e) = self.ensure_compiled(i).await {
            return Ok(Decided::Failed(e.to_string()));
        }
        let Some((fps, id)) = self.identity(i) else { return Ok(Decided::Failed("not compiled".into())) };
        let Some(product) = &self.nodes[i].compiled else { return Ok(Decided::Failed("not compiled".into())) };
        // A changed query is explained by a diff against the committed build's plan.
        let old_fp = current.as_ref().and_then(|m| m.fingerprints.as_ref()).map(|f| f.query_fp.clone());
        let previous = match old_fp {
            Some(old) if old != fps.query_fp => self.store.plan(&old).await.ok().flatten(),
            _ => None,
        };
        let (decision, reasons) = decide(product, &fps, &id, current.as_ref(), previous.as_ref());
        Ok(match (decision, current) {
            (Decision::Fresh, Some(manifest)) => Decided::Fresh { fps, id, manifest },
            (_, current) => Decided::Build { fps, id, reasons, current },
        })
    }
}
