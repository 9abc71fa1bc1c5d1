//! Binds the training loop to `tfm_runtime::Runtime`: token batches become runtime batches, and a
//! greedy generator serves the addition evaluator and sampling.

use dfdx::prelude::*;
use tfm_runtime::{AnyPrecision, Backend, Batch, Half, HostTensor, ParamStore, Runtime};

use crate::data::TokenBatch;
use crate::error::TrainError;
use crate::optim::GradSet;
use crate::trainer::TrainModel;

/// `x` as the model's single input `i64[B, T]` and `y` as next-token targets.
pub fn to_batch(b: &TokenBatch) -> Batch {
    let shape = vec![b.batch, b.context];
    Batch {
        inputs: vec![HostTensor::I64 {
            shape: shape.clone(),
            data: b.x.clone(),
        }],
        targets: Some(HostTensor::I64 {
            shape,
            data: b.y.clone(),
        }),
    }
}

impl<D: AnyPrecision> TrainModel<D> for Runtime<D> {
    fn loss_and_grads(
        &self,
        store: &ParamStore<D>,
        batch: &Batch,
        seed: u64,
    ) -> Result<(f32, Gradients<f32, D>), TrainError> {
        Runtime::loss_and_grads(self, store, batch, seed)
            .map_err(|e| TrainError::Model(e.to_string()))
    }

    fn loss(&self, store: &ParamStore<D>, batch: &Batch) -> Result<f32, TrainError> {
        Runtime::loss(self, store, batch).map_err(|e| TrainError::Model(e.to_string()))
    }

    fn loss_and_grads_half(
        &self,
        store: &ParamStore<D>,
        batch: &Batch,
        seed: u64,
        loss_scale: f32,
    ) -> Result<(f32, GradSet<D>), TrainError> {
        let half = store.cast::<Half>();
        let (loss, grads) = self
            .loss_and_grads_in(&half, batch, seed, loss_scale)
            .map_err(|e| TrainError::Model(e.to_string()))?;
        let grads = store
            .params
            .iter()
            .zip(&half.params)
            .map(|(p, h)| p.trainable.then(|| grads.get(&h.value).to_dtype::<f32>()))
            .collect();
        Ok((loss, GradSet { grads }))
    }
}

/// Greedy decoding: appends `new_tokens` argmax tokens to each prompt (all prompts the same
/// length), feeding at most the last `context` tokens. The model's first output must be logits
/// `f32[B, T, V]`. Returns only the generated tokens.
pub fn greedy_generate<D: Backend>(
    runtime: &Runtime<D>,
    store: &ParamStore<D>,
    prompts: &[Vec<u32>],
    new_tokens: usize,
    context: usize,
) -> Result<Vec<Vec<u32>>, TrainError> {
    let b = prompts.len();
    if b == 0 {
        return Ok(Vec::new());
    }
    let len = prompts[0].len();
    if prompts.iter().any(|p| p.len() != len) || len == 0 {
        return Err(TrainError::data(
            "expected non-empty prompts of equal length for batched generation",
        ));
    }
    let mut seqs: Vec<Vec<u32>> = prompts.to_vec();
    for _ in 0..new_tokens {
        let cur = seqs[0].len();
        let start = cur.saturating_sub(context.max(1));
        let t = cur - start;
        let data: Vec<i64> = seqs
            .iter()
            .flat_map(|s| s[start..].iter().map(|&x| x as i64))
            .collect();
        let input = HostTensor::I64 {
            shape: vec![b, t],
            data,
        };
        let outs = runtime
            .forward(store, &[input], false, 0)
            .map_err(|e| TrainError::Model(e.to_string()))?;
        let Some(HostTensor::F32 { shape, data }) = outs.into_iter().next() else {
            return Err(TrainError::Model(
                "expected the model's first output to be f32 logits".into(),
            ));
        };
        if shape.len() != 3 || shape[0] != b || shape[1] != t {
            return Err(TrainError::Model(format!(
                "expected logits of shape [{b}, {t}, V], found {shape:?}"
            )));
        }
        let v = shape[2];
        for (i, s) in seqs.iter_mut().enumerate() {
            let row = &data[(i * t + t - 1) * v..(i * t + t) * v];
            let mut best = 0;
            for (j, &x) in row.iter().enumerate() {
                if x > row[best] {
                    best = j;
                }
            }
            s.push(best as u32);
        }
    }
    Ok(seqs.into_iter().map(|s| s[len..].to_vec()).collect())
}
