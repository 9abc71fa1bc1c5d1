//! Lowers validated IR to runtime-shaped dfdx tensors: forward and backward on CPU or CUDA.
//!
//! # Architecture
//! - Every float value is a flat, contiguous `Tensor<(usize,), E, D>` plus its logical shape
//!   ([`value::FT`]), `E` being `f32` or, for mixed precision, [`Half`] (the parameter store
//!   keeps `f32` master weights; [`ParamStore::cast`] makes the half copy a step runs with);
//!   integer and boolean tensors (token ids, positions, padding masks) stay on
//!   the host. Reshapes are free; other layout changes (permute, slice, split, concat, expand,
//!   broadcasting) are gathers, whose backward accumulates.
//! - One gradient tape per run: each op's backward work is merged into it, so every parameter
//!   used anywhere (tied weights included) accumulates into the gradient keyed by its
//!   [`ParamStore`] tensor: `grads.get(&store.params[i].value)`.
//! - The hot operations go through the [`Backend`] trait: the default methods are written with
//!   dfdx ops and serve every device (CUDA included); the `Cpu` implementation overrides them with
//!   fused, rayon-parallel kernels (linear/matmul via `matrixmultiply`, layer/RMS norm, GELU,
//!   the whole attention core, cross-entropy).
//!
//! # Guards against dfdx 0.13 bugs
//! - `accurate_gelu`'s derivative is wrong: `gelu_exact` is computed with our own erf (CPU kernel,
//!   and a composite of dfdx ops elsewhere) and never with dfdx's `accurate_gelu`.
//! - dfdx's slice backward assigns instead of accumulating: slices, splits and `first` are gathers.
//! - dfdx's binary ops compute a gradient for both operands: masks (causal, window, padding,
//!   dropout) are applied inside the fused kernels on the CPU. The generic path adds attention
//!   masks as `[T, S]` and `[B, S]` tables broadcast on the device and multiplies by dropout
//!   scales, accepting the wasted gradient of the constant operand rather than building
//!   per-element index vectors on the host; nothing reads that gradient.

pub mod backend;
mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
#[cfg(any(feature = "cuda", feature = "emu"))]
mod kops;
#[cfg(feature = "cuda")]
pub mod cuda_kernels;
pub mod device;
mod exec;
pub mod fixtures;
pub use tfm_kernels as kernels;
pub mod gemm;
pub mod init;
mod layout;
mod mathf;
mod objective;
pub mod optim_cpu;
pub mod params;
pub mod profile;
pub mod value;

#[cfg(test)]
mod tests;

use dfdx::prelude::*;
use std::fmt;

pub use backend::{AnyPrecision, Backend, DeviceInfo};
pub use params::{Param, ParamStore};
pub use value::{Elem, Half};
pub use tfm_ir;

/// A tensor on the host: inputs to and outputs of the model.
#[derive(Clone, Debug, PartialEq)]
pub enum HostTensor {
    F32 { shape: Vec<usize>, data: Vec<f32> },
    I64 { shape: Vec<usize>, data: Vec<i64> },
    Bool { shape: Vec<usize>, data: Vec<bool> },
}

