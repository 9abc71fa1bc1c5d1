//! The pest parser derived from `grammar/tfm.pest`.

use pest_derive::Parser;

/// The derived parser; `Rule` has one variant per grammar rule.
#[derive(Parser)]
#[grammar = "../../grammar/tfm.pest"]
pub(crate) struct TfmParser;
