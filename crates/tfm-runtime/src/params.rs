//! The parameter registry: every weight of a model by its stable name, stored flat on the device.

use crate::value::Elem;
use dfdx::prelude::*;

/// One weight. Stored flat (`[numel]`) so optimisers, checkpoints and gradient clipping treat all
/// weights alike; the runtime reshapes to `shape` where the weight is used.
#[derive(Clone, Debug)]
pub struct Param<D: Device<E>, E: Elem = f32> {
    /// Stable name from the spec, e.g. `blocks.3.attn.qkv.weight`.
    pub name: String,
    pub shape: Vec<usize>,
    pub value: Tensor<(usize,), E, D>,
    /// False for fixed tables (sinusoidal): never updated, still saved.
    pub trainable: bool,
    /// AdamW's decoupled weight decay applies.
    pub decay: bool,
}

impl<E: Elem, D: Device<E>> Param<D, E> {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// All weights of a model, in the order `tfm_ir::Graph::for_each_param` yields them.
#[derive(Clone, Debug)]
pub struct ParamStore<D: Device<E>, E: Elem = f32> {
    pub params: Vec<Param<D, E>>,
}

impl<E: Elem, D: Device<E>> ParamStore<D, E> {
    pub fn get(&self, name: &str) -> Option<&Param<D, E>> {
        self.params.iter().find(|p| p.name == name)
    }
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.params.iter().position(|p| p.name == name)
    }
    pub fn num_trainable(&self) -> usize {
        self.params.iter().filter(|p| p.trainable).map(|p| p.numel()).sum()
    }
}

impl<D: Device<f32>> ParamStore<D> {
    /// Every weight cast to element type `E`: the half-precision copy a mixed-precision step
    /// runs with, while these `f32` weights stay the master copy the optimizer updates.
    pub fn cast<E: Elem>(&self) -> ParamStore<D, E>
    where
        D: Device<E>,
    {
        let params = self
            .params
            .iter()
            .map(|p| Param { name: p.name.clone(), shape: p.shape.clone(), value: p.value.clone().to_dtype::<E>(), trainable: p.trainable, decay: p.decay })
            .collect();
        ParamStore { params }
    }
}
