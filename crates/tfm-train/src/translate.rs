//! Translation with an encoder-decoder model: greedy and beam-search decoding driven by the
//! model's logits, and corpus BLEU on the held-out sentences against every reference.

use tfm_runtime::{Backend, HostTensor, ParamStore, Runtime};

use crate::decode::{self, BeamSettings, Row};
use crate::error::TrainError;
use crate::evaluate::{EvalOptions, TaskMetrics};
use crate::metrics;
use crate::tasks::{TaskBody, TaskData};
use crate::vocab::{self, Vocab};

/// Translates `sources` (token ids without EOS): greedy when `beam <= 1`, else beam search of
/// that width with the GNMT length penalty `alpha`. Sources are decoded `batch` at a time;
/// outputs stop at EOS or after `max_len` tokens.
#[allow(clippy::too_many_arguments)]
pub fn translate<D: Backend>(
    rt: &Runtime<D>,
    store: &ParamStore<D>,
    task: &TaskData,
    sources: &[Vec<u32>],
    beam: usize,
    alpha: f32,
    max_len: usize,
    batch: usize,
) -> Result<Vec<Vec<u32>>, TrainError> {
    let port = crate::evaluate::objective_output(rt, 0)?;
    let mut out = Vec::with_capacity(sources.len());
    for chunk in sources.chunks(batch.max(1)) {
        let srcs: Vec<Vec<u32>> = chunk.iter().map(|s| s.iter().copied().chain([vocab::EOS]).collect()).collect();
        let mut step = |rows: &[Row]| -> Result<Vec<Vec<f32>>, TrainError> {
            let src: Vec<Vec<u32>> = rows.iter().map(|r| srcs[r.source].clone()).collect();
            let tgt: Vec<Vec<u32>> = rows.iter().map(|r| r.prefix.clone()).collect();
            let inputs = task.seq2seq_inputs(&src, &tgt);
            let outs = rt.forward(store, &inputs, false, 0).map_err(|e| TrainError::Model(e.to_string()))?;
            let HostTensor::F32 { shape, data } = &outs[port] else {
                return Err(TrainError::Model("expected f32 logits".into()));
            };
            let (t, v) = (shape[1], shape[2]);
            Ok((0..rows.len())
                .map(|r| decode::log_softmax(&data[(r * t + t - 1) * v..(r * t + t) * v]))
                .collect())
        };
        let done = if beam <= 1 {
            decode::greedy(&mut step, chunk.len(), vocab::BOS, vocab::EOS, max_len)?
        } else {
            decode::beam_search(&mut step, chunk.len(), vocab::BOS, vocab::EOS, max_len, BeamSettings { width: beam, alpha: alpha as f64 })?
        };
        out.extend(done);
    }
    Ok(out)
}

/// The word tokens BLEU compares: the vocabulary's own pre-tokenization of the text.
fn bleu_tokens(v: &Vocab, text: &str) -> Vec<String> {
    vocab::words(text, v.lowercase)
}

/// Test loss over every held-out pair, and BLEU of greedy and (when `opts.beam > 1`) beam-search
/// translations of the held-out sentences.
pub fn evaluate<D: Backend>(rt: &Runtime<D>, store: &ParamStore<D>, task: &TaskData, opts: &EvalOptions) -> Result<TaskMetrics, TrainError> {
    let TaskBody::Translate { test, test_sentences, .. } = &task.body else {
        return Err(TrainError::data("expected the translate task"));
    };
    let v = task.vocab().ok_or_else(|| TrainError::data("the translate task has no vocabulary"))?;
    let bs = opts.batch.max(1);
    // Loss: token-weighted mean over the test pairs.
    let mut rng = crate::rng::Rng::new(0);
    let (mut loss_sum, mut tokens) = (0.0f64, 0usize);
    for start in (0..test.len()).step_by(bs) {
        let idx: Vec<usize> = (start..(start + bs).min(test.len())).collect();
        let drawn = task.batch_of(crate::data::Split::Val, &idx, opts.context, &mut rng)?;
        let l = rt.loss(store, &drawn.batch).map_err(|e| TrainError::Model(e.to_string()))?;
        loss_sum += l as f64 * drawn.units as f64;
        tokens += drawn.units;
    }
    let n = if opts.limit > 0 { test_sentences.len().min(opts.limit) } else { test_sentences.len() };
    let sents = &test_sentences[..n];
    let sources: Vec<Vec<u32>> = sents.iter().map(|s| s.ids.iter().copied().take(opts.context.saturating_sub(1)).collect()).collect();
    let refs: Vec<Vec<Vec<String>>> = sents.iter().map(|s| s.references.iter().map(|r| bleu_tokens(v, r)).collect()).collect();
    let max_len = opts.context.saturating_sub(1).max(1);
    let score = |outs: &[Vec<u32>]| -> metrics::Bleu {
        let hyps: Vec<Vec<String>> = outs.iter().map(|o| bleu_tokens(v, &v.decode(o))).collect();
        metrics::corpus_bleu(&hyps, &refs)
    };
    let greedy_out = translate(rt, store, task, &sources, 1, opts.alpha, max_len, bs)?;
    let greedy = score(&greedy_out);
    let beam = if opts.beam > 1 {
        let out = translate(rt, store, task, &sources, opts.beam, opts.alpha, max_len, (bs / opts.beam).max(1))?;
        Some((opts.beam, score(&out), out))
    } else {
        None
    };
    let shown = beam.as_ref().map(|b| &b.2).unwrap_or(&greedy_out);
    let samples = sents
        .iter()
        .zip(shown)
        .take(5)
        .map(|(s, o)| (s.source.clone(), v.decode(o), s.references.clone()))
        .collect();
    Ok(TaskMetrics::Translate {
        loss: loss_sum / tokens.max(1) as f64,
        sentences: n,
        greedy: Some(greedy),
        beam: beam.map(|(k, b, _)| (k, b)),
        samples,
    })
}
