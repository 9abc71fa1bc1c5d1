//! Optimisers over a [`ParamStore`]: AdamW (decoupled weight decay) and SGD with momentum, plus
//! the gradient set they consume (gathered from dfdx [`Gradients`], accumulated over
//! micro-batches, clipped by global norm). All arithmetic is dfdx tensor ops, so it runs on any
//! device (the only host traffic is one scalar per parameter for the gradient norm); on the CPU,
//! AdamW runs as one fused, parallel pass per weight with the same arithmetic.

use dfdx::prelude::*;
use serde::{Deserialize, Serialize};
use std::any::Any;
use tfm_runtime::optim_cpu::{adamw_cpu, AdamwConsts, AdamwScratch};
use tfm_runtime::ParamStore;

use crate::error::TrainError;

type Flat<D> = Tensor<(usize,), f32, D>;

/// A moment buffer: a device tensor, or a host vector that AdamW on the CPU updates in place.
#[derive(Clone, Debug)]
enum Moment<D: Device<f32>> {
    Dev(Flat<D>),
    Host(Vec<f32>),
}

impl<D: Device<f32>> Moment<D> {
    fn to_vec(&self) -> Vec<f32> {
        match self {
            Moment::Dev(t) => t.as_vec(),
            Moment::Host(v) => v.clone(),
        }
    }

    /// As a device tensor of `n` elements.
    fn into_dev(self, dev: &D, n: usize) -> Result<Flat<D>, D::Err> {
        match self {
            Moment::Dev(t) => Ok(t),
            Moment::Host(v) => dev.try_tensor_from_vec(v, (n,)),
        }
    }

    /// As a host vector (leaves a device tensor's copy).
    fn into_host(self) -> Vec<f32> {
        match self {
            Moment::Dev(t) => t.as_vec(),
            Moment::Host(v) => v,
        }
    }
}

/// AdamW in one fused, parallel pass, in place, when the weights live on the CPU (same
/// arithmetic as the generic chain of tensor ops below); `false` on other devices.
fn adamw_fused<D: Device<f32>>(
    c: &AdamwConsts,
    p: &mut Flat<D>,
    g: &Flat<D>,
    m: &mut Option<Moment<D>>,
    v: &mut Option<Moment<D>>,
    scratch: &mut AdamwScratch,
) -> bool {
    let (Some(pc), Some(gc)) = ((p as &mut dyn Any).downcast_mut::<Flat<Cpu>>(), (g as &dyn Any).downcast_ref::<Flat<Cpu>>()) else {
        return false;
    };
    let mut mh = m.take().map(Moment::into_host).unwrap_or_default();
    let mut vh = v.take().map(Moment::into_host).unwrap_or_default();
    adamw_cpu(c, pc, gc, &mut mh, &mut vh, scratch);
    *m = Some(Moment::Host(mh));
    *v = Some(Moment::Host(vh));
    true
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimKind {
    Adamw,
    Sgd,
}

impl OptimKind {
    pub fn name(self) -> &'static str {
        match self {
            OptimKind::Adamw => "adamw",
            OptimKind::Sgd => "sgd",
        }
    }
}

/// Hyper-parameters of an optimiser (the learning rate comes from the schedule at each step).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptimSettings {
    pub kind: OptimKind,
    pub betas: [f64; 2],
    pub eps: f64,
    pub weight_decay: f64,
    /// SGD momentum (0 = plain SGD).
    pub momentum: f64,
    /// Apply weight decay to every trainable weight, ignoring `Param::decay`.
    pub decay_all: bool,
    /// Also decay every weight of two or more dimensions (embeddings included), as nanoGPT does.
    pub decay_matrices: bool,
}

impl Default for OptimSettings {
    fn default() -> Self {
        OptimSettings {
            kind: OptimKind::Adamw,
            betas: [0.9, 0.95],
            eps: 1e-8,
            weight_decay: 0.1,
            momentum: 0.9,
            decay_all: false,
            decay_matrices: false,
        }
    }
}

/// One gradient per parameter (`None` for weights that are not trained).
#[derive(Clone, Debug)]
pub struct GradSet<D: Device<f32>> {
    pub grads: Vec<Option<Flat<D>>>,
}

impl<D: Device<f32>> GradSet<D> {
    /// Takes the gradient of every trainable parameter out of `grads`; a parameter that received
    /// no gradient gets zeros.
    pub fn from_gradients(
        store: &ParamStore<D>,
        mut grads: Gradients<f32, D>,
    ) -> Result<Self, TrainError> {
        let mut out = Vec::with_capacity(store.params.len());
        for p in &store.params {
            if !p.trainable {
                out.push(None);
                continue;
            }
            grads.try_alloc_for(&p.value).map_err(TrainError::device)?;
            out.push(Some(grads.get(&p.value)));
        }
        Ok(GradSet { grads: out })
    }

