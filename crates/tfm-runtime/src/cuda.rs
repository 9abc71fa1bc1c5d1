//! The fused operations (`kops`) on a GPU: tfm's kernels loaded by NVRTC (`cuda_kernels`),
//! cuBLAS products and cudarc buffers, all queued on the legacy default stream that dfdx's
//! device also uses, so kernels, products and dfdx's own ops run in order. Host data (token ids,
//! targets) is uploaded asynchronously and kept alive by the values and closures that read it.

use crate::backend::{generic, Backend, Cols, CoreCfg};
use crate::cuda_kernels::{device, func};
use crate::kops::{self, fused, Arg, Buf, HostVec, KernelDevice};
use crate::kernels::Launch;
use crate::value::{Ctx, BT, FT, IT};
use crate::RuntimeError;
use cudarc::cublas::{result as blas, sys::cublasOperation_t, CudaBlas};
use cudarc::driver::{CudaFunction, DevicePtr, DeviceRepr, DriverError, LaunchAsync, LaunchConfig, ValidAsZeroBits};
use dfdx::prelude::*;
use std::sync::OnceLock;
use tfm_ir::Activation;

type R<X> = Result<X, RuntimeError>;

/// A device failure inside a backward closure (whose error type is dfdx's): the kernels or the
/// cuBLAS handle did not load. The forward pass, which runs first, reports the real cause.
fn unavailable() -> CudaError {
    CudaError::Driver(DriverError(cudarc::driver::sys::CUresult::CUDA_ERROR_NOT_FOUND))
}

// SAFETY: `as_kernel_param` points at the payload, a plain number or a `#[repr(C)]` struct of
// plain numbers inside the `Arg`, which lives until the launch has copied it.
#[allow(unsafe_code)]
unsafe impl DeviceRepr for Arg {
    fn as_kernel_param(&self) -> *mut std::ffi::c_void {
        self.param()
    }
}

fn blas_handle() -> Result<&'static CudaBlas, CudaError> {
    static BLAS: OnceLock<Option<CudaBlas>> = OnceLock::new();
    BLAS.get_or_init(|| device().ok().and_then(|d| CudaBlas::new(d.clone()).ok())).as_ref().ok_or_else(unavailable)
}

impl KernelDevice for Cuda {
    fn ready() -> R<()> {
        device().map(|_| ())
    }

    fn buf_addr(v: &mut <Self as Storage<f32>>::Vec) -> u64 {
        *v.device_ptr()
    }

    fn launch(name: &'static str, l: Launch, args: &mut [Arg]) -> Result<(), CudaError> {
        let f: CudaFunction = func(name).map_err(|_| unavailable())?;
        let cfg = LaunchConfig { grid_dim: (l.grid.0, l.grid.1, 1), block_dim: (l.block, 1, 1), shared_mem_bytes: 0 };
        // cudarc takes a tuple of parameters by value and points into it while it launches
        let a = |i: usize| args[i];
        // SAFETY: the fused operations pass, per kernel, the parameter list kernels.cu declares
        // (checked by the same code on the emulator), with device addresses of live buffers.
        #[allow(unsafe_code)]
        let r = unsafe {
            match args.len() {
                4 => f.launch(cfg, (a(0), a(1), a(2), a(3))),
                5 => f.launch(cfg, (a(0), a(1), a(2), a(3), a(4))),
                6 => f.launch(cfg, (a(0), a(1), a(2), a(3), a(4), a(5))),
                7 => f.launch(cfg, (a(0), a(1), a(2), a(3), a(4), a(5), a(6))),
                8 => f.launch(cfg, (a(0), a(1), a(2), a(3), a(4), a(5), a(6), a(7))),
                9 => f.launch(cfg, (a(0), a(1), a(2), a(3), a(4), a(5), a(6), a(7), a(8))),
                _ => return Err(unavailable()),
            }
        };
        r.map_err(CudaError::from)
    }

    fn gemm(ta: bool, tb: bool, m: usize, n: usize, k: usize, a: u64, lda: usize, b: u64, ldb: usize, beta: f32, c: u64, ldc: usize) -> Result<(), CudaError> {
        let op = |t: bool| if t { cublasOperation_t::CUBLAS_OP_T } else { cublasOperation_t::CUBLAS_OP_N };
        let h = blas_handle()?;
        let alpha = 1.0f32;
        let i = |x: usize| x as std::os::raw::c_int;
        // SAFETY: a, b and c address live buffers of the extents the callers pass; alpha and
        // beta are host scalars that outlive the call. cuBLAS is column-major, so it computes
        // C^T = op(B)^T op(A)^T.
        #[allow(unsafe_code)]
        unsafe {
            blas::sgemm(*h.handle(), op(tb), op(ta), i(n), i(m), i(k), &alpha, b as *const f32, i(ldb), a as *const f32, i(lda), &beta, c as *mut f32, i(ldc))
        }
        .map_err(CudaError::from)
    }

