//! The registry: lookup, catalog, installation and the function fingerprint.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::SessionContext;
use sha2::{Digest, Sha256};

use crate::builtins::{
    HOP_STARTS, INTERVAL_END, INTERVAL_START, IntervalBound, PII_HASH, PiiHash, SHA256_HEX, STABLE_ID, Sha256Hex,
    StableId, TUMBLE_END, TUMBLE_START, WindowFn,
};
use crate::secrets::Secrets;
use crate::spec::FunctionSpec;
use crate::{FunctionError, hex};

/// Version of the function-fingerprint encoding.
pub const FUNC_FP_VERSION: u32 = 1;

/// A set of functions ready to install, with the secrets they may use.
#[derive(Debug, Clone)]
pub struct Registry {
    entries: Vec<(&'static FunctionSpec, Arc<ScalarUDF>)>,
    secrets: Arc<Secrets>,
}

impl Registry {
    /// Every builtin Kiln function, using `secrets` for keyed functions, and the JSON
    /// functions (crate::json).
    pub fn builtin(secrets: Secrets) -> Self {
        let secrets = Arc::new(secrets);
        let entries: Vec<(&'static FunctionSpec, Arc<ScalarUDF>)> = vec![
            (&*SHA256_HEX, Arc::new(ScalarUDF::new_from_impl(Sha256Hex::default()))),
            (&*PII_HASH, Arc::new(ScalarUDF::new_from_impl(PiiHash::new(Arc::clone(&secrets))))),
            (&*STABLE_ID, Arc::new(ScalarUDF::new_from_impl(StableId::default()))),
            (&*TUMBLE_START, Arc::new(ScalarUDF::new_from_impl(WindowFn::tumble_start()))),
            (&*TUMBLE_END, Arc::new(ScalarUDF::new_from_impl(WindowFn::tumble_end()))),
            (&*HOP_STARTS, Arc::new(ScalarUDF::new_from_impl(WindowFn::hop_starts()))),
            (&*INTERVAL_START, Arc::new(ScalarUDF::new_from_impl(IntervalBound::start()))),
            (&*INTERVAL_END, Arc::new(ScalarUDF::new_from_impl(IntervalBound::end()))),
        ];
        let entries = entries.into_iter().chain(crate::json::functions()).collect();
        Self { entries, secrets }
    }

    /// The secrets keyed functions use.
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    pub fn specs(&self) -> impl Iterator<Item = &FunctionSpec> {
        self.entries.iter().map(|(s, _)| *s)
    }

    pub fn by_id(&self, id: &str) -> Option<&FunctionSpec> {
        self.specs().find(|s| s.id == id)
    }

    pub fn by_name(&self, name: &str) -> Option<&FunctionSpec> {
        self.specs().find(|s| s.name == name)
    }

    /// Installs every function into `ctx`. Installing the same registry again is a no-op;
    /// a name already taken by a different function (a DataFusion builtin, a user UDF) is
    /// refused and nothing is replaced.
    pub fn install(&self, ctx: &SessionContext) -> Result<(), FunctionError> {
        let state = ctx.state();
        let existing = state.scalar_functions();
        for (spec, udf) in &self.entries {
            if let Some(current) = existing.get(spec.name) {
                if current.as_ref() == udf.as_ref() {
                    continue;
                }
                return Err(FunctionError::Shadow { name: spec.name.to_owned() });
            }
        }
        for (spec, udf) in &self.entries {
            if !existing.contains_key(spec.name) {
                ctx.register_udf(udf.as_ref().clone());
            }
        }
        // DataFusion's `array_agg` with Kiln's grouped accumulator (crate::nest): the same
        // function to every plan, faster and deterministic among ties.
        let array_agg = crate::nest::array_agg();
        if state.aggregate_functions().get(array_agg.name()).is_none_or(|f| f.as_ref() != &array_agg) {
            ctx.register_udaf(array_agg);
        }
        Ok(())
    }

    /// The fingerprint of the functions a product uses (by SQL name; non-Kiln names are
    /// ignored) and the secrets it keys them with:
    /// sha256("kiln.functions.v1\n" + for each used Kiln function in name order
    /// "function " + canonical spec + "\n" + for each secret in name order
    /// "secret <name> <keyed digest>\n"). A spec change, an implementation-version bump or
    /// a rotated secret changes it; nothing else does.
    pub fn fingerprint(&self, used: &BTreeSet<String>, secrets: &BTreeSet<String>) -> Result<String, FunctionError> {
        let specs: Vec<&FunctionSpec> = used.iter().filter_map(|n| self.by_name(n)).collect();
        let digests = secrets
            .iter()
            .map(|name| Ok((name.clone(), self.secrets.keyed_digest(name)?)))
            .collect::<Result<Vec<_>, FunctionError>>()?;
        Ok(fingerprint_of(&specs, &digests))
    }

    /// A fingerprint of everything installed: every function spec and the keyed digest of
    /// every declared secret (`unresolved` for one that cannot be resolved). Anything a
    /// product's `func_fp` can depend on changes it, so it keys caches of compile results.
    pub fn fingerprint_all(&self) -> String {
        let specs: Vec<&FunctionSpec> = self.specs().collect();
        let digests: Vec<(String, String)> = self
            .secrets
            .names()
            .map(|n| (n.to_owned(), self.secrets.keyed_digest(n).unwrap_or_else(|_| "unresolved".into())))
            .collect();
        fingerprint_of(&specs, &digests)
    }

    /// The catalog as Markdown, one section per function.
    pub fn catalog_markdown(&self) -> String {
        let mut out = String::from("# Kiln functions\n");
        for s in self.specs() {
            let args: Vec<String> = s.args.iter().map(|a| a.name.to_owned()).collect();
            let variadic = if s.variadic { ", ..." } else { "" };
            out.push_str(&format!("\n## `{}({}{variadic})`\n\n{}\n\n", s.name, args.join(", "), s.doc));
            out.push_str(&format!("- id: `{}` (implementation version {})\n", s.id, s.implementation_version));
            for a in &s.args {
                let literal = if a.literal { " (a literal)" } else { "" };
                out.push_str(&format!("- `{}`: {}{literal}\n", a.name, a.types));
            }
            out.push_str(&format!("- returns: {}\n- nulls: {}\n", s.returns, s.null_semantics));
            out.push_str(&format!(
                "- volatility: {}, deterministic: {}, optimizer sees through it: {}\n",
                s.volatility, s.deterministic, s.optimizer_transparent
            ));
            out.push_str(&format!("\n```sql\n{}\n```\n", s.example));
        }
        out
    }
}

/// The fingerprint encoding of [`Registry::fingerprint`] over explicit specs (in the given
/// order) and `(secret name, keyed digest)` pairs.
pub fn fingerprint_of(specs: &[&FunctionSpec], secret_digests: &[(String, String)]) -> String {
    let mut text = format!("kiln.functions.v{FUNC_FP_VERSION}\n");
    for spec in specs {
        text.push_str("function ");
        text.push_str(&spec.canonical());
        text.push('\n');
    }
    for (name, digest) in secret_digests {
        text.push_str(&format!("secret {name} {digest}\n"));
    }
    hex::to_hex(&Sha256::digest(text.as_bytes()))
}
