//! The control plane's error type, with source locations.

use std::fmt;

/// A position in a project file (1-based line and column; path relative to the project).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    pub file: String,
    pub line: u64,
    pub column: u64,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Everything that can go wrong while loading and compiling a project. All variants but
/// `Io`, `Data` and `Internal` are the user's fault and map to exit code 1.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}: project directory not found")]
    NoProject(String),
    #[error("{0}: no kiln.toml (a project directory needs one; `kiln init DIR` makes one)")]
    NoConfig(String),
    #[error("{file}: {message}")]
    Config { file: String, message: String },
    #[error("{at}: {message}")]
    Syntax { at: Location, message: String, snippet: String },
    #[error("{at}: unknown table `{name}` in product `{product}`{hint}")]
    UnknownTable { at: Location, product: String, name: String, hint: String },
    #[error("{at}: `{name}` is already defined at {first}")]
    Duplicate { at: Location, name: String, first: Location },
    #[error("cycle between products: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    #[error("{at}: invalid option: {message}")]
    Option { at: Location, message: String },
    /// A source's data cannot be read (no files, unreadable directory); the message names
    /// the source.
    #[error("{at}: {message}")]
    Source { at: Location, source_name: String, message: String },
    #[error("{at}: product `{product}`: {message}")]
    Compile { at: Location, product: String, message: String },
    /// A problem of one graph node, already located (an audit or test whose product
    /// cannot be resolved).
    #[error("{0}")]
    Node(String),
    /// A constraint, audit or test that does not compile.
    #[error("{at}: check `{check}`: {message}")]
    Check { at: Location, check: String, message: String },
    #[error("{at}: product `{product}` breaks its declared columns:\n  - {}", .violations.join("\n  - "))]
    Contract { at: Location, product: String, violations: Vec<String> },
    #[error("invalid selection `{0}`: no such product")]
    Selection(String),
    /// SQL from outside the project (`kiln query`) rejected by its surface, or not valid
    /// SQL; `surface` says which surface refused it, `message` is in the user's terms
    /// (no DataFusion prefixes or catalog names).
    #[error("query: {message}")]
    Query { surface: &'static str, message: String },
    #[error("profile: {0}")]
    Profile(String),
    /// A `--var` that kiln.toml does not declare, or whose value its type cannot hold.
    #[error("{0}")]
    Var(String),
    /// A compiled query could not be planned for execution (physical planning).
    #[error("{message}")]
    Plan { message: String },
    /// Installing the function registry failed.
    #[error(transparent)]
    Functions(#[from] kiln_functions::FunctionError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Data(#[from] kiln_data::DataError),
    #[error("internal error: {0}")]
    Internal(String),
    /// Several independent errors (e.g. one per broken file); all are reported.
    #[error("{}{}", .0.first().map(ToString::to_string).unwrap_or_default(),
        if .0.len() > 1 { format!(" (and {} more error(s))", .0.len() - 1) } else { String::new() })]
    Many(Vec<ControlError>),
}

impl ControlError {
    /// The errors this one stands for (itself, or each of `Many`).
    pub fn flatten(&self) -> Vec<&ControlError> {
        match self {
            ControlError::Many(all) => all.iter().flat_map(ControlError::flatten).collect(),
            other => vec![other],
        }
    }

    /// A caret snippet under the offending token, when the error has one.
    pub fn snippet(&self) -> Option<&str> {
        match self {
            ControlError::Syntax { snippet, .. } => Some(snippet),
            _ => None,
        }
    }

    /// Whether the user (not the environment or Kiln) must act.
    pub fn is_user_error(&self) -> bool {
        match self {
            ControlError::Io { .. } | ControlError::Internal(_) => false,
            ControlError::Functions(e) => matches!(e, kiln_functions::FunctionError::Secret(_)),
            ControlError::Data(e) => e.is_user_error(),
            ControlError::Many(all) => all.iter().all(ControlError::is_user_error),
            _ => true,
        }
    }

    /// Collapses a list of errors: none -> Ok, one -> itself, several -> Many.
    pub fn from_list(mut errors: Vec<ControlError>) -> Result<(), ControlError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(ControlError::Many(errors)),
        }
    }
}

/// `   3 | SELECT ...\n     |        ^` for a 1-based line and column of `text`.
pub fn caret_snippet(text: &str, line: u64, column: u64) -> String {
    let Some(src) = text.lines().nth(line.saturating_sub(1) as usize) else {
        return String::new();
    };
    let gutter = line.to_string().len();
    let pad: String =
        src.chars().take(column.saturating_sub(1) as usize).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
    format!("{line:>gutter$} | {src}\n{:>gutter$} | {pad}^", "")
}
