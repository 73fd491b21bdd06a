//! The control plane's compiler: the [`Substrate`] (one SessionContext with a project's
//! tables) and the compilation of sources, streams, products and views into the data
//! plane's programs.
//!
//! - [`substrate`]: the session, its tables, the SQL surfaces, physical planning;
//! - [`sources`]: sources and streams, every connector's options;
//! - [`product`]: products and materialized views;
//! - [`checks`]: constraints, audits and unit tests;
//! - [`schema`]: declared columns as schemas, planning errors with locations.

pub mod checks;
pub mod product;
pub mod schema;
pub mod sources;
pub mod substrate;

pub use checks::{CheckKind, CompiledCheck, CompiledFixture, CompiledTest, FixtureFormat, Thresholds};
pub use product::CompiledProduct;
pub use sources::{
    CompiledSource, DEFAULT_IDLE_TIMEOUT, EVENT_TIME_KEY, STREAM_CONNECTORS, WatermarkShape, watermark_delay,
};
pub use substrate::Substrate;