impl HostTensor {
    pub fn shape(&self) -> &[usize] {
        match self {
            HostTensor::F32 { shape, .. } | HostTensor::I64 { shape, .. } | HostTensor::Bool { shape, .. } => shape,
        }
    }
    pub fn dtype(&self) -> tfm_ir::DType {
        match self {
            HostTensor::F32 { .. } => tfm_ir::DType::F32,
            HostTensor::I64 { .. } => tfm_ir::DType::I64,
            HostTensor::Bool { .. } => tfm_ir::DType::Bool,
        }
    }
    pub fn len(&self) -> usize {
        match self {
            HostTensor::F32 { data, .. } => data.len(),
            HostTensor::I64 { data, .. } => data.len(),
            HostTensor::Bool { data, .. } => data.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The f32 data, if this is an f32 tensor.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match self {
            HostTensor::F32 { data, .. } => Some(data),
            _ => None,
        }
    }
}

/// One training or evaluation batch.
///
/// `inputs` are in model input order. `targets`, when given, replaces the labels the objective
/// would read from its second argument:
/// - `next_token`, `seq2seq`, `speech_to_text`: without `targets`, logits[:, t] is scored against
///   the objective's token argument at t + 1 for t < T - 1; with `targets` (`i64[B, T]`,
///   nanoGPT-style x/y windows), logits[:, t] is scored against targets[:, t] for every t;
/// - `masked_token`: labels with `-100` at positions that are not scored;
/// - `classify`: `i64[B]` labels.
///
/// In every objective a label of `-100` is ignored.
#[derive(Clone, Debug)]
pub struct Batch {
    pub inputs: Vec<HostTensor>,
    pub targets: Option<HostTensor>,
}

/// What can go wrong at run time (the checker has already proven the model's shapes).
#[derive(Clone, Debug, PartialEq)]
pub enum RuntimeError {
    /// An input tensor does not fit its port.
    Input { port: String, message: String },
    /// A value is out of range or inconsistent while running (token id, sequence too long).
    Run { message: String },
    /// The model cannot be run by this back end (unsupported dtype, missing objective).
    Unsupported { message: String },
    /// The device reported an error.
    Device { message: String },
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeError::Input { port, message } => write!(f, "input `{port}`: {message}"),
            RuntimeError::Run { message } => write!(f, "{message}"),
            RuntimeError::Unsupported { message } => write!(f, "unsupported: {message}"),
            RuntimeError::Device { message } => write!(f, "device error: {message}"),
        }
    }
}

impl std::error::Error for RuntimeError {}

pub(crate) fn run_err(message: impl Into<String>) -> RuntimeError {
    RuntimeError::Run { message: message.into() }
}

pub(crate) fn dev_err(e: impl fmt::Debug) -> RuntimeError {
    let raw = format!("{e:?}");
    let message = if device::is_out_of_memory(&raw) {
        format!("the GPU ran out of memory ({raw}); hint: {}", device::OUT_OF_MEMORY_HINT)
    } else {
        raw
    };
    RuntimeError::Device { message }
}

/// A checked model bound to a device.
pub struct Runtime<D> {
    model: tfm_ir::Model,
    dev: D,
    inst: exec::Inst,
    n_params: usize,
    fused: bool,
    gpu_kernels: bool,
    consts: value::Consts,
}

impl<D: Backend> Runtime<D> {
    pub fn new(model: tfm_ir::Model, dev: D) -> Result<Self, RuntimeError> {
        D::prepare_host();
        let mut counter = 0;
        let inst = exec::Inst::build(&model.graph, &mut counter);
        for p in &model.inputs {
            let ty = &model.graph.values[p.value].ty;
            if matches!(ty.dtype, tfm_ir::DType::F16 | tfm_ir::DType::Bf16) {
                return Err(RuntimeError::Unsupported {
                    message: format!(
                        "input `{}` has dtype {}; this back end runs f32, i64 and bool tensors",
                        p.name,
                        ty.dtype.name()
                    ),
                });
            }
        }
        Ok(Runtime { model, dev, inst, n_params: counter, fused: true, gpu_kernels: false, consts: value::Consts::default() })
    }

    pub fn model(&self) -> &tfm_ir::Model {
        &self.model
    }

    pub fn device(&self) -> &D {
        &self.dev
    }

    /// With `false`, every op uses the device-generic dfdx implementation even where the device
    /// has a fused kernel (to compare the two, or to rule a kernel out).
    pub fn set_fused(&mut self, on: bool) {
        self.fused = on;
    }

    /// With `true` (and fused kernels on), a CPU runtime runs the GPU's fused operations instead
    /// of its own: tfm's CUDA kernels on the kernel emulator, the same code a GPU runs. Tests use
    /// it to check that code where there is no GPU; it is slow. Only builds with the `emu` feature
    /// have the emulator; other devices ignore the switch.
    #[cfg(feature = "emu")]
    pub fn set_gpu_kernels(&mut self, on: bool) {
        self.gpu_kernels = on;
    }

    /// How many operations the GPU's fused kernels have run in this runtime's passes on the
    /// emulator ([`Runtime::set_gpu_kernels`]; counted only in builds with the emulator).
    #[cfg(feature = "emu")]
    pub fn fused_gpu_ops(&self) -> usize {
        kops::ops_counter(&self.consts).map_or(0, |c| c.load(std::sync::atomic::Ordering::Relaxed))
    }