    fn scratch(n: usize) -> Result<Buf, CudaError> {
        let s = device().map_err(|_| unavailable())?.alloc_zeros::<f32>(n.max(1))?;
        Ok(Buf { ptr: *s.device_ptr(), _keep: Box::new(s) })
    }

    fn upload(v: HostVec) -> Result<Buf, CudaError> {
        fn up<Y: DeviceRepr + ValidAsZeroBits + Unpin + 'static>(v: Vec<Y>) -> Result<Buf, CudaError> {
            let s = device().map_err(|_| unavailable())?.htod_copy(v)?;
            Ok(Buf { ptr: *s.device_ptr(), _keep: Box::new(s) })
        }
        match v {
            HostVec::I64(v) => up(v),
            HostVec::I32(v) => up(v),
            HostVec::F32(v) => up(v),
        }
    }
}

/// The f32 operations with a fused kernel; everything else keeps dfdx's.
impl Backend<f32> for Cuda {
    fn linear<T: Tape<f32, Self>>(cx: &mut Ctx<Self, T>, x: &FT<Self>, w: &FT<Self>, b: Option<&FT<Self>>) -> R<FT<Self>> {
        if !fused(cx, &[x, w]) {
            return generic::linear(cx, x, w, b);
        }
        kops::linear(cx, x, w, b)
    }
    fn layer_norm<T: Tape<f32, Self>>(cx: &mut Ctx<Self, T>, x: &FT<Self>, w: &FT<Self>, b: Option<&FT<Self>>, eps: f32) -> R<FT<Self>> {
        if !fused(cx, &[x, w]) {
            return generic::layer_norm(cx, x, w, b, eps);
        }
        kops::layer_norm(cx, x, w, b, eps)
    }
    fn rms_norm<T: Tape<f32, Self>>(cx: &mut Ctx<Self, T>, x: &FT<Self>, w: &FT<Self>, eps: f32) -> R<FT<Self>> {
        if !fused(cx, &[x, w]) {
            return generic::rms_norm(cx, x, w, eps);
        }
        kops::rms_norm(cx, x, w, eps)
    }
    fn act<T: Tape<f32, Self>>(cx: &mut Ctx<Self, T>, x: &FT<Self>, act: Activation) -> R<FT<Self>> {
        match kops::act_kind(act) {
            Some(kind) if fused(cx, &[x]) => kops::act(cx, x, kind),
            _ => generic::act(cx, x, act),
        }
    }
    fn rope<T: Tape<f32, Self>>(cx: &mut Ctx<Self, T>, x: Cols<Self>, heads: usize, hd: usize, theta: f32) -> R<FT<Self>> {
        if !fused(cx, &[x.x]) {
            return generic::rope(cx, x, heads, hd, theta);
        }
        kops::rope(cx, x, heads, hd, theta)
    }
    fn add<T: Tape<f32, Self>>(cx: &mut Ctx<Self, T>, a: &FT<Self>, b: &FT<Self>) -> R<FT<Self>> {
        if !fused(cx, &[a, b]) {
            return Ok(cx.zip(a, b, |a, b| a + b));
        }
        kops::add(cx, a, b)
    }
    fn attention_core<T: Tape<f32, Self>>(cx: &mut Ctx<Self, T>, q: Cols<Self>, k: Cols<Self>, v: Cols<Self>, cfg: CoreCfg, mask: Option<&BT>, bias: Option<&FT<Self>>) -> R<FT<Self>> {
        if !fused(cx, &[q.x, k.x, v.x]) {
            return generic::attention_core(cx, q, k, v, cfg, mask, bias);
        }
        kops::attention_core(cx, q, k, v, cfg, mask, bias)
    }
    fn embedding<T: Tape<f32, Self>>(cx: &mut Ctx<Self, T>, w: &FT<Self>, ids: &IT) -> R<FT<Self>> {
        if !fused(cx, &[w]) || ids.data.is_empty() {
            return generic::embedding(cx, w, ids);
        }
        kops::embedding(cx, w, ids)
    }
    fn cross_entropy<T: Tape<f32, Self>>(cx: &mut Ctx<Self, T>, logits: &FT<Self>, targets: &[i64]) -> R<FT<Self>> {
        if !fused(cx, &[logits]) {
            return generic::cross_entropy(cx, logits, targets);
        }
        kops::cross_entropy(cx, logits, targets)
    }
    fn dropout<T: Tape<f32, Self>>(cx: &mut Ctx<Self, T>, x: &FT<Self>, p: f32) -> R<FT<Self>> {
        if !fused(cx, &[x]) {
            return crate::backend::cuda_dropout(cx, x, p);
        }
        kops::dropout(cx, x, p)
    }
}
