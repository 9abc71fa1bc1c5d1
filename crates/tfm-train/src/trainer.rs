//! The training loop: micro-batches, gradient accumulation and clipping, the optimizer step,
//! periodic evaluation and checkpoints, NaN/inf detection, interruption and exact resumption.
//!
//! # Determinism
//! Every random draw is a function of the run seed and the step: training windows come from one
//! generator whose state is saved in checkpoints; dropout seeds are `derive_seed(seed, [step,
//! micro])`; validation batches are the same fixed batches at every evaluation. A run resumed
//! from a checkpoint therefore produces the same losses and weights as an uninterrupted run.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use dfdx::prelude::*;
use tfm_runtime::ParamStore;

use crate::checkpoint::{self, Checkpoint, CheckpointMeta, LossScaleState};
use crate::config::{Precision, RunConfig};
use crate::data::{DataSource, Split};
use tfm_runtime::Batch;
use crate::error::TrainError;
use crate::logging::{CheckpointKind, EvalStats, Observer, StepStats};
use crate::optim::{GradSet, Optimizer};
use crate::rng::{derive_seed, Rng};

const STREAM_DATA: u64 = 1;
const STREAM_DROPOUT: u64 = 2;
const STREAM_EVAL: u64 = 3;

/// What the loop needs from a model: a loss with gradients for training, a loss for evaluation.
/// The gradients must be keyed by the store's parameter tensors (trace `p.value.clone()`).
pub trait TrainModel<D: Device<f32>> {
    fn loss_and_grads(
        &self,
        store: &ParamStore<D>,
        batch: &Batch,
        seed: u64,
    ) -> Result<(f32, Gradients<f32, D>), TrainError>;
    fn loss(&self, store: &ParamStore<D>, batch: &Batch) -> Result<f32, TrainError>;
    /// Mixed precision: the pass run with half-precision copies of the `f32` weights in
    /// `store`, the loss multiplied by `loss_scale` before the backward pass. Returns the loss
    /// and the `f32` gradients, still multiplied by `loss_scale`.
    fn loss_and_grads_half(
        &self,
        _store: &ParamStore<D>,
        _batch: &Batch,
        _seed: u64,
        _loss_scale: f32,
    ) -> Result<(f32, GradSet<D>), TrainError> {
        Err(TrainError::Model("this model has no half-precision pass; hint: train with `precision: f32`".into()))
    }
}

/// Dynamic loss scaling for mixed precision, with PyTorch's `GradScaler` defaults: the scale
/// starts at 2^16, halves (and the step is skipped) when the gradients overflow half precision,
/// and doubles after 2000 steps in a row without overflow.
#[derive(Clone, Copy, Debug, PartialEq)]
struct LossScaler {
    state: LossScaleState,
}

impl LossScaler {
    const INITIAL: f32 = 65536.0;
    const GROWTH_INTERVAL: u64 = 2000;
    /// Below this the gradients overflow at any scale: the run has diverged.
    const SMALLEST: f32 = 1.0;

    fn new() -> Self {
        LossScaler { state: LossScaleState { scale: Self::INITIAL, good_steps: 0 } }
    }

    /// Records a step's outcome; returns false when the gradients overflowed (skip the step).
    fn update(&mut self, finite: bool) -> bool {
        let s = &mut self.state;
        if finite {
            s.good_steps += 1;
            if s.good_steps >= Self::GROWTH_INTERVAL {
                s.scale *= 2.0;
                s.good_steps = 0;
            }
        } else {
            s.scale *= 0.5;
            s.good_steps = 0;
        }
        finite
    }
}

/// Things the loop needs besides the config.
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// SHA-256 of the elaborated model, stored in checkpoints and checked on resume.
    pub spec_hash: String,
    /// Continue from this checkpoint (its weights, optimizer state, step and data stream).
    pub resume: Option<Checkpoint>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TrainReport {
    pub start_step: u64,
    /// Optimizer steps completed.
    pub step: u64,
    /// Training loss of every step taken in this call, in order.
    pub losses: Vec<f32>,
    pub final_val_loss: Option<f32>,
    pub best_val_loss: Option<f32>,
    /// The stop flag was raised; a checkpoint was written to `last/`.
    pub interrupted: bool,
    pub last_checkpoint: Option<PathBuf>,
    pub best_checkpoint: Option<PathBuf>,
    /// Units (tokens, examples) trained on in this call.
    pub units: u64,
}

/// Mean loss over `batches` fixed validation batches.
pub fn evaluate<D: Device<f32>, M: TrainModel<D> + ?Sized>(
    model: &M,
    store: &ParamStore<D>,
    data: &dyn DataSource,
    config: &RunConfig,
    context: usize,
) -> Result<f32, TrainError> {
    let mut rng = Rng::new(derive_seed(config.seed, &[STREAM_EVAL]));
    let mut total = 0.0f64;
    let n = config.eval.batches.max(1);
    for _ in 0..n {
        let b = data.draw(Split::Val, config.batch_size, context, &mut rng)?;
        total += model.loss(store, &b.batch)? as f64;
    }
    Ok((total / n as f64) as f32)
}