    /// Allocates and initialises every weight (names from `Graph::for_each_param`).
    pub fn init_params(&self, seed: u64) -> ParamStore<D> {
        init::init_params(&self.model, &self.dev, seed)
    }

    /// Runs the model without a tape and copies its outputs to the host, in output order.
    /// `train` turns dropout on (seeded by `rng_seed`).
    pub fn forward(
        &self,
        store: &ParamStore<D>,
        inputs: &[HostTensor],
        train: bool,
        rng_seed: u64,
    ) -> Result<Vec<HostTensor>, RuntimeError> {
        D::pass_forward(self, store, inputs, train, rng_seed)
    }

    /// Training mode (dropout on): the objective's loss and the gradient of every weight.
    pub fn loss_and_grads(
        &self,
        store: &ParamStore<D>,
        batch: &Batch,
        rng_seed: u64,
    ) -> Result<(f32, Gradients<f32, D>), RuntimeError> {
        D::pass_loss_and_grads(self, store, batch, rng_seed, 1.0)
    }

    /// Evaluation mode (no dropout, no tape): the objective's loss.
    pub fn loss(&self, store: &ParamStore<D>, batch: &Batch) -> Result<f32, RuntimeError> {
        D::pass_loss(self, store, batch)
    }

    /// `sum(output0 * probe)` and its gradients (tests: checks every primitive's backward).
    #[cfg(test)]
    pub(crate) fn probe_grads(
        &self,
        store: &ParamStore<D>,
        inputs: &[HostTensor],
        probe: &[f32],
        train: bool,
    ) -> Result<(f32, Gradients<f32, D>), RuntimeError> {
        let mut cx = self.ctx::<f32, OwnedTape<f32, D>>(train, 7);
        let loss = self.probe_value(&mut cx, store, inputs, probe)?;
        let value = loss.t.as_vec()[0];
        let tape = std::mem::take(&mut cx.tape);
        let mut all = loss.t.clone().reshape_like(&()).put_tape(tape).backward();
        let mut grads = Gradients::leaky();
        for p in &store.params {
            let dst = grads.get_or_alloc_mut(&p.value).map_err(dev_err)?;
            std::mem::swap(dst, all.get_or_alloc_mut(&p.value).map_err(dev_err)?);
        }
        Ok((value, grads))
    }

    #[cfg(test)]
    pub(crate) fn probe_loss(&self, store: &ParamStore<D>, inputs: &[HostTensor], probe: &[f32], train: bool) -> Result<f32, RuntimeError> {
        let mut cx = self.ctx::<f32, NoneTape>(train, 7);
        Ok(self.probe_value(&mut cx, store, inputs, probe)?.t.as_vec()[0])
    }

    #[cfg(test)]
    fn probe_value<T: Tape<f32, D>>(
        &self,
        cx: &mut value::Ctx<D, T>,
        store: &ParamStore<D>,
        inputs: &[HostTensor],
        probe: &[f32],
    ) -> Result<value::FT<D>, RuntimeError> {
        let outs = exec::run_model(self, cx, store, inputs)?;
        let y = outs[self.model.outputs[0].value].as_ref().ok_or_else(|| run_err("no output"))?.f("output")?.clone();
        let r = cx.constant(probe.to_vec(), y.shape.clone())?;
        let prod = cx.zip(&y, &r, |a, b| a * b);
        let s = cx.tr(&prod).sum::<(), Axis<0>>();
        Ok(cx.keep(s, vec![]))
    }

}

/// The passes in any element type `E` the device runs (`f32`, or [`Half`] for mixed precision).
impl<D> Runtime<D> {
    /// Training mode in element type `E` with the loss multiplied by `loss_scale` before the
    /// backward pass (mixed precision: small gradients stay representable in half precision).
    /// Returns the unscaled loss and the scaled gradients.
    pub fn loss_and_grads_in<E: Elem>(
        &self,
        store: &ParamStore<D, E>,
        batch: &Batch,
        rng_seed: u64,
        loss_scale: f32,
    ) -> Result<(f32, Gradients<E, D>), RuntimeError>
    where
        D: Backend<E>,
    {
        D::pass_loss_and_grads(self, store, batch, rng_seed, loss_scale)
    }

