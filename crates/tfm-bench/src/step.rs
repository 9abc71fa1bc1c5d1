//! One training step on the tfm runtime: loss and gradients for a batch, then AdamW.

use dfdx::prelude::Cpu;
use rand::{rngs::StdRng, Rng, SeedableRng};
use tfm_bench::GptConfig;
use tfm_runtime::{Batch, HostTensor, ParamStore, Runtime};
use tfm_train::optim::{GradSet, OptimKind, OptimSettings};
use tfm_train::Optimizer;

/// Optimiser settings of the benchmark (AdamW, decoupled weight decay where a weight decays).
#[derive(Clone, Copy, Debug)]
pub struct Hyper {
    pub lr: f64,
    pub weight_decay: f64,
    pub seed: u64,
}

/// Random batches cycled through, as on the PyTorch side (speed does not depend on the data).
const BATCHES: usize = 4;

/// Holds the runtime, the parameters, the optimiser state and a few random batches.
pub struct Trainer {
    rt: Runtime<Cpu>,
    store: ParamStore<Cpu>,
    opt: Optimizer<Cpu>,
    batches: Vec<Batch>,
    hp: Hyper,
}

impl Trainer {
    pub fn new(model: &tfm_ir::Model, cfg: &GptConfig, hp: Hyper) -> Result<Self, String> {
        let rt = Runtime::new(model.clone(), Cpu::seed_from_u64(hp.seed)).map_err(|e| e.to_string())?;
        let store = rt.init_params(hp.seed);
        let settings = OptimSettings {
            kind: OptimKind::Adamw,
            betas: [0.9, 0.99],
            eps: 1e-8,
            weight_decay: hp.weight_decay,
            momentum: 0.0,
            decay_all: false,
            // As the PyTorch side groups them: every weight of two or more dims decays.
            decay_matrices: true,
        };
        let opt = Optimizer::new(settings, &store);
        let mut rng = StdRng::seed_from_u64(hp.seed);
        let (b, t) = (cfg.batch, cfg.context);
        let batches = (0..BATCHES)
            .map(|_| {
                let seq: Vec<i64> = (0..b * (t + 1)).map(|_| rng.gen_range(0..cfg.vocab as i64)).collect();
                let mut x = Vec::with_capacity(b * t);
                let mut y = Vec::with_capacity(b * t);
                for row in seq.chunks(t + 1) {
                    x.extend_from_slice(&row[..t]);
                    y.extend_from_slice(&row[1..]);
                }
                Batch {
                    inputs: vec![HostTensor::I64 { shape: vec![b, t], data: x }],
                    targets: Some(HostTensor::I64 { shape: vec![b, t], data: y }),
                }
            })
            .collect();
        Ok(Trainer { rt, store, opt, batches, hp })
    }

    /// Every weight of the built model, the tied head counted once.
    pub fn num_params(&self) -> usize {
        self.store.params.iter().map(|p| p.numel()).sum()
    }

    /// Runs training step `i` (forward, backward, AdamW update) and returns its loss.
    pub fn step(&mut self, i: usize) -> Result<f32, String> {
        let batch = &self.batches[i % self.batches.len()];
        let (loss, grads) = self
            .rt
            .loss_and_grads(&self.store, batch, self.hp.seed.wrapping_add(i as u64))
            .map_err(|e| e.to_string())?;
        let grads = GradSet::from_gradients(&self.store, grads).map_err(|e| e.to_string())?;
        self.opt.update(&mut self.store, &grads, self.hp.lr).map_err(|e| e.to_string())?;
        Ok(loss)
    }
}
