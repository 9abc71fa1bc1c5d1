//! Run-time values (flat device tensors with a logical shape, host integer and bool tensors)
//! and the per-run context that owns the single gradient tape.

use crate::{dev_err, run_err, HostTensor, RuntimeError};
use dfdx::prelude::*;
use std::sync::Arc;

/// The element type of float values: `f32`, or dfdx's `AMP<f16>` for mixed precision (values
/// and weights held in half precision; dfdx's AMP kernels accumulate products and reductions in
/// `f32`). Host data is always `f32` and converted at the boundary.
pub trait Elem: Dtype + std::fmt::Debug {
    /// As written in run configurations and messages.
    const NAME: &'static str;
    /// Added to the attention scores a query may not see: large enough to zero its weight after
    /// the softmax, and finite (a row with every key masked stays a number).
    const MASKED: f32;
    /// Added to a squared norm before dividing by its root (a representable positive number).
    const TINY: f32;
    fn of(x: f32) -> Self;
    fn value(self) -> f32;
    /// Host data for a device tensor (`f32` passes its vector through unchanged).
    fn vec_from_f32(v: Vec<f32>) -> Vec<Self>;
}

impl Elem for f32 {
    const NAME: &'static str = "f32";
    const MASKED: f32 = -1e9;
    const TINY: f32 = 1e-24;
    fn of(x: f32) -> Self {
        x
    }
    fn value(self) -> f32 {
        self
    }
    fn vec_from_f32(v: Vec<f32>) -> Vec<Self> {
        v
    }
}

/// dfdx's automatic mixed precision half type.
pub type Half = dfdx::dtypes::AMP<dfdx::dtypes::f16>;

impl Elem for Half {
    const NAME: &'static str = "f16";
    const MASKED: f32 = -6e4;
    const TINY: f32 = 6e-8;
    fn of(x: f32) -> Self {
        dfdx::dtypes::AMP(dfdx::dtypes::f16::from_f32(x))
    }
    fn value(self) -> f32 {
        self.0.to_f32()
    }
    fn vec_from_f32(v: Vec<f32>) -> Vec<Self> {
        v.into_iter().map(Self::of).collect()
    }
}

/// `x` as the element type `E`.
pub fn e<E: Elem>(x: f32) -> E {
    E::of(x)
}

/// A flat device tensor.
pub type Flat<D, T = NoneTape, E = f32> = Tensor<(usize,), E, D, T>;

/// A float value (`f32` or half, as `E`): a flat, contiguous device tensor and its logical
/// shape. `uid` identifies the underlying tensor (dfdx's own id is private): values sharing it
/// must not meet in one dfdx binary op, whose backward cannot take the same tensor twice.
#[derive(Clone, Debug)]
pub struct FT<D: Device<E>, E: Elem = f32> {
    pub t: Flat<D, NoneTape, E>,
    pub shape: Vec<usize>,
    pub uid: u64,
    /// Where `t`'s elements lie in host memory, when a CPU kernel made `t` from its own buffer
    /// (lets the next kernel read them without copying them out).
    pub host: Option<HostPtr>,
    /// A device buffer holding the same elements, when a GPU kernel made `t` (its kernels cannot
    /// read a dfdx tensor's own storage, so each keeps what it wrote).
    pub dev: Option<DevPtr>,
}

/// The address of `len` f32 elements in device memory, and what keeps them allocated.
#[derive(Clone)]
pub struct DevPtr {
    pub ptr: u64,
    pub len: usize,
    pub keep: Arc<dyn std::any::Any + Send + Sync>,
}

impl std::fmt::Debug for DevPtr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DevPtr({:#x}, {})", self.ptr, self.len)
    }
}

/// The address and length of a CPU tensor's contiguous storage, recorded when the tensor was
/// made from a `Vec` (dfdx moves the vector into the tensor without reallocating). Valid while
/// the tensor it was taken from is alive: a tensor shared by more than one holder is never
/// written in place (dfdx copies on write), and whoever reads through the pointer holds a clone.
#[derive(Clone, Copy, Debug)]
pub struct HostPtr {
    pub ptr: *const f32,
    pub len: usize,
}

// SAFETY: a `HostPtr` is only dereferenced for reading, by a holder of the tensor that owns the
// memory; the storage is immutable while shared, so reads from any thread are race-free.
#[allow(unsafe_code)]
unsafe impl Send for HostPtr {}
#[allow(unsafe_code)]
unsafe impl Sync for HostPtr {}

