//! Decoding algorithms (greedy and beam search) independent of any model: a step closure maps
//! the current prefixes to next-token log-probabilities.
//!
//! # The step contract
//! Both decoders call `step(rows)` once per generated position. Every [`Row`] names the source
//! it belongs to (`0..n`, so an encoder-decoder model can pick that source's encoder output) and
//! its prefix, which starts with `bos`. Within one call:
//! - every prefix has the same length (`1 + t` at step `t`), so the rows batch as `[rows, 1 + t]`;
//! - rows are grouped by source in increasing source order (a source's beams are contiguous);
//! - only sources still being decoded appear (greedy: sequences without `eos` yet; beam search:
//!   the live beams of unfinished sources).
//!
//! The closure returns one vector per row, in row order, holding the log-probabilities of the
//! next token over the vocabulary (apply [`log_softmax`] to logits). Greedy decoding only takes
//! the arg-max, so logits work for it too; beam search adds the values up and needs
//! log-probabilities. A wrong number of rows or an empty vector is an error.

use crate::error::TrainError;

/// One row of a decoding step: a prefix (starting with `bos`) and the source it decodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub source: usize,
    pub prefix: Vec<u32>,
}

/// The step closure: rows in, one log-probability vector per row out (see the module docs).
pub type Step<'a> = dyn FnMut(&[Row]) -> Result<Vec<Vec<f32>>, TrainError> + 'a;

/// `x - logsumexp(x)`, computed stably; an empty row stays empty.
pub fn log_softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        // All -inf (or +inf/NaN present): fall back to the plain formula.
        let sum: f32 = row.iter().map(|x| x.exp()).sum();
        return row.iter().map(|x| x - sum.ln()).collect();
    }
    let sum: f64 = row.iter().map(|&x| ((x - max) as f64).exp()).sum();
    let lse = max + sum.ln() as f32;
    row.iter().map(|x| x - lse).collect()
}

/// Orders NaN below everything, so it is never chosen over a number.
fn key(x: f32) -> f32 {
    if x.is_nan() {
        f32::NEG_INFINITY
    } else {
        x
    }
}

fn call(step: &mut Step<'_>, rows: &[Row]) -> Result<Vec<Vec<f32>>, TrainError> {
    let out = step(rows)?;
    if out.len() != rows.len() {
        return Err(TrainError::Model(format!(
            "the decoding step returned log-probabilities for {} rows, expected {}",
            out.len(),
            rows.len()
        )));
    }
    if let Some(i) = out.iter().position(|r| r.is_empty()) {
        return Err(TrainError::Model(format!(
            "the decoding step returned an empty vocabulary for row {i}, expected one value per token"
        )));
    }
    Ok(out)
}

/// The index of the largest value; ties go to the lowest index, NaN never wins.
pub fn argmax(row: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &x) in row.iter().enumerate() {
        if key(x) > key(row[best]) {
            best = i;
        }
    }
    best as u32
}

/// Greedy decoding of `n` sequences together. Each step appends the arg-max token (ties: the
/// lowest id) to every sequence still running; a sequence stops at `eos`, and all stop after
/// `max_len` steps. Returns per sequence the generated tokens without `bos` and `eos` (at most
/// `max_len` of them).
pub fn greedy(
    step: &mut Step<'_>,
    n: usize,
    bos: u32,
    eos: u32,
    max_len: usize,
) -> Result<Vec<Vec<u32>>, TrainError> {
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut active: Vec<usize> = (0..n).collect();
    for _ in 0..max_len {
        if active.is_empty() {
            break;
        }
        let rows: Vec<Row> = active
            .iter()
            .map(|&s| {
                let mut prefix = Vec::with_capacity(out[s].len() + 1);
                prefix.push(bos);
                prefix.extend_from_slice(&out[s]);
                Row { source: s, prefix }
            })
            .collect();
        let logp = call(step, &rows)?;
        let mut still = Vec::with_capacity(active.len());
        for (&s, lp) in active.iter().zip(&logp) {
            let tok = argmax(lp);
            if tok != eos {
                out[s].push(tok);
                still.push(s);
            }
        }
        active = still;
    }
    Ok(out)
}