    /// Adds another micro-batch's gradients.
    pub fn accumulate(&mut self, other: GradSet<D>) -> Result<(), TrainError> {
        for (a, b) in self.grads.iter_mut().zip(other.grads) {
            if let (Some(x), Some(y)) = (a.take(), b) {
                *a = Some(x.try_add(y).map_err(TrainError::device)?);
            }
        }
        Ok(())
    }

    /// Multiplies every gradient by `s`.
    pub fn scale(&mut self, s: f32) -> Result<(), TrainError> {
        for g in self.grads.iter_mut() {
            if let Some(x) = g.take() {
                *g = Some(x.try_mul(s).map_err(TrainError::device)?);
            }
        }
        Ok(())
    }

    /// The L2 norm of all gradients together (per-parameter sums of squares added in f64).
    pub fn global_norm(&self) -> Result<f64, TrainError> {
        // every sum queued first, then read: on a GPU, reading each as it is queued would leave
        // the device idle between them
        let mut sums: Vec<Tensor<(), f32, D>> = Vec::with_capacity(self.grads.len());
        for g in self.grads.iter().flatten() {
            sums.push(g.clone().try_square().and_then(|t| t.try_sum()).map_err(TrainError::device)?);
        }
        let mut total = 0.0f64;
        for s in &sums {
            total += s.as_vec()[0] as f64;
        }
        Ok(total.sqrt())
    }

    /// Scales the gradients so their global norm is at most `max_norm` (PyTorch's
    /// `clip_grad_norm_`: factor `max_norm / (norm + 1e-6)` when below 1). Returns the norm
    /// before clipping.
    pub fn clip(&mut self, max_norm: f64) -> Result<f64, TrainError> {
        let norm = self.global_norm()?;
        self.clip_with_norm(max_norm, norm)?;
        Ok(norm)
    }

    /// [`GradSet::clip`] when the global norm is already known.
    pub fn clip_with_norm(&mut self, max_norm: f64, norm: f64) -> Result<(), TrainError> {
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            self.scale(coef as f32)?;
        }
        Ok(())
    }

    /// The gradients on the host, for tests and inspection.
    pub fn to_host(&self) -> Vec<Option<Vec<f32>>> {
        self.grads
            .iter()
            .map(|g| g.as_ref().map(|t| t.as_vec()))
            .collect()
    }
}

/// An optimiser with its state: the update count and one or two moment buffers per parameter.
#[derive(Clone, Debug)]
pub struct Optimizer<D: Device<f32>> {
    pub settings: OptimSettings,
    /// Updates applied so far (Adam's `t`).
    pub step: u64,
    /// First moment (AdamW) or momentum buffer (SGD), by parameter index; `None` = zeros.
    m: Vec<Option<Moment<D>>>,
    /// Second moment (AdamW only).
    v: Vec<Option<Moment<D>>>,
    /// Host buffers reused by every CPU AdamW step.
    scratch: AdamwScratch,
    /// Use the fused host AdamW on the CPU (off: the device-generic dfdx ops that a GPU runs,
    /// so that tests check that path too).
    pub host_kernels: bool,
}

impl<D: Device<f32>> Optimizer<D> {
    pub fn new(settings: OptimSettings, store: &ParamStore<D>) -> Self {
        let n = store.params.len();
        Optimizer {
            settings,
            step: 0,
            m: vec![None; n],
            v: vec![None; n],
            scratch: AdamwScratch::default(),
            host_kernels: true,
        }
    }