static NEXT_UID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// A fresh value identity.
pub fn fresh_uid() -> u64 {
    NEXT_UID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The identity of the store's weight number `i`.
pub fn param_uid(i: usize) -> u64 {
    (1 << 62) | i as u64
}

impl<E: Elem, D: Device<E>> FT<D, E> {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// The same data with another shape of equal size (free).
    pub fn reshaped(&self, shape: Vec<usize>) -> FT<D, E> {
        debug_assert_eq!(shape.iter().product::<usize>(), self.numel());
        FT { t: self.t.clone(), shape, uid: self.uid, host: self.host, dev: self.dev.clone() }
    }
    pub fn last(&self) -> usize {
        self.shape.last().copied().unwrap_or(1)
    }
    /// Rows when viewed as `[rows, last]`.
    pub fn rows(&self) -> usize {
        self.numel().checked_div(self.last()).unwrap_or(0)
    }
}

/// An integer tensor, kept on the host (token ids, positions, labels).
#[derive(Clone, Debug)]
pub struct IT {
    pub shape: Vec<usize>,
    pub data: Arc<Vec<i64>>,
}

/// A boolean tensor, kept on the host (padding masks).
#[derive(Clone, Debug)]
pub struct BT {
    pub shape: Vec<usize>,
    pub data: Arc<Vec<bool>>,
}

#[derive(Clone, Debug)]
pub enum Val<D: Device<E>, E: Elem = f32> {
    F(FT<D, E>),
    I(IT),
    B(BT),
}

impl<E: Elem, D: Device<E>> Val<D, E> {
    pub fn shape(&self) -> &[usize] {
        match self {
            Val::F(x) => &x.shape,
            Val::I(x) => &x.shape,
            Val::B(x) => &x.shape,
        }
    }
    pub fn dtype(&self) -> tfm_ir::DType {
        match self {
            Val::F(_) => tfm_ir::DType::F32,
            Val::I(_) => tfm_ir::DType::I64,
            Val::B(_) => tfm_ir::DType::Bool,
        }
    }
    pub fn to_host(&self) -> HostTensor {
        match self {
            Val::F(x) => HostTensor::F32 { shape: x.shape.clone(), data: x.t.as_vec().into_iter().map(E::value).collect() },
            Val::I(x) => HostTensor::I64 { shape: x.shape.clone(), data: x.data.to_vec() },
            Val::B(x) => HostTensor::Bool { shape: x.shape.clone(), data: x.data.to_vec() },
        }
    }
    pub fn f(&self, what: &str) -> Result<&FT<D, E>, RuntimeError> {
        match self {
            Val::F(x) => Ok(x),
            other => Err(run_err(format!("expected an f32 tensor for {what}, found {}", other.dtype().name()))),
        }
    }
    pub fn i(&self, what: &str) -> Result<&IT, RuntimeError> {
        match self {
            Val::I(x) => Ok(x),
            other => Err(run_err(format!("expected an i64 tensor for {what}, found {}", other.dtype().name()))),
        }
    }
    pub fn b(&self, what: &str) -> Result<&BT, RuntimeError> {
        match self {
            Val::B(x) => Ok(x),
            other => Err(run_err(format!("expected a bool tensor for {what}, found {}", other.dtype().name()))),
        }
    }
}

/// A small, fast, seedable generator (SplitMix64) for dropout masks and initialisation.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }
    /// Standard normal (Box-Muller), in f64.
    pub fn normal(&mut self) -> f64 {
        let u1 = ((self.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64);
        let u2 = (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
    /// A keep-mask with keep probability `1 - p`.
    pub fn keep_mask(&mut self, n: usize, p: f32) -> Vec<bool> {
        (0..n).map(|_| self.uniform() >= p).collect()
    }

    /// Inverted-dropout multipliers for `n` elements: `scale` with probability `1 - p`, else 0.
    /// Drawn in parallel: one draw from this generator seeds a stream per block of elements, so
    /// the result depends on the seed alone, not on the number of threads.
    pub fn keep_scales(&mut self, n: usize, p: f32, scale: f32) -> Vec<f32> {
        use rayon::prelude::*;
        const BLOCK: usize = 1 << 16;
        let base = self.next_u64();
        let mut out = vec![0.0f32; n];
        out.par_chunks_mut(BLOCK).enumerate().for_each(|(i, chunk)| {
            let mut r = Rng::new(base ^ (i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
            for v in chunk {
                *v = if r.uniform() >= p { scale } else { 0.0 };
            }
        });
        out
    }
}

/// Per-run state: the device, the one tape all ops record into, dropout on/off and its rng.
pub struct Ctx<D: Device<E>, T, E: Elem = f32> {
    pub dev: D,
    pub tape: T,
    pub train: bool,
    pub rng: Rng,
    /// Use the device's fused kernels where it has them (off: dfdx ops everywhere).
    pub fused: bool,
    /// On the CPU, run the GPU's fused operations on the kernel emulator (tests; feature `emu`).
    pub gpu_kernels: bool,
    pub elem: std::marker::PhantomData<E>,
    /// Device constants that depend on shapes alone (head-index maps, mask tables), kept across
    /// passes: each upload from pageable host memory waits for the device's queue to drain.
    pub(crate) consts: Consts,
    /// Device copies made during this pass of values no GPU kernel made (weights, mostly), by
    /// value identity: each is copied once per pass however often it is read. (GPU builds only.)
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) exported: std::collections::HashMap<u64, DevPtr>,
}

/// A store of device constants by key, shared by the passes of one runtime.
#[derive(Clone, Default)]
pub struct Consts(Arc<std::sync::Mutex<std::collections::HashMap<(std::any::TypeId, String), Stored>>>);

/// A stored constant: a tensor of the runtime's own device.
struct Stored(Box<dyn std::any::Any>);

// SAFETY: a `Consts` lives only in a `Runtime<D>` and the `Ctx<D, ..>` of its passes (the field
// is crate-private), and holds only tensors of that device `D`. Such a runtime crosses threads
// only when `D` does (it owns a `D`), and so do the tensors of `D`; access goes through the mutex.
#[allow(unsafe_code)]
unsafe impl Send for Stored {}

impl Consts {
    /// Kept constants at most; past it the store is emptied (generation walks through every
    /// length, one mask table each).
    const MAX: usize = 512;

    /// The constant of type `X` under `key`, made by `make` the first time.
    pub(crate) fn get<X: Clone + 'static>(&self, key: String, make: impl FnOnce() -> Result<X, RuntimeError>) -> Result<X, RuntimeError> {
        let key = (std::any::TypeId::of::<X>(), key);
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(x) = map.get(&key).and_then(|b| b.0.downcast_ref::<X>()) {
            return Ok(x.clone());
        }
        let x = make()?;
        if map.len() >= Self::MAX {
            map.clear();
        }
        map.insert(key, Stored(Box::new(x.clone())));
        Ok(x)
    }
}

impl<T: Tape<f32, Cpu>> Ctx<Cpu, T> {
    /// Like [`Ctx::constant`], recording where the data lies so that the CPU kernels reading
    /// it next need not copy it out of the tensor.
    pub fn constant_cached(&self, data: Vec<f32>, shape: Vec<usize>) -> Result<FT<Cpu>, RuntimeError> {
        let host = HostPtr { ptr: data.as_ptr(), len: data.len() };
        let mut x = self.constant(data, shape)?;
        x.host = Some(host);
        Ok(x)
    }
}

impl<E: Elem, D: Device<E>, T: Tape<E, D>> Ctx<D, T, E> {
    pub fn new(dev: D, train: bool, seed: u64) -> Self {
        Ctx { dev, tape: T::default(), train, rng: Rng::new(seed), fused: true, gpu_kernels: false, elem: std::marker::PhantomData, consts: Consts::default(), exported: Default::default() }
    }

    /// `x` with an empty tape of the run's kind, ready to be the taped operand of a dfdx op.
    pub fn tr(&self, x: &FT<D, E>) -> Flat<D, T, E> {
        x.t.clone().put_tape(T::default())
    }

    /// Takes the result of a dfdx op: flattens it (free when contiguous), moves its backward ops
    /// onto the run's tape.
    pub fn keep<S: Shape>(&mut self, y: Tensor<S, E, D, T>, shape: Vec<usize>) -> FT<D, E> {
        let n: usize = shape.iter().product();
        debug_assert_eq!(n, y.shape().num_elements());
        let y = y.reshape_like(&(n,));
        let (y, tape) = y.split_tape();
        let t = std::mem::take(&mut self.tape);
        self.tape = t.merge(tape);
        FT { t: y, shape, uid: fresh_uid(), host: None, dev: None }
    }

    /// A constant (no gradient is ever needed for it).
    pub fn constant(&self, data: Vec<f32>, shape: Vec<usize>) -> Result<FT<D, E>, RuntimeError> {
        let n = data.len();
        let t = self.dev.try_tensor_from_vec(E::vec_from_f32(data), (n,)).map_err(dev_err)?;
        Ok(FT { t, shape, uid: fresh_uid(), host: None, dev: None })
    }

    /// A device tensor that depends on shapes alone, uploaded once per runtime and kept under
    /// `key` (with its type) for later passes; `data` runs only the first time.
    pub(crate) fn kept<S: Shape, X: Unit>(&self, key: String, shape: S, data: impl FnOnce() -> Vec<X>) -> Result<Tensor<S, X, D>, RuntimeError>
    where
        D: TensorFromVec<X>,
    {
        self.consts.get(key, || self.dev.try_tensor_from_vec(data(), shape).map_err(dev_err))
    }

    pub fn index(&self, idx: Vec<usize>) -> Result<Tensor<(usize,), usize, D>, RuntimeError> {
        let n = idx.len();
        self.dev.try_tensor_from_vec(idx, (n,)).map_err(dev_err)
    }

    /// Elementwise unary map with dfdx ops.
    pub fn map(&mut self, x: &FT<D, E>, f: impl FnOnce(Flat<D, T, E>) -> Flat<D, T, E>) -> FT<D, E> {
        let y = f(self.tr(x));
        self.keep(y, x.shape.clone())
    }

    /// Elementwise binary map of two same-shape values with dfdx ops (`b` untaped: dfdx still
    /// sends its gradient to `b`'s id).
    pub fn zip(&mut self, a: &FT<D, E>, b: &FT<D, E>, f: impl FnOnce(Flat<D, T, E>, Flat<D, NoneTape, E>) -> Flat<D, T, E>) -> FT<D, E> {
        debug_assert_eq!(a.numel(), b.numel());
        let b = self.distinct(a, b);
        let y = f(self.tr(a), b.t.clone());
        self.keep(y, a.shape.clone())
    }

    /// `b`, or a copy of it when it is the same tensor as `a`.
    pub fn distinct(&mut self, a: &FT<D, E>, b: &FT<D, E>) -> FT<D, E> {
        if a.uid == b.uid {
            self.map(b, |t| t * e::<E>(1.0))
        } else {
            b.clone()
        }
    }

    /// `out[i] = x[idx[i]]`, with an accumulating backward.
    pub fn gather(&mut self, x: &FT<D, E>, idx: Vec<usize>, shape: Vec<usize>) -> Result<FT<D, E>, RuntimeError> {
        debug_assert_eq!(idx.len(), shape.iter().product::<usize>());
        let n = x.numel();
        if let Some(bad) = idx.iter().find(|&&i| i >= n) {
            return Err(run_err(format!("internal: gather index {bad} out of range for {n} elements")));
        }
        let it = self.index(idx)?;
        let y: Flat<D, T, E> = self.tr(x).try_gather(it).map_err(dev_err)?;
        Ok(self.keep(y, shape))
    }

    /// A gather where index `x.numel()` reads the constant `fill` (padding, masks).
    pub fn gather_fill(&mut self, x: &FT<D, E>, idx: Vec<usize>, shape: Vec<usize>, fill: f32) -> Result<FT<D, E>, RuntimeError> {
        let n = x.numel();
        let slot = self.constant(vec![fill], vec![1])?;
        let ext: Flat<D, T, E> = (self.tr(x), slot.t.clone()).try_concat_along(Axis::<0>).map_err(dev_err)?;
        let ext = self.keep(ext, vec![n + 1]);
        self.gather(&ext, idx, shape)
    }
}

#[cfg(test)]
mod tests {
    use super::Consts;

    #[test]
    fn consts_make_each_key_once_and_keep_types_apart() {
        let c = Consts::default();
        let mut made = 0;
        for _ in 0..3 {
            let v: Vec<u32> = c.get("a".into(), || { made += 1; Ok(vec![1, 2]) }).expect("get");
            assert_eq!(v, vec![1, 2]);
        }
        assert_eq!(made, 1);
        // another type under the same key is a separate constant
        let s: String = c.get("a".into(), || Ok("x".to_string())).expect("get");
        assert_eq!(s, "x");
        let err = c.get::<u8>("b".into(), || Err(crate::run_err("failed"))).expect_err("error");
        assert!(err.to_string().contains("failed"));
        // a failed make stores nothing
        let v: u8 = c.get("b".into(), || Ok(7)).expect("get");
        assert_eq!(v, 7);
        // clones share the store
        let d = c.clone();
        let v: Vec<u32> = d.get("a".into(), || Ok(vec![9])).expect("get");
        assert_eq!(v, vec![1, 2]);
    }
}