/// Beam search settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BeamSettings {
    /// Beam width `k` (at least 1).
    pub width: usize,
    /// GNMT length penalty exponent: scores are `log p / ((5 + len) / 6)^alpha`; 0 ranks by
    /// plain log-probability, larger values favour longer outputs.
    pub alpha: f64,
}

/// A finished (or cut-off) beam-search hypothesis.
#[derive(Clone, Debug, PartialEq)]
pub struct Hypothesis {
    /// Generated tokens without `bos` and `eos`.
    pub tokens: Vec<u32>,
    /// Sum of the token log-probabilities, `eos` included when it was generated.
    pub log_prob: f64,
    /// `log_prob / length_penalty(len, alpha)`, the value hypotheses are ranked by.
    pub score: f64,
    /// Whether it ended with `eos` (false when cut off at `max_len`).
    pub finished: bool,
}

/// GNMT's length penalty `((5 + len) / 6)^alpha` (Wu et al., 2016).
pub fn length_penalty(len: usize, alpha: f64) -> f64 {
    ((5.0 + len as f64) / 6.0).powf(alpha)
}

struct Beam {
    /// Generated tokens (without `bos`).
    tokens: Vec<u32>,
    log_prob: f64,
}

fn hypothesis(tokens: Vec<u32>, log_prob: f64, scored_len: usize, finished: bool, alpha: f64) -> Hypothesis {
    Hypothesis {
        tokens,
        log_prob,
        score: log_prob / length_penalty(scored_len, alpha),
        finished,
    }
}

/// Beam search over `n` sources at once, keeping every source's hypotheses in its final ranking
/// (best first).
///
/// Per source, `k = width` beams start from `[bos]`. At each step every live beam is extended by
/// every token, and the `m` best extensions by total log-probability are kept, where `m` is the
/// number of live beams (ties: earlier beam, then lower token id). An extension ending in `eos`
/// becomes a finished hypothesis and the beam narrows by one; the others stay live. A source is
/// done when it has no live beam; after `max_len` steps the live beams are kept as unfinished
/// hypotheses. Hypotheses are ranked by `log_prob / ((5 + len) / 6)^alpha`, `len` counting the
/// generated tokens with `eos` (the number of log-probabilities summed).
pub fn beam_search_all(
    step: &mut Step<'_>,
    n: usize,
    bos: u32,
    eos: u32,
    max_len: usize,
    settings: BeamSettings,
) -> Result<Vec<Vec<Hypothesis>>, TrainError> {
    if settings.width == 0 {
        return Err(TrainError::data_hint(
            "expected a beam width of at least 1, found 0",
            "use width 1 for greedy decoding",
        ));
    }
    let alpha = settings.alpha;
    let mut live: Vec<Vec<Beam>> = (0..n)
        .map(|_| {
            vec![Beam {
                tokens: vec![],
                log_prob: 0.0,
            }]
        })
        .collect();
    // Beams still allowed per source (k minus the finished hypotheses).
    let mut room: Vec<usize> = vec![settings.width; n];
    let mut done: Vec<Vec<Hypothesis>> = (0..n).map(|_| Vec::new()).collect();
    for _ in 0..max_len {
        let rows: Vec<Row> = live
            .iter()
            .enumerate()
            .flat_map(|(s, beams)| {
                beams.iter().map(move |b| {
                    let mut prefix = Vec::with_capacity(b.tokens.len() + 1);
                    prefix.push(bos);
                    prefix.extend_from_slice(&b.tokens);
                    Row { source: s, prefix }
                })
            })
            .collect();
        if rows.is_empty() {
            break;
        }
        let logp = call(step, &rows)?;
        let mut at = 0usize;
        for s in 0..n {
            let beams = std::mem::take(&mut live[s]);
            if beams.is_empty() {
                continue;
            }
            let m = room[s];
            // (total log-prob, beam, token): each beam's m best tokens hold the m best overall.
            let mut cands: Vec<(f64, usize, u32)> = Vec::new();
            for (bi, b) in beams.iter().enumerate() {
                let lp = &logp[at + bi];
                let mut idx: Vec<usize> = (0..lp.len()).collect();
                let by = |a: &usize, b: &usize| key(lp[*b]).total_cmp(&key(lp[*a])).then(a.cmp(b));
                if m < idx.len() {
                    idx.select_nth_unstable_by(m - 1, by);
                    idx.truncate(m);
                }
                for t in idx {
                    cands.push((b.log_prob + key(lp[t]) as f64, bi, t as u32));
                }
            }
            at += beams.len();
            cands.sort_by(|a, b| {
                b.0.total_cmp(&a.0)
                    .then(a.1.cmp(&b.1))
                    .then(a.2.cmp(&b.2))
            });
            cands.truncate(m);
            let mut next = Vec::with_capacity(m);
            for (lp, bi, t) in cands {
                let tokens = beams[bi].tokens.clone();
                if t == eos {
                    let len = tokens.len() + 1;
                    done[s].push(hypothesis(tokens, lp, len, true, alpha));
                    room[s] -= 1;
                } else {
                    let mut tokens = tokens;
                    tokens.push(t);
                    next.push(Beam { tokens, log_prob: lp });
                }
            }
            live[s] = next;
        }
    }
    for (s, beams) in live.into_iter().enumerate() {
        for b in beams {
            let len = b.tokens.len();
            done[s].push(hypothesis(b.tokens, b.log_prob, len, false, alpha));
        }
    }
    for hyps in &mut done {
        // Stable: equal scores keep the order they were found in.
        hyps.sort_by(|a, b| b.score.total_cmp(&a.score));
    }
    Ok(done)
}