    /// Evaluation mode in element type `E`.
    pub fn loss_in<E: Elem>(&self, store: &ParamStore<D, E>, batch: &Batch) -> Result<f32, RuntimeError>
    where
        D: Backend<E>,
    {
        D::pass_loss(self, store, batch)
    }

    fn ctx<E: Elem, T: Tape<E, D>>(&self, train: bool, seed: u64) -> value::Ctx<D, T, E>
    where
        D: Device<E>,
    {
        let mut cx = value::Ctx::new(self.dev.clone(), train, seed);
        cx.fused = self.fused;
        cx.gpu_kernels = self.gpu_kernels;
        cx.consts = self.consts.clone();
        cx
    }

    pub(crate) fn forward_here<E: Elem>(
        &self,
        store: &ParamStore<D, E>,
        inputs: &[HostTensor],
        train: bool,
        rng_seed: u64,
    ) -> Result<Vec<HostTensor>, RuntimeError>
    where
        D: Backend<E>,
    {
        self.check_store(store)?;
        let mut cx = self.ctx::<E, NoneTape>(train, rng_seed);
        let outs = exec::run_model(self, &mut cx, store, inputs)?;
        let ports: Vec<_> = self.model.outputs.iter().map(|p| p.value).collect();
        let mut host = Vec::with_capacity(ports.len());
        for v in ports {
            let val = outs.get(v).and_then(|v| v.as_ref()).ok_or_else(|| run_err("an output was not computed"))?;
            host.push(val.to_host());
        }
        Ok(host)
    }

    pub(crate) fn loss_and_grads_here<E: Elem>(
        &self,
        store: &ParamStore<D, E>,
        batch: &Batch,
        rng_seed: u64,
        loss_scale: f32,
    ) -> Result<(f32, Gradients<E, D>), RuntimeError>
    where
        D: Backend<E>,
    {
        self.check_store(store)?;
        let mut cx = self.ctx::<E, OwnedTape<E, D>>(true, rng_seed);
        let outs = exec::run_model(self, &mut cx, store, &batch.inputs)?;
        let loss = profile::timed("forward loss", || self.dev.sync(), || objective::loss(self, &mut cx, &outs, batch))?;
        let tape = std::mem::take(&mut cx.tape);
        let scalar = loss.t.clone().reshape_like(&()).put_tape(tape);
        let scalar = if loss_scale == 1.0 { scalar } else { scalar * E::of(loss_scale) };
        let mut all = profile::timed("backward", || self.dev.sync(), || Ok(scalar.backward()))?;
        // read after the backward pass is queued: reading waits for the device
        let value = loss.t.as_vec().first().map(|&x| x.value()).unwrap_or(f32::NAN);
        // Keep only the weights' gradients, allocating zeros for weights the loss does not reach.
        let mut grads = Gradients::leaky();
        for p in &store.params {
            let dst = grads.get_or_alloc_mut(&p.value).map_err(dev_err)?;
            let src = all.get_or_alloc_mut(&p.value).map_err(dev_err)?;
            std::mem::swap(dst, src);
        }
        Ok((value, grads))
    }

    pub(crate) fn loss_here<E: Elem>(&self, store: &ParamStore<D, E>, batch: &Batch) -> Result<f32, RuntimeError>
    where
        D: Backend<E>,
    {
        self.check_store(store)?;
        let mut cx = self.ctx::<E, NoneTape>(false, 0);
        let outs = exec::run_model(self, &mut cx, store, &batch.inputs)?;
        let loss = objective::loss(self, &mut cx, &outs, batch)?;
        Ok(loss.t.as_vec().first().map(|&x| x.value()).unwrap_or(f32::NAN))
    }

    fn check_store<E: Elem>(&self, store: &ParamStore<D, E>) -> Result<(), RuntimeError>
    where
        D: Device<E>,
    {
        if store.params.len() != self.n_params {
            return Err(run_err(format!(
                "expected a parameter store with {} weights, found {}; hint: create it with `init_params` or load a checkpoint of this model",
                self.n_params,
                store.params.len()
            )));
        }
        Ok(())
    }
}
