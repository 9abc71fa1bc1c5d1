//! Lowers validated IR to runtime-shaped dfdx tensors: forward and backward on CPU or CUDA.

pub mod params;

pub use params::{Param, ParamStore};