/// Trains `store` in place for `config.steps` optimizer steps (counting steps already done when
/// resuming). Returns early, after writing `last/`, when `stop` is raised; returns
/// [`TrainError::NonFinite`] without writing anything when the loss or gradient norm is NaN or
/// infinite, so the last checkpoint stays the last good one.
pub fn train<D: Device<f32>, M: TrainModel<D> + ?Sized>(
    model: &M,
    store: &mut ParamStore<D>,
    config: &RunConfig,
    data: &dyn DataSource,
    options: TrainOptions,
    observer: &mut dyn Observer,
    stop: Arc<AtomicBool>,
) -> Result<TrainReport, TrainError> {
    config.validate()?;
    let context = data.fixed_context().unwrap_or(config.context);
    let eval_on = config.eval.batches > 0;
    data.check_context(context, eval_on)?;
    let schedule = config.schedule();
    let mut opt = Optimizer::new(config.optim_settings(), store);
    let mut rng = Rng::new(derive_seed(config.seed, &[STREAM_DATA]));
    let mut scaler = (config.precision == Precision::F16).then(LossScaler::new);
    let mut step = 0u64;
    let mut best: Option<f32> = None;
    let ck_dir = config.checkpoint_dir();
    let last_dir = ck_dir.join("last");
    let best_dir = ck_dir.join("best");
    let mut report = TrainReport {
        start_step: 0,
        step: 0,
        losses: Vec::new(),
        final_val_loss: None,
        best_val_loss: None,
        interrupted: false,
        last_checkpoint: None,
        best_checkpoint: None,
        units: 0,
    };
    if let Some(ck) = &options.resume {
        ck.check_spec_hash(&options.spec_hash)?;
        ck.meta.tokenizer.check_same(data.tokenizer())?;
        ck.restore(store, Some(&mut opt))?;
        step = ck.meta.step;
        rng = Rng::from_state(ck.meta.rng_state);
        best = ck.meta.best_val_loss;
        if let (Some(s), Some(state)) = (&mut scaler, ck.meta.loss_scale) {
            s.state = state;
        }
        report.last_checkpoint = Some(ck.path.clone());
        if best_dir.join(checkpoint::FILE_NAME).is_file() {
            report.best_checkpoint = Some(best_dir.join(checkpoint::FILE_NAME));
        }
    }
    report.start_step = step;
    observer.on_start(step, config.steps);

    let meta = |step: u64, rng: &Rng, best: Option<f32>, val: Option<f32>, opt: &Optimizer<D>, scaler: &Option<LossScaler>| {
        CheckpointMeta {
            step,
            rng_state: rng.state(),
            config_yaml: config.to_yaml(),
            spec_hash: options.spec_hash.clone(),
            tokenizer: data.tokenizer().clone(),
            best_val_loss: best,
            val_loss: val,
            optimizer: opt.settings.kind.name().to_string(),
            optimizer_step: opt.step,
            classes: data.classes().to_vec(),
            loss_scale: scaler.map(|s| s.state),
        }
    };
    let log_every = config.logging.every.max(1);
    let mut last_loss: Option<f32> = None;
    let mut evaluated_at: Option<u64> = None;

    loop {
        // Evaluation (and the best checkpoint) at the interval and at the end.
        let at_end = step >= config.steps;
        let due = config.eval.every > 0 && step.is_multiple_of(config.eval.every);
        let resumed_here = options.resume.is_some() && step == report.start_step;
        if eval_on && (due || at_end) && !resumed_here && evaluated_at != Some(step) {
            let val = evaluate(model, store, data, config, context)?;
            evaluated_at = Some(step);
            report.final_val_loss = Some(val);
            let improved = val.is_finite() && best.is_none_or(|b| val < b);
            if improved {
                best = Some(val);
            }
            observer.on_eval(&EvalStats {
                step,
                val_loss: val,
                train_loss: last_loss,
                best: improved,
            });
            if improved && config.checkpoints.keep_best && step > 0 {
                let p = checkpoint::save(
                    &best_dir,
                    store,
                    Some(&opt),
                    &meta(step, &rng, best, Some(val), &opt, &scaler),
                )?;
                observer.on_checkpoint(step, CheckpointKind::Best, &p);
                report.best_checkpoint = Some(p);
            }
        }
        let ck_due = config.checkpoints.every > 0 && step.is_multiple_of(config.checkpoints.every);
        if config.checkpoints.keep_last && step > report.start_step && (ck_due || at_end) {
            let val = (evaluated_at == Some(step))
                .then_some(report.final_val_loss)
                .flatten();
            let p = checkpoint::save(
                &last_dir,
                store,
                Some(&opt),
                &meta(step, &rng, best, val, &opt, &scaler),
            )?;
            observer.on_checkpoint(step, CheckpointKind::Last, &p);
            report.last_checkpoint = Some(p);
        }
        if at_end {
            break;
        }
        if stop.load(Ordering::SeqCst) {
            let p = checkpoint::save(
                &last_dir,
                store,
                Some(&opt),
                &meta(step, &rng, best, None, &opt, &scaler),
            )?;
            observer.on_checkpoint(step, CheckpointKind::Last, &p);
            report.last_checkpoint = Some(p);
            report.interrupted = true;
            break;
        }

        // One optimizer step over `accumulation` micro-batches.
        let started = Instant::now();
        let lr = schedule.lr(step);
        let mut acc: Option<GradSet<D>> = None;
        let mut loss_sum = 0.0f64;
        let mut units = 0usize;
        for micro in 0..config.accumulation {
            let drawn = data.draw(Split::Train, config.batch_size, context, &mut rng)?;
            units += drawn.units;
            let seed = derive_seed(config.seed, &[STREAM_DROPOUT, step, micro as u64]);
            let (loss, g) = match &scaler {
                None => {
                    let (loss, grads) = model.loss_and_grads(store, &drawn.batch, seed)?;
                    (loss, GradSet::from_gradients(store, grads)?)
                }
                Some(s) => model.loss_and_grads_half(store, &drawn.batch, seed, s.state.scale)?,
            };
            if !loss.is_finite() {
                return Err(TrainError::NonFinite {
                    step,
                    what: "the training loss",
                    value: loss,
                    last_checkpoint: report.last_checkpoint.clone(),
                    half: config.precision == Precision::F16,
                });
            }
            loss_sum += loss as f64;
            match &mut acc {
                None => acc = Some(g),
                Some(a) => a.accumulate(g)?,
            }
        }
        let Some(mut grads) = acc else { break };
        let unscale = scaler.map_or(1.0, |s| 1.0 / s.state.scale);
        if config.accumulation > 1 || unscale != 1.0 {
            grads.scale(unscale / config.accumulation as f32)?;
        }
        let norm = grads.global_norm()?;
        if let Some(s) = &mut scaler {
            // overflow in half precision: a smaller scale and the step skipped, as GradScaler does
            if !s.update(norm.is_finite()) {
                if s.state.scale < LossScaler::SMALLEST {
                    return Err(TrainError::NonFinite {
                        step,
                        what: "the gradient norm at every loss scale",
                        value: f32::INFINITY,
                        last_checkpoint: report.last_checkpoint.clone(),
                        half: true,
                    });
                }
                observer.on_warning(&format!(
                    "step {}: the gradients overflowed half precision; step skipped, loss scale lowered to {}",
                    step + 1,
                    s.state.scale
                ));
            }
        } else if !norm.is_finite() {
            return Err(TrainError::NonFinite {
                step,
                what: "the gradient norm",
                value: norm as f32,
                last_checkpoint: report.last_checkpoint.clone(),
                half: false,
            });
        }
        if norm.is_finite() {
            if let Some(c) = config.grad_clip() {
                grads.clip_with_norm(c, norm)?;
            }
            opt.update(store, &grads, lr)?;
        }
        report.units += units as u64;
        let loss = (loss_sum / config.accumulation as f64) as f32;
        last_loss = Some(loss);
        report.losses.push(loss);
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        observer.on_step(&StepStats {
            step,
            total_steps: config.steps,
            loss,
            lr,
            grad_norm: norm,
            tokens_per_sec: units as f64 / secs,
            log: step == 0 || (step + 1).is_multiple_of(log_every),
        });
        step += 1;
    }
    report.step = step;
    report.best_val_loss = best;
    observer.on_finish(step);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::LossScaler;

    #[test]
    fn loss_scale_halves_on_overflow_and_doubles_after_a_clean_stretch() {
        let mut s = LossScaler::new();
        assert_eq!(s.state.scale, 65536.0);
        assert!(!s.update(false));
        assert_eq!((s.state.scale, s.state.good_steps), (32768.0, 0));
        for _ in 0..LossScaler::GROWTH_INTERVAL - 1 {
            assert!(s.update(true));
        }
        assert_eq!((s.state.scale, s.state.good_steps), (32768.0, LossScaler::GROWTH_INTERVAL - 1));
        assert!(s.update(true));
        assert_eq!((s.state.scale, s.state.good_steps), (65536.0, 0));
        // an overflow resets the clean stretch
        s.update(true);
        s.update(false);
        assert_eq!((s.state.scale, s.state.good_steps), (32768.0, 0));
    }
}
