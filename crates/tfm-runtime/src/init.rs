//! Weight initialisation: every `ParamDef` of the model, in `Graph::for_each_param` order.

use crate::params::{Param, ParamStore};
use crate::value::Rng;
use dfdx::prelude::*;
use tfm_ir::{ChildKind, ConstValue, Graph, Init, Model, ParamDef, ParamKind};

/// Initialises all weights. Each weight draws from its own stream (seed and position), so a
/// weight's initial value does not depend on how many weights come before it in other models.
pub fn init_params<D: Device<f32>>(model: &Model, dev: &D, seed: u64) -> ParamStore<D> {
    let layers = model.params.iter().find(|(n, _)| n == "layers").and_then(|(_, v)| match v {
        ConstValue::Int(i) if *i > 0 => Some(*i as u64),
        _ => None,
    });
    let mut defs: Vec<(String, ParamDef, u64)> = vec![];
    collect(&model.graph, "", 1, false, &mut defs);
    let mut params = Vec::with_capacity(defs.len());
    for (i, (name, def, repeats)) in defs.into_iter().enumerate() {
        let n_layers = if repeats > 1 { repeats } else { layers.unwrap_or(repeats) };
        let shape: Vec<usize> = def.shape.iter().map(|&d| d as usize).collect();
        let numel: usize = shape.iter().product();
        let mut rng = Rng::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ (i as u64).wrapping_mul(0x9E37_79B9));
        let data = init_values(&def.init, &shape, numel, n_layers, &mut rng);
        let value = dev.tensor_from_vec(data, (numel,));
        params.push(Param {
            name,
            shape,
            value,
            trainable: def.kind == ParamKind::Trainable,
            decay: def.decay,
        });
    }
    ParamStore { params }
}

/// The initial values of one weight.
pub fn init_values(init: &Init, shape: &[usize], numel: usize, n_layers: u64, rng: &mut Rng) -> Vec<f32> {
    match init {
        Init::Normal { std, residual } => {
            let std = if *residual { std / (2.0 * n_layers.max(1) as f64).sqrt() } else { *std };
            (0..numel).map(|_| (rng.normal() * std) as f32).collect()
        }
        Init::Zeros => vec![0.0; numel],
        Init::Ones => vec![1.0; numel],
        Init::Constant(c) => vec![*c as f32; numel],
        Init::Sinusoidal => sinusoidal_table(shape.first().copied().unwrap_or(0), shape.get(1).copied().unwrap_or(0)),
    }
}

/// Vaswani et al.'s table `[len, dim]`: `sin(pos / 10000^(2i/dim))` at column `2i`, `cos` at `2i + 1`.
pub fn sinusoidal_table(len: usize, dim: usize) -> Vec<f32> {
    let mut t = vec![0.0; len * dim];
    for p in 0..len {
        for c in 0..dim {
            let i = (c / 2) as f64;
            let a = p as f64 / 10000f64.powf(2.0 * i / dim as f64);
            t[p * dim + c] = if c % 2 == 0 { a.sin() } else { a.cos() } as f32;
        }
    }
    t
}

/// Mirrors `Graph::for_each_param`, also recording the product of repeat counts on the path.
fn collect(g: &Graph, prefix: &str, repeats: u64, _shared: bool, out: &mut Vec<(String, ParamDef, u64)>) {
    for p in &g.params {
        out.push((tfm_ir::join(prefix, &p.name), p.clone(), repeats));
    }
    for c in &g.children {
        let base = tfm_ir::join(prefix, &c.name);
        match c.kind {
            ChildKind::Block => collect(&c.graph, &base, repeats, false, out),
            ChildKind::Repeat { count, shared: true } => collect(&c.graph, &base, repeats.saturating_mul(count), true, out),
            ChildKind::Repeat { count, shared: false } => {
                for i in 0..count {
                    collect(&c.graph, &format!("{base}.{i}"), repeats.saturating_mul(count), false, out);
                }
            }
        }
    }
}
