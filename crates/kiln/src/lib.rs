//! Kiln: deterministic data products on Apache DataFusion.
//!
//! This crate is the facade library users depend on and the engine behind the `kiln`
//! binary. [`build`] runs the main job: load a [`Project`] (control plane), generate
//! example data if the project asks for it, compile every product, execute each as a
//! stream of record batches and write it through the dataset writer (data plane), commit
//! it atomically, and record a run summary (artifact plane). Progress is reported through
//! an [`Observer`]; this crate never prints. [`stream`] runs the project's materialized
//! views over their streams with checkpointed, exactly-once output.
//!
//! The layers are re-exported for library users: [`contracts`], [`explode`], [`functions`],
//! [`artifact`], [`data`], [`control`].
//!
//! Architecture invariants:
//! - The engine orchestrates; it owns no SQL semantics (control) and moves no bytes itself
//!   (data).
//! - A product whose build fails leaves its previous committed build visible; products
//!   downstream of a failure are skipped, independent products still build.

pub mod engine;
mod ingest;
pub mod init;
pub mod inspect;
pub mod maintain;
pub mod produce;
pub mod stream;

pub use engine::{BuildOptions, BuildReport, Event, Observer, Quiet, build, lineage, plan};
pub use inspect::{QueryFormat, diff, explain, query};
pub use kiln_artifact as artifact;
pub use kiln_contracts as contracts;
pub use kiln_control as control;
pub use kiln_control::Project;
pub use kiln_data as data;
pub use kiln_explode as explode;
pub use kiln_functions as functions;
pub use maintain::{gc, rollback};
pub use produce::{ProduceReport, produce};
pub use stream::{StreamOptions, StreamReport, ViewStatus, stream};

/// The facade's error: which layer failed, with that layer's typed error.
#[derive(Debug, thiserror::Error)]
pub enum KilnError {
    #[error(transparent)]
    Control(#[from] kiln_control::ControlError),
    #[error(transparent)]
    Data(#[from] kiln_data::DataError),
    #[error(transparent)]
    Artifact(#[from] kiln_artifact::ArtifactError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A product the command needs does not compile.
    #[error("product `{product}`: {message}")]
    Product { product: String, message: String },
    #[error("{0}")]
    Usage(String),
}

impl KilnError {
    /// Whether the user's input (project, SQL, options) is at fault: exit code 1, not 3.
    pub fn is_user_error(&self) -> bool {
        match self {
            KilnError::Control(e) => e.is_user_error(),
            KilnError::Data(e) => !matches!(e, kiln_data::DataError::Io { .. } | kiln_data::DataError::Store { .. }),
            KilnError::Usage(_) | KilnError::Product { .. } => true,
            KilnError::Artifact(_) | KilnError::Io { .. } => false,
        }
    }
}
