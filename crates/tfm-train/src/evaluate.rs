//! Task metrics for `tfm eval` and the end of `tfm train`: accuracy (text and image
//! classification), masked-token accuracy, zero-shot accuracy of image-text models, and BLEU of
//! greedy and beam-search translations. Every metric runs over the whole held-out split (or a
//! stated number of batches) in evaluation mode.

use tfm_runtime::{Backend, HostTensor, ParamStore, Runtime};

use crate::data::{DataSource, Split};
use crate::error::TrainError;
use crate::loaders;
use crate::metrics::{self, Confusion};
use crate::rng::{derive_seed, Rng};
use crate::tasks::{TaskBody, TaskData};

/// What was measured.
#[derive(Clone, Debug)]
pub enum TaskMetrics {
    Classify { accuracy: f64, correct: usize, total: usize, confusion: Confusion, classes: Vec<String> },
    MaskedLm { accuracy: f64, masked: usize, loss: f64 },
    Translate { loss: f64, sentences: usize, greedy: Option<metrics::Bleu>, beam: Option<(usize, metrics::Bleu)>, samples: Vec<(String, String, Vec<String>)> },
    ZeroShot { accuracy: f64, correct: usize, total: usize, captions: Vec<String> },
}

impl std::fmt::Display for TaskMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskMetrics::Classify { accuracy, correct, total, confusion, classes } => {
                writeln!(f, "test accuracy   {:.2}% ({correct} / {total})", accuracy * 100.0)?;
                write!(f, "{}", confusion.render(classes))
            }
            TaskMetrics::MaskedLm { accuracy, masked, loss } => {
                writeln!(f, "masked loss     {loss:.4}")?;
                writeln!(f, "masked accuracy {:.2}% ({masked} masked tokens)", accuracy * 100.0)
            }
            TaskMetrics::Translate { loss, sentences, greedy, beam, samples } => {
                writeln!(f, "test loss       {loss:.4} (perplexity {:.2})", loss.exp())?;
                if let Some(b) = greedy {
                    writeln!(f, "BLEU greedy     {:.2} on {sentences} sentences ({b})", b.score)?;
                }
                if let Some((k, b)) = beam {
                    writeln!(f, "BLEU beam {k}     {:.2} on {sentences} sentences ({b})", b.score)?;
                }
                for (src, hyp, refs) in samples {
                    writeln!(f, "  {src}\n    -> {hyp}\n    refs: {}", refs.join(" | "))?;
                }
                Ok(())
            }
            TaskMetrics::ZeroShot { accuracy, correct, total, captions } => {
                writeln!(f, "zero-shot       {:.2}% ({correct} / {total}) against {} captions", accuracy * 100.0, captions.len())?;
                writeln!(f, "captions        \"{}\", ...", captions.first().map(String::as_str).unwrap_or(""))
            }
        }
    }
}

/// How much of the translation metrics to compute.
#[derive(Clone, Copy, Debug)]
pub struct EvalOptions {
    /// Micro-batch size of evaluation forward passes.
    pub batch: usize,
    /// Beam width (0: greedy only).
    pub beam: usize,
    /// GNMT length penalty exponent.
    pub alpha: f32,
    /// Evaluate at most this many held-out sentences or examples (0: all).
    pub limit: usize,
    /// Longest sequence the model takes.
    pub context: usize,
    /// Batches of masked-token evaluation.
    pub mlm_batches: usize,
    pub seed: u64,
}

fn model_err(e: tfm_runtime::RuntimeError) -> TrainError {
    TrainError::Model(e.to_string())
}

/// Which output port holds the objective's argument `arg`.
pub(crate) fn objective_output<D: Backend>(rt: &Runtime<D>, arg: usize) -> Result<usize, TrainError> {
    let m = rt.model();
    let obj = m.objective.as_ref().ok_or_else(|| TrainError::Model(format!("model `{}` declares no objective", m.name)))?;
    let v = *obj.args.get(arg).ok_or_else(|| TrainError::Model("the objective has too few arguments".into()))?;
    m.outputs.iter().position(|p| p.value == v).ok_or_else(|| {
        TrainError::Model(format!(
            "the objective's argument {} is not an output of `{}`; hint: declare it with `output`",
            arg + 1,
            m.name
        ))
    })
}

fn f32_of(t: &HostTensor) -> Result<(&[usize], &[f32]), TrainError> {
    match t {
        HostTensor::F32 { shape, data } => Ok((shape, data)),
        _ => Err(TrainError::Model("expected an f32 output".into())),
    }
}

fn argmax(row: &[f32]) -> usize {
    crate::decode::argmax(row) as usize
}

/// Class logits of a batch of inputs: `[B][classes]`.
pub fn class_logits<D: Backend>(rt: &Runtime<D>, store: &ParamStore<D>, inputs: &[HostTensor]) -> Result<Vec<Vec<f32>>, TrainError> {
    let port = objective_output(rt, 0)?;
    let outs = rt.forward(store, inputs, false, 0).map_err(model_err)?;
    let (shape, data) = f32_of(&outs[port])?;
    let c = *shape.last().unwrap_or(&1);
    Ok(data.chunks(c.max(1)).map(|r| r.to_vec()).collect())
}

