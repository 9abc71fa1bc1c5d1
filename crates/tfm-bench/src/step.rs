//! One training step on the tfm runtime: loss and gradients for a batch, then AdamW.

use tfm_bench::GptConfig;

/// Optimiser settings of the benchmark (AdamW, decoupled weight decay on matrices).
#[derive(Clone, Copy, Debug)]
pub struct Hyper {
    pub lr: f64,
    pub weight_decay: f64,
    pub seed: u64,
}

/// Holds the runtime, the parameters, the optimiser state and a few random batches.
pub struct Trainer {
    params: usize,
}

impl Trainer {
    pub fn new(model: &tfm_ir::Model, cfg: &GptConfig, hp: Hyper) -> Result<Self, String> {
        let _ = (model, cfg, hp);
        Err("the tfm runtime has no training entry point yet (tfm_runtime::Runtime)".into())
    }

    pub fn num_params(&self) -> usize {
        self.params
    }

    /// Runs training step `i` and returns its loss.
    pub fn step(&mut self, i: usize) -> Result<f32, String> {
        let _ = i;
        Err("the tfm runtime has no training entry point yet".into())
    }
}