    /// Applies one update with learning rate `lr`.
    ///
    /// AdamW (as PyTorch's `AdamW`): `m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) g^2`,
    /// `p = p (1 - lr wd) - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)`, the decay
    /// term only where the parameter decays.
    ///
    /// SGD (as PyTorch's `SGD`): `g = g + wd p` where the parameter decays, `buf = mu buf + g`,
    /// `p = p - lr buf` (plain `p = p - lr g` when `mu = 0`).
    pub fn update(
        &mut self,
        store: &mut ParamStore<D>,
        grads: &GradSet<D>,
        lr: f64,
    ) -> Result<(), TrainError> {
        if grads.grads.len() != store.params.len() || self.m.len() != store.params.len() {
            return Err(TrainError::Model(format!(
                "expected {} gradients and moments, found {} and {}",
                store.params.len(),
                grads.grads.len(),
                self.m.len()
            )));
        }
        self.step += 1;
        let s = self.settings;
        let t = self.step as i32;
        for (i, p) in store.params.iter_mut().enumerate() {
            let Some(g) = (if p.trainable {
                grads.grads[i].as_ref()
            } else {
                None
            }) else {
                continue;
            };
            let decays = (p.decay || s.decay_all || (s.decay_matrices && p.shape.len() >= 2)) && s.weight_decay != 0.0;
            let n = p.value.shape().0;
            let dev = p.value.device().clone();
            let zeros = || dev.try_zeros_like(&(n,)).map_err(TrainError::device);
            match s.kind {
                OptimKind::Adamw => {
                    let [b1, b2] = s.betas;
                    let bc1 = 1.0 - b1.powi(t);
                    let bc2 = 1.0 - b2.powi(t);
                    let consts = AdamwConsts {
                        b1: b1 as f32,
                        one_minus_b1: (1.0 - b1) as f32,
                        b2: b2 as f32,
                        one_minus_b2: (1.0 - b2) as f32,
                        inv_sqrt_bc2: (1.0 / bc2.sqrt()) as f32,
                        eps: s.eps as f32,
                        step: (lr / bc1) as f32,
                        decay: decays.then_some((1.0 - lr * s.weight_decay) as f32),
                    };
                    if self.host_kernels && adamw_fused(&consts, &mut p.value, g, &mut self.m[i], &mut self.v[i], &mut self.scratch) {
                        continue;
                    }
                    let m_prev = match self.m[i].take() {
                        Some(m) => m.into_dev(&dev, n).map_err(TrainError::device)?,
                        None => zeros()?,
                    };
                    let v_prev = match self.v[i].take() {
                        Some(v) => v.into_dev(&dev, n).map_err(TrainError::device)?,
                        None => zeros()?,
                    };
                    // dfdx ops, each a kernel on a GPU: the moments and the weight are updated
                    // in place by `a = alpha a + beta b` (eight kernels a weight, not fourteen)
                    let r = (|| {
                        let (mut m, mut v) = (m_prev, v_prev);
                        m.try_axpy(consts.b1, g, consts.one_minus_b1)?;
                        v.try_axpy(consts.b2, &g.clone().try_square()?, consts.one_minus_b2)?;
                        let denom = v.clone().try_sqrt()?.try_mul(consts.inv_sqrt_bc2)?.try_add(consts.eps)?;
                        let upd = m.clone().try_div(denom)?;
                        p.value.try_axpy(consts.decay.unwrap_or(1.0), &upd, -consts.step)?;
                        Ok::<_, D::Err>((m, v))
                    })();
                    let (m, v) = r.map_err(TrainError::device)?;
                    self.m[i] = Some(Moment::Dev(m));
                    self.v[i] = Some(Moment::Dev(v));
                }
                OptimKind::Sgd => {
                    let r = (|| {
                        let mut g = g.clone();
                        if decays {
                            g = g.try_add(p.value.clone().try_mul(s.weight_decay as f32)?)?;
                        }
                        let step_dir = if s.momentum != 0.0 {
                            let buf = match self.m[i].take() {
                                Some(b) => b.into_dev(&dev, n)?.try_mul(s.momentum as f32)?.try_add(g)?,
                                None => g,
                            };
                            self.m[i] = Some(Moment::Dev(buf.clone()));
                            buf
                        } else {
                            g
                        };
                        p.value.clone().try_sub(step_dir.try_mul(lr as f32)?)
                    })();
                    p.value = r.map_err(TrainError::device)?;
                }
            }
        }
        Ok(())
    }

    /// The state as named host buffers: `optim.m.<name>` (and `optim.v.<name>` for AdamW) for every
    /// parameter that has a moment.
    pub fn state_tensors(&self, store: &ParamStore<D>) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut out = Vec::new();
        for (i, p) in store.params.iter().enumerate() {
            if let Some(m) = &self.m[i] {
                out.push((format!("optim.m.{}", p.name), p.shape.clone(), m.to_vec()));
            }
            if let Some(v) = &self.v[i] {
                out.push((format!("optim.v.{}", p.name), p.shape.clone(), v.to_vec()));
            }
        }
        out
    }

    /// Restores the state saved by [`Optimizer::state_tensors`]; `get` returns the host buffer for a
    /// name. After at least one step every trainable parameter must have its moments.
    pub fn load_state(
        &mut self,
        store: &ParamStore<D>,
        step: u64,
        mut get: impl FnMut(&str) -> Option<Vec<f32>>,
    ) -> Result<(), String> {
        self.step = step;
        let mut missing = Vec::new();
        for (i, p) in store.params.iter().enumerate() {
            self.m[i] = None;
            self.v[i] = None;
            if !p.trainable {
                continue;
            }
            let dev = p.value.device().clone();
            let n = p.numel();
            let mut fetch = |key: String,
                             missing: &mut Vec<String>|
             -> Result<Option<Moment<D>>, String> {
                match get(&key) {
                    Some(data) if data.len() == n => Ok(Some(Moment::Dev(dev.tensor_from_vec(data, (n,))))),
                    Some(data) => Err(format!("`{key}` has {} values, expected {n}", data.len())),
                    None => {
                        missing.push(key);
                        Ok(None)
                    }
                }
            };
            let needs_m = step > 0
                && (self.settings.kind == OptimKind::Adamw || self.settings.momentum != 0.0);
            let needs_v = step > 0 && self.settings.kind == OptimKind::Adamw;
            if needs_m {
                self.m[i] = fetch(format!("optim.m.{}", p.name), &mut missing)?;
            }
            if needs_v {
                self.v[i] = fetch(format!("optim.v.{}", p.name), &mut missing)?;
            }
        }
        if !missing.is_empty() {
            return Err(format!(
                "optimizer state missing for: {}",
                missing.join(", ")
            ));
        }
        Ok(())
    }
}