/// Beam search (see [`beam_search_all`]) returning the best sequence per source, without `bos`
/// and `eos`.
pub fn beam_search(
    step: &mut Step<'_>,
    n: usize,
    bos: u32,
    eos: u32,
    max_len: usize,
    settings: BeamSettings,
) -> Result<Vec<Vec<u32>>, TrainError> {
    let all = beam_search_all(step, n, bos, eos, max_len, settings)?;
    Ok(all
        .into_iter()
        .map(|hyps| hyps.into_iter().next().map(|h| h.tokens).unwrap_or_default())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const BOS: u32 = 0;
    const EOS: u32 = 1;
    const A: u32 = 2;
    const B: u32 = 3;

    /// Next-token probabilities over [bos, eos, A, B] by prefix (bos included); prefixes not in
    /// the table continue with A (0.97), so they never end on their own.
    struct Table(HashMap<Vec<u32>, [f32; 4]>);

    impl Table {
        fn new(entries: &[(&[u32], [f32; 4])]) -> Self {
            Table(entries.iter().map(|(k, v)| (k.to_vec(), *v)).collect())
        }
        fn logp(&self, prefix: &[u32]) -> Vec<f32> {
            let p = self.0.get(prefix).copied().unwrap_or([0.0, 0.01, 0.97, 0.02]);
            p.iter().map(|x| x.ln()).collect()
        }
    }

    /// A step over one table per source that records every call and checks the contract.
    fn stepper<'a>(
        tables: &'a [Table],
        calls: &'a mut Vec<Vec<Row>>,
    ) -> impl FnMut(&[Row]) -> Result<Vec<Vec<f32>>, TrainError> + 'a {
        move |rows: &[Row]| {
            calls.push(rows.to_vec());
            let len = rows[0].prefix.len();
            assert!(rows.iter().all(|r| r.prefix.len() == len && r.prefix[0] == BOS));
            assert!(rows.windows(2).all(|w| w[0].source <= w[1].source));
            Ok(rows.iter().map(|r| tables[r.source].logp(&r.prefix)).collect())
        }
    }

    /// Greedy picks A (0.6), then eos (0.4): [A] with p = 0.24.
    /// Beam, k = 2, alpha = 0:
    ///   step 1: A 0.6, B 0.4 (both live);
    ///   step 2: A+eos 0.6*0.4 = 0.24, A+A 0.18, A+B 0.18, B+eos 0.4*0.9 = 0.36, B+A 0.02, B+B 0.02;
    ///           the best two are B+eos (0.36) and A+eos (0.24), both finished: done.
    ///   Best: [B] with p = 0.36.
    fn greedy_is_shortsighted() -> Table {
        Table::new(&[
            (&[BOS], [0.0, 0.0, 0.6, 0.4]),
            (&[BOS, A], [0.0, 0.4, 0.3, 0.3]),
            (&[BOS, B], [0.0, 0.9, 0.05, 0.05]),
        ])
    }

    #[test]
    fn beam_finds_what_greedy_misses() {
        let tables = [greedy_is_shortsighted()];
        let mut calls = vec![];
        let g = greedy(&mut stepper(&tables, &mut calls), 1, BOS, EOS, 10).expect("greedy");
        assert_eq!(g, vec![vec![A]]);
        assert_eq!(calls.len(), 2);
        let mut calls = vec![];
        let settings = BeamSettings { width: 2, alpha: 0.0 };
        let all = beam_search_all(&mut stepper(&tables, &mut calls), 1, BOS, EOS, 10, settings)
            .expect("beam");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[1].len(), 2, "two live beams at step 2");
        let hyps = &all[0];
        assert_eq!(hyps.len(), 2);
        assert_eq!(hyps[0].tokens, vec![B]);
        assert!((hyps[0].log_prob - 0.36f64.ln()).abs() < 1e-6);
        assert!(hyps[0].finished);
        assert_eq!(hyps[1].tokens, vec![A]);
        assert!((hyps[1].log_prob - 0.24f64.ln()).abs() < 1e-6);
    }

    /// k = 2:
    ///   step 1: A 0.6, B 0.4;
    ///   step 2: A+eos 0.36, A+A 0.24, B+A 0.4 (B's other tokens 0): best two are B+A 0.4 (live)
    ///           and A+eos 0.36 (finished, len 2); the beam narrows to 1;
    ///   step 3: BA+eos 0.4*0.85 = 0.34 (finished, len 3) beats BA+B 0.06.
    /// alpha 0: 0.36 > 0.34, best [A] (also greedy's answer).
    /// alpha 1: ln 0.36 / (7/6) = -0.8757 < ln 0.34 / (8/6) = -0.8091, best [B, A].
    fn length_matters() -> Table {
        Table::new(&[
            (&[BOS], [0.0, 0.0, 0.6, 0.4]),
            (&[BOS, A], [0.0, 0.6, 0.4, 0.0]),
            (&[BOS, B], [0.0, 0.0, 1.0, 0.0]),
            (&[BOS, B, A], [0.0, 0.85, 0.0, 0.15]),
        ])
    }

    #[test]
    fn length_penalty_changes_the_winner() {
        let tables = [length_matters()];
        let mut calls = vec![];
        let g = greedy(&mut stepper(&tables, &mut calls), 1, BOS, EOS, 10).expect("greedy");
        assert_eq!(g, vec![vec![A]]);
        for (alpha, want) in [(0.0, vec![A]), (1.0, vec![B, A])] {
            let mut calls = vec![];
            let settings = BeamSettings { width: 2, alpha };
            let all = beam_search_all(&mut stepper(&tables, &mut calls), 1, BOS, EOS, 10, settings)
                .expect("beam");
            assert_eq!(all[0][0].tokens, want, "alpha {alpha}");
            assert_eq!(calls.len(), 3);
            assert_eq!(calls[2].len(), 1, "the beam narrowed after a finished hypothesis");
            if alpha == 1.0 {
                assert!((all[0][0].score - (-0.809_107_246_028_947_3)).abs() < 1e-6);
                assert!((all[0][1].score - (-0.875_701_069_313_126_9)).abs() < 1e-6);
            }
        }
        let mut calls = vec![];
        let settings = BeamSettings { width: 2, alpha: 1.0 };
        let best = beam_search(&mut stepper(&tables, &mut calls), 1, BOS, EOS, 10, settings)
            .expect("beam");
        assert_eq!(best, vec![vec![B, A]]);
    }

    #[test]
    fn width_one_equals_greedy() {
        let tables = [greedy_is_shortsighted(), length_matters(), Table::new(&[])];
        let mut calls = vec![];
        let g = greedy(&mut stepper(&tables, &mut calls), 3, BOS, EOS, 5).expect("greedy");
        let mut calls = vec![];
        let settings = BeamSettings { width: 1, alpha: 0.6 };
        let b = beam_search(&mut stepper(&tables, &mut calls), 3, BOS, EOS, 5, settings)
            .expect("beam");
        assert_eq!(g, b);
        assert_eq!(g, vec![vec![A], vec![A], vec![A; 5]]);
    }

    #[test]
    fn batched_sources_stop_independently() {
        // Source 0 ends after one token ([A] + eos), source 1 never ends (the default row):
        // after step 2 only source 1's row is asked for.
        let tables = [greedy_is_shortsighted(), Table::new(&[])];
        let mut calls = vec![];
        let g = greedy(&mut stepper(&tables, &mut calls), 2, BOS, EOS, 4).expect("greedy");
        assert_eq!(g, vec![vec![A], vec![A, A, A, A]]);
        let sources: Vec<Vec<usize>> =
            calls.iter().map(|c| c.iter().map(|r| r.source).collect()).collect();
        assert_eq!(sources, vec![vec![0, 1], vec![0, 1], vec![1], vec![1]]);
        assert_eq!(calls[3][0].prefix, vec![BOS, A, A, A]);

        // Beam: source 0 finishes at step 2 (see `beam_finds_what_greedy_misses`); source 1's
        // two beams go on to max_len.
        let mut calls = vec![];
        let settings = BeamSettings { width: 2, alpha: 0.0 };
        let all = beam_search_all(&mut stepper(&tables, &mut calls), 2, BOS, EOS, 4, settings)
            .expect("beam");
        let sources: Vec<Vec<usize>> =
            calls.iter().map(|c| c.iter().map(|r| r.source).collect()).collect();
        assert_eq!(sources, vec![vec![0, 1], vec![0, 0, 1, 1], vec![1, 1], vec![1, 1]]);
        assert_eq!(all[0][0].tokens, vec![B]);
        // Source 1: every step's best two extensions of the best beam by A (0.97) and B (0.02),
        // or by A from both beams; the best is A A A A (0.97^4), cut off at max_len.
        assert_eq!(all[1][0].tokens, vec![A; 4]);
        assert!(!all[1][0].finished);
        assert_eq!(all[1].len(), 2);
    }

    #[test]
    fn eos_first_gives_an_empty_sequence() {
        let tables = [Table::new(&[(&[BOS], [0.0, 0.9, 0.05, 0.05])])];
        let mut calls = vec![];
        let g = greedy(&mut stepper(&tables, &mut calls), 1, BOS, EOS, 3).expect("greedy");
        assert_eq!(g, vec![Vec::<u32>::new()]);
        assert_eq!(calls.len(), 1);
        let mut calls = vec![];
        let settings = BeamSettings { width: 1, alpha: 0.0 };
        let b = beam_search(&mut stepper(&tables, &mut calls), 1, BOS, EOS, 3, settings)
            .expect("beam");
        assert_eq!(b, vec![Vec::<u32>::new()]);
        assert_eq!(calls.len(), 1);
    }

    #[test]
    fn max_len_bounds_the_output() {
        let tables = [Table::new(&[])];
        let mut calls = vec![];
        let g = greedy(&mut stepper(&tables, &mut calls), 1, BOS, EOS, 3).expect("greedy");
        assert_eq!(g, vec![vec![A; 3]]);
        assert_eq!(calls.len(), 3);
        let mut calls = vec![];
        let g = greedy(&mut stepper(&tables, &mut calls), 2, BOS, EOS, 0).expect("greedy");
        assert_eq!(g, vec![Vec::<u32>::new(), vec![]]);
        assert!(calls.is_empty());
        // Width 3 over [A 0.97, B 0.02, eos 0.01]: step 1 keeps A and B and finishes the empty
        // hypothesis (eos, p = 0.01), so two beams go on; both are cut off after 3 tokens, and
        // the best is A A A (0.97^3 = 0.9127) ahead of the empty one (0.01).
        let mut calls = vec![];
        let settings = BeamSettings { width: 3, alpha: 0.0 };
        let all = beam_search_all(&mut stepper(&tables, &mut calls), 1, BOS, EOS, 3, settings)
            .expect("beam");
        let widths: Vec<usize> = calls.iter().map(|c| c.len()).collect();
        assert_eq!(widths, vec![1, 2, 2]);
        assert_eq!(all[0].len(), 3);
        assert_eq!(all[0][0].tokens, vec![A; 3]);
        assert!(!all[0][0].finished);
        assert!((all[0][0].log_prob - 3.0 * f64::from(0.97f32.ln())).abs() < 1e-9);
        let unfinished: Vec<&Hypothesis> = all[0].iter().filter(|h| !h.finished).collect();
        assert_eq!(unfinished.len(), 2);
        assert!(unfinished.iter().all(|h| h.tokens.len() == 3));
        let empty: Vec<&Hypothesis> = all[0].iter().filter(|h| h.finished).collect();
        assert_eq!(empty.len(), 1);
        assert!(empty[0].tokens.is_empty());
        assert!((empty[0].log_prob - f64::from(0.01f32.ln())).abs() < 1e-9);
    }

    #[test]
    fn step_contract_violations_are_errors() {
        let mut short = |_: &[Row]| -> Result<Vec<Vec<f32>>, TrainError> { Ok(vec![]) };
        let e = greedy(&mut short, 2, BOS, EOS, 3).expect_err("row count");
        assert!(e.to_string().contains("for 0 rows, expected 2"), "{e}");
        let mut empty =
            |rows: &[Row]| -> Result<Vec<Vec<f32>>, TrainError> { Ok(vec![vec![]; rows.len()]) };
        let settings = BeamSettings { width: 2, alpha: 0.0 };
        let e = beam_search(&mut empty, 1, BOS, EOS, 3, settings).expect_err("empty vocab");
        assert!(e.to_string().contains("empty vocabulary"), "{e}");
        let mut ok = |rows: &[Row]| -> Result<Vec<Vec<f32>>, TrainError> {
            Ok(vec![vec![0.0f32; 4]; rows.len()])
        };
        let settings = BeamSettings { width: 0, alpha: 0.0 };
        let e = beam_search(&mut ok, 1, BOS, EOS, 3, settings).expect_err("width 0");
        assert!(e.to_string().contains("beam width of at least 1, found 0"), "{e}");
    }

    #[test]
    fn log_softmax_normalises() {
        // log_softmax([0, ln 3]) = [ln 1/4, ln 3/4].
        let l = log_softmax(&[0.0, 3f32.ln()]);
        assert!((l[0] - 0.25f32.ln()).abs() < 1e-6);
        assert!((l[1] - 0.75f32.ln()).abs() < 1e-6);
        // Shift invariant and stable for large logits.
        let l = log_softmax(&[1000.0, 1000.0 + 3f32.ln()]);
        assert!((l[0] - 0.25f32.ln()).abs() < 1e-4);
        let l = log_softmax(&[f32::NEG_INFINITY, 0.0]);
        assert_eq!(l, vec![f32::NEG_INFINITY, 0.0]);
        assert!(log_softmax(&[]).is_empty());
    }

    #[test]
    fn length_penalty_values() {
        // ((5 + 1) / 6)^a = 1; ((5 + 7) / 6)^0.5 = sqrt 2.
        assert_eq!(length_penalty(1, 0.6), 1.0);
        assert!((length_penalty(7, 0.5) - 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(length_penalty(9, 0.0), 1.0);
    }
}
