//! Products merged by key (`incremental = 'by_unique_key'`): what a committed build
//! records of the input files it merged, and what a build does (`kiln plan`, run results).

use serde::{Deserialize, Serialize};

use crate::intervals::InputFile;

/// What a committed build of a `by_unique_key` product has merged: the files of its
/// change input, by path and version. The next build merges the files not listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeState {
    pub unique_key: Vec<String>,
    /// The file source whose new files bring the rows to merge.
    pub input: String,
    pub files: Vec<InputFile>,
}

/// What a build of a `by_unique_key` product does (`ProductPlan::merge`,
/// `ProductRun::merge`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergePlan {
    pub unique_key: Vec<String>,
    pub input: String,
    /// The input's files this build merges (all of them when `rebuild` is set).
    pub files: u64,
    /// Why the build computes the product whole instead of merging new files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuild: Option<String>,
    /// Run results: the committed rows a new row replaced, and the new rows inserted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inserted: Option<u64>,
    /// Run results: committed files rewritten without their replaced rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewritten_files: Option<u64>,
}
