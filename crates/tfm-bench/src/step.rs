//! One training step on the tfm runtime: loss and gradients for a batch, then AdamW.

use rand::{rngs::StdRng, Rng, SeedableRng};
use tfm_bench::Bench;
use tfm_runtime::{profile, Backend, Batch, HostTensor, ParamStore, Runtime};
use tfm_train::optim::{GradSet, OptimKind, OptimSettings};
use tfm_train::Optimizer;

/// Optimiser settings of the benchmark (AdamW, decoupled weight decay where a weight decays).
#[derive(Clone, Copy, Debug)]
pub struct Hyper {
    pub lr: f64,
    pub weight_decay: f64,
    pub seed: u64,
    /// The device's fused kernels (false: the generic dfdx path).
    pub fused: bool,
}

/// Random batches cycled through, as on the PyTorch side (speed does not depend on the data).
const BATCHES: usize = 4;

/// Holds the runtime, the parameters, the optimiser state and a few random batches.
pub struct Trainer<D: Backend> {
    rt: Runtime<D>,
    store: ParamStore<D>,
    opt: Optimizer<D>,
    batches: Vec<Batch>,
    hp: Hyper,
}

impl<D: Backend> Trainer<D> {
    pub fn new(model: &tfm_ir::Model, bench: &Bench, hp: Hyper, dev: D) -> Result<Self, String> {
        let mut rt = Runtime::new(model.clone(), dev).map_err(|e| e.to_string())?;
        rt.set_fused(hp.fused);
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
        let batches = (0..BATCHES).map(|_| random_batch(bench, &mut rng)).collect();
        Ok(Trainer { rt, store, opt, batches, hp })
    }

    /// Every trained weight of the built model, the tied head counted once (fixed tables such
    /// as the sinusoidal positions are not counted, as in PyTorch they are buffers).
    pub fn num_params(&self) -> usize {
        self.store.num_trainable()
    }

    /// Device memory in use after the steps, in MiB, as the driver counts it, on a device with
    /// its own memory (dfdx keeps freed buffers for reuse, so this is the run's high-water mark
    /// plus the CUDA context).
    pub fn device_memory_used_mib(&self) -> Option<f64> {
        let (free, total) = self.rt.device().memory_info()?;
        Some(total.saturating_sub(free) as f64 / (1024.0 * 1024.0))
    }

    /// Runs training step `i` (forward, backward, AdamW update) and returns its loss.
    pub fn step(&mut self, i: usize) -> Result<f32, String> {
        let batch = &self.batches[i % self.batches.len()];
        let (loss, grads) = self
            .rt
            .loss_and_grads(&self.store, batch, self.hp.seed.wrapping_add(i as u64))
            .map_err(|e| e.to_string())?;
        let dev = self.rt.device().clone();
        let sync = || dev.sync().map_err(|e| e.to_string());
        let grads = profile::timed("gradients collected", sync, || GradSet::from_gradients(&self.store, grads).map_err(|e| e.to_string()))?;
        profile::timed("optimizer", sync, || self.opt.update(&mut self.store, &grads, self.hp.lr).map_err(|e| e.to_string()))?;
        // a GPU step is over when its queued update has run
        sync()?;
        Ok(loss)
    }
}

/// Token ids `[b, t + 1]` cut into inputs (the first `t`) and targets (the last `t`) per row.
fn shifted_windows(rng: &mut StdRng, b: usize, t: usize, lo: i64, hi: i64) -> (Vec<i64>, Vec<i64>) {
    let seq: Vec<i64> = (0..b * (t + 1)).map(|_| rng.gen_range(lo..hi)).collect();
    let mut x = Vec::with_capacity(b * t);
    let mut y = Vec::with_capacity(b * t);
    for row in seq.chunks(t + 1) {
        x.extend_from_slice(&row[..t]);
        y.extend_from_slice(&row[1..]);
    }
    (x, y)
}

/// One random batch of the benchmark's inputs, in the spec's input order.
fn random_batch(bench: &Bench, rng: &mut StdRng) -> Batch {
    match bench {
        Bench::Gpt(cfg) => {
            let (b, t) = (cfg.batch, cfg.context);
            let (x, y) = shifted_windows(rng, b, t, 0, cfg.vocab as i64);
            Batch {
                inputs: vec![HostTensor::I64 { shape: vec![b, t], data: x }],
                targets: Some(HostTensor::I64 { shape: vec![b, t], data: y }),
            }
        }
        Bench::Vit(cfg) => {
            let b = cfg.batch;
            let shape = vec![b, cfg.channels, cfg.image, cfg.image];
            let n: usize = shape.iter().product();
            let images: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
            let labels: Vec<i64> = (0..b).map(|_| rng.gen_range(0..cfg.classes as i64)).collect();
            Batch {
                inputs: vec![
                    HostTensor::F32 { shape, data: images },
                    HostTensor::I64 { shape: vec![b], data: labels },
                ],
                targets: None,
            }
        }
        Bench::Seq2seq(cfg) => {
            let (b, s, t) = (cfg.batch, cfg.src_len, cfg.tgt_len);
            // Ids from 1: id 0 is the padding id, and a full-length batch has no padding.
            let src: Vec<i64> = (0..b * s).map(|_| rng.gen_range(1..cfg.vocab as i64)).collect();
            let (tgt_in, tgt_out) = shifted_windows(rng, b, t, 1, cfg.vocab as i64);
            Batch {
                inputs: vec![
                    HostTensor::I64 { shape: vec![b, s], data: src },
                    HostTensor::I64 { shape: vec![b, t], data: tgt_in },
                ],
                targets: Some(HostTensor::I64 { shape: vec![b, t], data: tgt_out }),
            }
        }
    }
}
