//! tfm's own CUDA kernels, compiled at run time with NVRTC and launched through a cudarc handle
//! on the same device, context and stream as dfdx's `Cuda` (cudarc 0.9 devices share the primary
//! context and launch on the legacy default stream, so work is ordered with dfdx's).
//!
//! dfdx keeps a tensor's device buffer private, so a kernel writes its output into a gradient
//! buffer (`Gradients::get_or_alloc_mut`, which hands out the `CudaSlice`) and the tensor is taken
//! from there (`Gradients::get`, one device-to-device copy).
//!
//! The kernels' source and launch geometry are in `kernels`; `device` and `func` hand them to
//! the GPU tests, which run each against the CPU references.
//!
//! `keep_scales`: dropout multipliers drawn on the device (0 with probability `p`, else
//! `scale`) from a counter-based hash of (seed, index), instead of drawing them on the host and
//! copying them over (at nanoGPT's GPU size, 230 million per step).

use crate::value::{Elem, Flat};
use crate::{dev_err, run_err, RuntimeError};
use cudarc::driver::{CudaDevice, CudaFunction, DevicePtr, LaunchAsync, LaunchConfig};
use dfdx::prelude::*;
use std::sync::{Arc, OnceLock};

const MODULE: &str = "tfm_kernels";

/// The kernels as PTX (NVRTC; needs no GPU).
pub(crate) fn compile() -> Result<cudarc::nvrtc::Ptx, String> {
    cudarc::nvrtc::compile_ptx(crate::kernels::SOURCE).map_err(|e| format!("compiling tfm's CUDA kernels: {e:?}"))
}

/// Our handle on device 0, with the module loaded (once per process).
pub fn device() -> Result<&'static Arc<CudaDevice>, RuntimeError> {
    static DEV: OnceLock<Result<Arc<CudaDevice>, String>> = OnceLock::new();
    let dev = DEV.get_or_init(|| {
        let ptx = compile()?;
        let dev = crate::device::quietly(|| CudaDevice::new(0))?.map_err(|e| format!("{e:?}"))?;
        dev.load_ptx(ptx, MODULE, &crate::kernels::ENTRY_POINTS).map_err(|e| format!("loading tfm's CUDA kernels: {e:?}"))?;
        Ok(dev)
    });
    dev.as_ref().map_err(|e| run_err(e.clone()))
}

/// The kernel `name` (one of [`crate::kernels::ENTRY_POINTS`]).
pub fn func(name: &str) -> Result<CudaFunction, RuntimeError> {
    device()?.get_func(MODULE, name).ok_or_else(|| run_err(format!("internal: CUDA kernel `{name}` is not loaded")))
}

/// A struct a kernel takes by value (`AttnDims`, `AdamwArgs`): plain numbers in C layout.
#[repr(transparent)]
#[derive(Clone, Copy, Debug)]
pub struct ByValue<T>(T);

impl From<crate::kernels::AttnDims> for ByValue<crate::kernels::AttnDims> {
    fn from(d: crate::kernels::AttnDims) -> Self {
        ByValue(d)
    }
}

impl From<crate::kernels::AdamwArgs> for ByValue<crate::kernels::AdamwArgs> {
    fn from(a: crate::kernels::AdamwArgs) -> Self {
        ByValue(a)
    }
}

// SAFETY: only the two `#[repr(C)]` structs of plain `i32`, `i64`, `f32` and `u64` fields above
// can be wrapped; the kernels declare them with the same fields in the same order.
#[allow(unsafe_code)]
unsafe impl<T: Copy> cudarc::driver::DeviceRepr for ByValue<T> {}

/// `n` dropout multipliers on the device: 0 with probability `p`, else `scale`; the same
/// `seed` gives the same multipliers.
pub fn keep_scales<E: Elem>(dev: &Cuda, n: usize, p: f32, scale: f32, seed: u64) -> Result<Flat<Cuda, NoneTape, E>, RuntimeError>
where
    Cuda: Device<E>,
    <Cuda as Storage<E>>::Vec: DevicePtr<E>,
{
    let probe: Flat<Cuda, NoneTape, E> = dev.try_zeros_like(&(n,)).map_err(dev_err)?;
    let mut grads: Gradients<E, Cuda> = Gradients::leaky();
    let buf = grads.get_or_alloc_mut(&probe).map_err(dev_err)?;
    let out: u64 = *buf.device_ptr();
    let threads = 256u32;
    let blocks = (n as u64).div_ceil(threads as u64).min(65_535) as u32;
    let cfg = LaunchConfig { grid_dim: (blocks.max(1), 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: `out` is a live device buffer of `n` elements of `E` (f32, or f16 bits for
    // `Half`), owned by `grads` until after the copy below; the kernel writes indices below `n`.
    #[allow(unsafe_code)]
    let launched = unsafe {
        match E::NAME {
            "f32" => func("keep_scales_f32")?.launch(cfg, (out, n as u64, seed, p, scale)),
            _ => func("keep_scales_f16")?.launch(cfg, (out, n as u64, seed, p, dfdx::dtypes::f16::from_f32(scale).to_bits())),
        }
    };
    launched.map_err(|e| run_err(format!("launching the dropout kernel: {e:?}")))?;
    Ok(grads.get(&probe))
}

#[cfg(test)]
mod tests {
    /// NVRTC compiles the kernels (runs where the CUDA libraries are, GPU or not).
    #[test]
    fn kernels_compile_with_nvrtc() {
        let ptx = super::compile().unwrap_or_else(|e| panic!("{e}"));
        let text = ptx.to_src();
        for f in crate::kernels::ENTRY_POINTS {
            assert!(text.contains(&format!(".entry {f}")), "no entry point `{f}` in the PTX");
        }
    }
}
