//! Function specifications and their canonical encoding.

/// What kind of function DataFusion sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FunctionKind {
    Scalar,
    Aggregate,
    Window,
    Table,
}

impl FunctionKind {
    /// The kind's name in the canonical spec text (and so in `func_fp`).
    pub fn canonical(self) -> &'static str {
        match self {
            FunctionKind::Scalar => "Scalar",
            FunctionKind::Aggregate => "Aggregate",
            FunctionKind::Window => "Window",
            FunctionKind::Table => "Table",
        }
    }

    /// The kind's name in the catalog (`scalar`, ...).
    pub fn name(self) -> &'static str {
        match self {
            FunctionKind::Scalar => "scalar",
            FunctionKind::Aggregate => "aggregate",
            FunctionKind::Window => "window",
            FunctionKind::Table => "table",
        }
    }
}

/// One argument: its name (usable with `name => value`) and the Arrow types it accepts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ArgSpec {
    pub name: &'static str,
    pub types: &'static str,
    /// Must be a constant (a literal) in the call.
    pub literal: bool,
}

/// The specification of a Kiln function. Every field is part of the function fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FunctionSpec {
    /// Stable id with the major version: `kiln.pii_hash.v1`.
    pub id: &'static str,
    /// The SQL name: prefixed `kiln_` for Kiln's own, `json_` for the JSON functions
    /// (crate::json).
    pub name: &'static str,
    pub kind: FunctionKind,
    pub args: Vec<ArgSpec>,
    /// Whether the last argument repeats (`kiln_stable_id(a, b, ...)`).
    pub variadic: bool,
    pub returns: &'static str,
    /// `immutable`, `stable` or `volatile` (DataFusion's volatility).
    pub volatility: &'static str,
    /// Same inputs give the same output on every run and machine.
    pub deterministic: bool,
    pub null_semantics: &'static str,
    /// Whether the optimizer may see through the call (simplify, fold constants).
    pub optimizer_transparent: bool,
    /// Bumped whenever the implementation's output could change for some input.
    pub implementation_version: u32,
    pub doc: &'static str,
    pub example: &'static str,
}

impl FunctionSpec {
    /// The canonical text of the spec that enters the fingerprint: one `key=value` line
    /// per field, in declaration order, strings length-prefixed.
    pub fn canonical(&self) -> String {
        let s = |v: &str| format!("{}:{v}", v.len());
        let mut out = format!(
            "id={}\nname={}\nkind={}\nvariadic={}\nreturns={}\nvolatility={}\ndeterministic={}\nnulls={}\ntransparent={}\nimpl={}\ndoc={}\nexample={}\n",
            s(self.id),
            s(self.name),
            self.kind.canonical(),
            self.variadic,
            s(self.returns),
            s(self.volatility),
            self.deterministic,
            s(self.null_semantics),
            self.optimizer_transparent,
            self.implementation_version,
            s(self.doc),
            s(self.example),
        );
        for a in &self.args {
            out.push_str(&format!("arg={} types={} literal={}\n", s(a.name), s(a.types), a.literal));
        }
        out
    }
}
