//! Fused, rayon-parallel CPU kernels for the hot operations, as dfdx custom ops.

use crate::backend::Backend;
use dfdx::prelude::*;

impl Backend for Cpu {}