/// Computes the task's metrics.
pub fn evaluate_task<D: Backend>(rt: &Runtime<D>, store: &ParamStore<D>, task: &TaskData, opts: &EvalOptions) -> Result<TaskMetrics, TrainError> {
    let bs = opts.batch.max(1);
    let cap = |n: usize| if opts.limit > 0 { n.min(opts.limit) } else { n };
    match &task.body {
        TaskBody::Classify { .. } | TaskBody::Images { .. } => {
            // The held-out batches in order; their targets are the gold labels.
            let n = cap(task.len(Split::Val));
            let (mut pred, mut gold) = (Vec::with_capacity(n), Vec::with_capacity(n));
            let mut rng = Rng::new(0);
            for start in (0..n).step_by(bs) {
                let idx: Vec<usize> = (start..(start + bs).min(n)).collect();
                let drawn = task.batch_of(Split::Val, &idx, opts.context, &mut rng)?;
                if let Some(HostTensor::I64 { data, .. }) = &drawn.batch.targets {
                    gold.extend(data.iter().map(|&l| l as usize));
                }
                for row in class_logits(rt, store, &drawn.batch.inputs)? {
                    pred.push(argmax(&row[..task.classes.len().min(row.len())]));
                }
            }
            let classes = task.classes.clone();
            let confusion = Confusion::from_labels(classes.len(), &pred, &gold)?;
            let correct = pred.iter().zip(&gold).filter(|(p, g)| p == g).count();
            Ok(TaskMetrics::Classify { accuracy: metrics::accuracy(&pred, &gold), correct, total: n, confusion, classes })
        }
        TaskBody::MaskedLm { .. } => {
            let port = objective_output(rt, 0)?;
            let mut rng = Rng::new(derive_seed(opts.seed, &[3]));
            let (mut hits, mut masked, mut loss_sum) = (0usize, 0usize, 0.0f64);
            let batches = opts.mlm_batches.max(1);
            for _ in 0..batches {
                let drawn = task.draw(Split::Val, bs, opts.context, &mut rng)?;
                loss_sum += rt.loss(store, &drawn.batch).map_err(model_err)? as f64;
                let outs = rt.forward(store, &drawn.batch.inputs, false, 0).map_err(model_err)?;
                let (shape, data) = f32_of(&outs[port])?;
                let v = *shape.last().unwrap_or(&1);
                if let Some(HostTensor::I64 { data: labels, .. }) = &drawn.batch.targets {
                    for (r, &l) in labels.iter().enumerate() {
                        if l >= 0 {
                            masked += 1;
                            if argmax(&data[r * v..(r + 1) * v]) == l as usize {
                                hits += 1;
                            }
                        }
                    }
                }
            }
            Ok(TaskMetrics::MaskedLm { accuracy: hits as f64 / masked.max(1) as f64, masked, loss: loss_sum / batches as f64 })
        }
        TaskBody::ImageText { test, .. } => {
            let captions: Vec<String> = (0..10u8).map(loaders::zero_shot_caption).collect();
            let img_port = objective_output(rt, 0)?;
            let txt_port = objective_output(rt, 1)?;
            let n = cap(test.images.n);
            // Text features of the ten captions (paired with any ten images).
            let idx10: Vec<usize> = (0..10).map(|i| i % test.images.n.max(1)).collect();
            let outs = rt.forward(store, &task.image_text_inputs(Split::Val, &idx10, &captions)?, false, 0).map_err(model_err)?;
            let (tshape, tdata) = f32_of(&outs[txt_port])?;
            let d = *tshape.last().unwrap_or(&1);
            let text: Vec<Vec<f32>> = tdata.chunks(d).map(|r| r.to_vec()).collect();
            let mut correct = 0;
            for start in (0..n).step_by(bs) {
                let idx: Vec<usize> = (start..(start + bs).min(n)).collect();
                let filler: Vec<String> = idx.iter().map(|&i| captions[i % 10].clone()).collect();
                let outs = rt.forward(store, &task.image_text_inputs(Split::Val, &idx, &filler)?, false, 0).map_err(model_err)?;
                let (_, idata) = f32_of(&outs[img_port])?;
                for (r, &i) in idx.iter().enumerate() {
                    let img = &idata[r * d..(r + 1) * d];
                    let sims: Vec<f32> = text.iter().map(|t| t.iter().zip(img).map(|(a, b)| a * b).sum()).collect();
                    if argmax(&sims) == test.labels[i] as usize {
                        correct += 1;
                    }
                }
            }
            Ok(TaskMetrics::ZeroShot { accuracy: correct as f64 / n.max(1) as f64, correct, total: n, captions })
        }
        TaskBody::Translate { .. } => crate::translate::evaluate(rt, store, task, opts),
    }
}
