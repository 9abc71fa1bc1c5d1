//! Parameter, FLOP and memory accounting over validated IR, and the deterministic model snapshot.
//!
//! # What is counted, and how
//! - **Parameters** are counted from the IR without expanding a `repeat`: a body's weights are
//!   counted once and multiplied by the repeat count (once for a `shared` repeat), in `u128`,
//!   so a 7B model or a `repeat 1_000_000_000` costs nothing and cannot overflow.
//! - **Trainable** parameters are the `params` figure of `expect params == N`. A **tied** weight
//!   (one tensor read in more than one place, such as GPT-2's token embedding reused as the
//!   LM head) is one tensor and counted once; the summary lists it with the number of places that
//!   read it. **Fixed** weights (sinusoidal tables) are buffers: stored with the weights, never
//!   trained, and not part of the trainable count.
//! - **Shape variables** are bound from [`SummaryOptions`]: the model's first shape variable (in
//!   first-seen order, usually `B`) to `batch`, every other one (`T`, and also a second sequence
//!   variable such as the source length `S` of a sequence-to-sequence model) to `seq`. Inside a
//!   block, its own shape variables are bound by matching its input types against the tensors it
//!   is applied to.
//! - **Forward FLOPs** are counted per node for the bound shapes, one multiply-add as two FLOPs:
//!   `linear` `2·in·out` per row (plus `out` for the bias); `mlp` `2·d·hidden` per matrix (three
//!   matrices when gated) plus one FLOP per hidden activation (two when gated); `attention`
//!   `2·d·(q + k + v + o widths)` per token for the projections plus `2·2·S·heads·head_dim` per
//!   query token for scores and the weighted sum (`S` is the key length, or the sliding window
//!   when smaller; a causal mask is not halved, the kernel is dense), plus 5 FLOPs per score for
//!   the softmax; `@` is `2·M·K·N` per batch element; `patch_embed` and `conv1d` are
//!   `2·(input channels · kernel)` per output element; norms and softmax count 5 FLOPs per
//!   element, other elementwise functions 1; lookups (embeddings, positional tables), reshapes
//!   and slices are free. `flops_per_token` divides one forward pass by `batch · seq` (by `batch`
//!   when the model has a single shape variable, as an image model does). A training step is
//!   estimated as three forward passes.
//! - **Memory** is reported in bytes with every weight in `f32`: weights (trainable and fixed),
//!   gradients (one per trainable value), AdamW state (two moments per trainable value:
//!   `2 · trainable · 4` bytes) and activations. The activation figure estimates what backward
//!   keeps: every value a node produces (by its dtype), except weight reads and pure views
//!   (reshape, permute, expand, slice, split, first), plus the internals of the fused primitives
//!   (`attention`: q, k, v, the attention probabilities and the merged heads; `mlp`: the hidden
//!   pre- and post-activation, three hidden tensors when gated). Repeats multiply by their count.

mod account;
mod render;

pub use account::{count_params, summarize};
pub use render::{group_digits, human_bytes, human_flops, render_table, snapshot};

#[cfg(test)]
mod tests;

use serde::Serialize;
use tfm_ir::ConstValue;

/// The sizes to account for: binds the model's shape variables (see the crate docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SummaryOptions {
    /// Bound to the model's first shape variable (usually `B`).
    pub batch: u64,
    /// Bound to every further shape variable (usually `T`; also `S` in a seq2seq model).
    pub seq: u64,
}

impl Default for SummaryOptions {
    fn default() -> Self {
        SummaryOptions { batch: 1, seq: 128 }
    }
}

/// A compile-time parameter of the model and its value.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConfigValue {
    pub name: String,
    pub value: ConstValue,
}

/// A shape variable and the size it was bound to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Binding {
    pub name: String,
    pub value: u64,
}

/// A model input or output port with its symbolic type.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PortSummary {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub doc: Option<String>,
}

/// One top-level layer instance, block instance or repeat of the model (or the weightless
/// functions at the top level, gathered in one row named `(functions)`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    /// The instance name (`tok`, `blocks`), the prefix of its weights' names.
    pub name: String,
    /// The primitive (`embedding`), the block (`pre_ln_decoder_layer`), or
    /// `12 x pre_ln_decoder_layer` for a repeat (`12 x shared ...` when shared).
    pub kind: String,
    /// The block's doc comment.
    pub doc: Option<String>,
    /// Copies of the body: the repeat count, else 1.
    pub copies: u64,
    /// Trainable parameters, all copies (tied weights once).
    pub trainable: u128,
    /// Fixed (buffer) parameters, all copies.
    pub fixed: u128,
    /// The symbolic type(s) this row produces, `, `-separated.
    pub output: Option<String>,
    /// Forward FLOPs at the bound sizes, all copies.
    pub flops: u128,
    /// `flops` per token (see the crate docs).
    pub flops_per_token: f64,
    /// Weight bytes (f32), trainable and fixed.
    pub weight_bytes: u128,
    /// Estimated activation bytes kept for backward at the bound sizes.
    pub activation_bytes: u128,
}

/// A weight read in more than one place: one tensor, counted once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TiedWeight {
    /// Full name (`tok.weight`; repeats shown as `blocks.{0..11}.x.weight`).
    pub name: String,
    pub shape: Vec<u64>,
    /// Elements of one copy.
    pub numel: u128,
    /// How many places read it (primitive uses and `inst.weight` expressions).
    pub reads: u32,
}

/// Whole-model figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Totals {
    /// Trainable parameters, tied weights once: what `expect params` compares.
    pub trainable: u128,
    /// Fixed (buffer) parameters, not trained, not in `trainable`.
    pub fixed: u128,
    /// Elements that would be counted again if tied weights were counted per read.
    pub tied_savings: u128,
    /// One forward pass at `batch x seq`.
    pub flops_forward: u128,
    pub flops_per_token: f64,
    /// Estimated as three forward passes (forward plus backward).
    pub flops_train_step: u128,
    /// All weights in f32.
    pub weight_bytes: u128,
    /// One f32 gradient per trainable value.
    pub gradient_bytes: u128,
    /// AdamW's two moments: `2 x trainable x 4` bytes.
    pub optimizer_bytes: u128,
    /// Estimated activations kept for backward at the bound sizes.
    pub activation_bytes: u128,
    /// Weights + gradients + optimizer state + activations.
    pub training_bytes: u128,
}

/// Everything `tfm summary` shows; serialisable to JSON and YAML.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub model: String,
    pub doc: Option<String>,
    pub batch: u64,
    pub seq: u64,
    /// Shape variables and their bound sizes, in first-seen order.
    pub bindings: Vec<Binding>,
    pub config: Vec<ConfigValue>,
    pub inputs: Vec<PortSummary>,
    pub outputs: Vec<PortSummary>,
    pub objective: Option<String>,
    pub rows: Vec<Row>,
    pub tied: Vec<TiedWeight>,
    pub totals: Totals,
    /// How the figures were counted, in words.
    pub notes: Vec<String>,
}
