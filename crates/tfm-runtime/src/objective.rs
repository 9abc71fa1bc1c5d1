//! The training objectives: the scalar loss each `objective` kind minimises.

use crate::backend::Backend;
use crate::exec::Vals;
use crate::value::{e, Ctx, Elem, Val, FT};
use crate::{layout, run_err, Batch, HostTensor, Runtime, RuntimeError};
use dfdx::prelude::*;
use tfm_ir::ObjectiveKind;

type R<X> = Result<X, RuntimeError>;

pub(crate) fn loss<E: Elem, D: Backend<E>, T: Tape<E, D>>(rt: &Runtime<D>, cx: &mut Ctx<D, T, E>, outs: &Vals<D, E>, batch: &Batch) -> R<FT<D, E>> {
    let obj = rt.model.objective.as_ref().ok_or_else(|| RuntimeError::Unsupported {
        message: format!("model `{}` declares no objective; hint: add e.g. `objective next_token(logits, tokens)`", rt.model.name),
    })?;
    let arg = |i: usize| -> R<&Val<D, E>> {
        obj.args
            .get(i)
            .and_then(|&v| outs.get(v))
            .and_then(|v| v.as_ref())
            .ok_or_else(|| run_err(format!("objective: argument {} was not computed", i + 1)))
    };
    let given = match &batch.targets {
        None => None,
        Some(HostTensor::I64 { shape, data }) => Some((shape.clone(), data.clone())),
        Some(other) => {
            return Err(run_err(format!("expected i64 targets, found a {} tensor", other.dtype().name())));
        }
    };
    match obj.kind {
        ObjectiveKind::NextToken | ObjectiveKind::Seq2seq | ObjectiveKind::SpeechToText => {
            let logits = arg(0)?.f("logits")?;
            let (rows, v) = seq_logits(logits)?;
            let labels = match given {
                Some((shape, data)) => {
                    if data.len() != rows {
                        return Err(run_err(format!(
                            "expected targets of shape {:?}, found {shape:?}",
                            &logits.shape[..logits.shape.len() - 1]
                        )));
                    }
                    data
                }
                None => {
                    let toks = arg(1)?.i("tokens")?;
                    if toks.data.len() != rows {
                        return Err(run_err(format!("expected tokens of shape {:?}, found {:?}", &logits.shape[..2], toks.shape)));
                    }
                    let t = logits.shape[1];
                    (0..rows).map(|r| if (r % t) + 1 < t { toks.data[r + 1] } else { -100 }).collect()
                }
            };
            D::cross_entropy(cx, &logits.reshaped(vec![rows, v]), &labels)
        }
        ObjectiveKind::MaskedToken => {
            let logits = arg(0)?.f("logits")?;
            let (rows, v) = seq_logits(logits)?;
            let labels = match given {
                Some((_, data)) => data,
                None => arg(1)?.i("labels")?.data.to_vec(),
            };
            if labels.len() != rows {
                return Err(run_err(format!("expected {rows} labels, found {}", labels.len())));
            }
            D::cross_entropy(cx, &logits.reshaped(vec![rows, v]), &labels)
        }
        ObjectiveKind::Classify => {
            let logits = arg(0)?.f("logits")?;
            let labels = match given {
                Some((_, data)) => data,
                None => arg(1)?.i("labels")?.data.to_vec(),
            };
            let rows = logits.rows();
            if labels.len() != rows {
                return Err(run_err(format!("expected {rows} labels, found {}", labels.len())));
            }
            D::cross_entropy(cx, &logits.reshaped(vec![rows, logits.last()]), &labels)
        }
        ObjectiveKind::Contrastive => {
            let a = arg(0)?.f("image embeddings")?;
            let b = arg(1)?.f("text embeddings")?;
            let scale = arg(2)?.f("logit scale")?;
            if a.shape.len() != 2 || a.shape != b.shape {
                return Err(run_err(format!("contrastive: expected two f32[B, D], found {:?} and {:?}", a.shape, b.shape)));
            }
            let n = a.shape[0];
            let (idx, bt_shape) = layout::permute(&b.shape, &[1, 0]);
            let bt = D::gather(cx, b, idx, bt_shape)?;
            let sim = D::matmul(cx, a, &bt)?;
            // `scale` multiplies the similarities as given (CLIP passes exp(logit_scale)).
            let es = D::gather(cx, &scale.reshaped(vec![1]), vec![0; n * n], vec![n, n])?;
            let logits = cx.zip(&sim, &es, |s, e| s * e);
            let labels: Vec<i64> = (0..n as i64).collect();
            let l1 = D::cross_entropy(cx, &logits, &labels)?;
            let (idx, sh) = layout::permute(&[n, n], &[1, 0]);
            let lt = D::gather(cx, &logits, idx, sh)?;
            let l2 = D::cross_entropy(cx, &lt, &labels)?;
            let s = cx.zip(&l1.reshaped(vec![1]), &l2.reshaped(vec![1]), |a, b| a + b);
            let s = cx.map(&s, |t| t * e::<E>(0.5));
            Ok(s.reshaped(vec![]))
        }
    }
}

fn seq_logits<E: Elem, D: Backend<E>>(logits: &FT<D, E>) -> R<(usize, usize)> {
    if logits.shape.len() != 3 {
        return Err(run_err(format!("expected logits f32[B, T, V], found shape {:?}", logits.shape)));
    }
    Ok((logits.shape[0] * logits.shape[1], logits.shape[2]))
}
