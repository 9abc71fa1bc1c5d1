//! Evaluation metrics over decoded outputs: corpus BLEU (as sacreBLEU computes it, without
//! smoothing), accuracy, and a confusion matrix with per-class precision, recall and F1.

use std::collections::HashMap;
use std::fmt;

use crate::error::TrainError;

/// The highest n-gram order BLEU counts.
const MAX_ORDER: usize = 4;

/// Corpus BLEU and the statistics behind it.
#[derive(Clone, Debug, PartialEq)]
pub struct Bleu {
    /// 0 to 100.
    pub score: f64,
    /// Clipped n-gram precisions for n = 1..4, in percent (0 to 100).
    pub precisions: [f64; 4],
    /// `exp(1 - ref_len / hyp_len)` when the hypotheses are shorter, else 1.
    pub brevity_penalty: f64,
    /// Total hypothesis tokens.
    pub hyp_len: usize,
    /// Total effective reference tokens (per sentence, the reference closest in length).
    pub ref_len: usize,
}

impl Bleu {
    /// `hyp_len / ref_len` (0 when there are no reference tokens).
    pub fn ratio(&self) -> f64 {
        if self.ref_len == 0 {
            0.0
        } else {
            self.hyp_len as f64 / self.ref_len as f64
        }
    }
}

impl fmt::Display for Bleu {
    /// sacreBLEU's line: `BLEU = 66.87 80.0/75.0/66.7/50.0 (BP = 1.000 ratio = 1.000 hyp_len = 5 ref_len = 5)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.precisions;
        write!(
            f,
            "BLEU = {:.2} {:.1}/{:.1}/{:.1}/{:.1} (BP = {:.3} ratio = {:.3} hyp_len = {} ref_len = {})",
            self.score,
            p[0],
            p[1],
            p[2],
            p[3],
            self.brevity_penalty,
            self.ratio(),
            self.hyp_len,
            self.ref_len
        )
    }
}

fn ngram_counts(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    if tokens.len() >= n {
        for w in tokens.windows(n) {
            *counts.entry(w).or_insert(0) += 1;
        }
    }
    counts
}

/// The reference length closest to `hyp_len`; on a tie, the shorter one (0 without references).
fn closest_ref_len(hyp_len: usize, refs: &[Vec<String>]) -> usize {
    let mut best: Option<(usize, usize)> = None; // (distance, length)
    for r in refs {
        let len = r.len();
        let d = len.abs_diff(hyp_len);
        best = match best {
            Some((bd, bl)) if bd < d || (bd == d && bl <= len) => Some((bd, bl)),
            _ => Some((d, len)),
        };
    }
    best.map_or(0, |(_, l)| l)
}

/// Corpus BLEU (Papineni et al., 2002) over tokenized sentences: `references[i]` holds one or
/// more references for `hypotheses[i]`. Clipped n-gram matches and n-gram totals are summed over
/// the corpus before dividing; a count is clipped by its largest count in any one reference. The
/// effective reference length sums, per sentence, the reference length closest to the
/// hypothesis length (ties go to the shorter). No smoothing: if any order has no match the score
/// is 0. Pairs are scored up to the shorter of the two lists; see [`corpus_bleu_checked`] for a
/// version that rejects mismatched lists.
pub fn corpus_bleu(hypotheses: &[Vec<String>], references: &[Vec<Vec<String>>]) -> Bleu {
    let mut matches = [0usize; MAX_ORDER];
    let mut totals = [0usize; MAX_ORDER];
    let mut hyp_len = 0usize;
    let mut ref_len = 0usize;
    for (hyp, refs) in hypotheses.iter().zip(references) {
        hyp_len += hyp.len();
        ref_len += closest_ref_len(hyp.len(), refs);
        for n in 1..=MAX_ORDER {
            let hyp_counts = ngram_counts(hyp, n);
            let mut max_ref: HashMap<&[String], usize> = HashMap::new();
            for r in refs {
                for (g, c) in ngram_counts(r, n) {
                    let e = max_ref.entry(g).or_insert(0);
                    *e = (*e).max(c);
                }
            }
            let clipped: usize = hyp_counts
                .iter()
                .map(|(g, c)| (*c).min(max_ref.get(g).copied().unwrap_or(0)))
                .sum();
            matches[n - 1] += clipped;
            totals[n - 1] += hyp.len().saturating_sub(n - 1);
        }
    }
    let mut precisions = [0.0f64; MAX_ORDER];
    for n in 0..MAX_ORDER {
        if totals[n] > 0 {
            precisions[n] = 100.0 * matches[n] as f64 / totals[n] as f64;
        }
    }
    let brevity_penalty = if hyp_len == 0 {
        0.0
    } else if hyp_len < ref_len {
        (1.0 - ref_len as f64 / hyp_len as f64).exp()
    } else {
        1.0
    };
    let score = if precisions.contains(&0.0) {
        0.0
    } else {
        let mean_log = precisions.iter().map(|p| p.ln()).sum::<f64>() / MAX_ORDER as f64;
        brevity_penalty * mean_log.exp()
    };
    Bleu {
        score,
        precisions,
        brevity_penalty,
        hyp_len,
        ref_len,
    }
}

/// [`corpus_bleu`], after checking that there is one reference set per hypothesis and that every
/// set holds at least one reference.
pub fn corpus_bleu_checked(
    hypotheses: &[Vec<String>],
    references: &[Vec<Vec<String>>],
) -> Result<Bleu, TrainError> {
    if hypotheses.len() != references.len() {
        return Err(TrainError::data_hint(
            format!(
                "expected one reference set per hypothesis ({}), found {}",
                hypotheses.len(),
                references.len()
            ),
            "score the hypotheses against the references of the same examples",
        ));
    }
    if let Some(i) = references.iter().position(|r| r.is_empty()) {
        return Err(TrainError::data_hint(
            format!("expected at least one reference for sentence {i}, found none"),
            "give every hypothesis at least one reference",
        ));
    }
    Ok(corpus_bleu(hypotheses, references))
}

/// Fraction (0 to 1) of positions where `pred` equals `gold`. Positions present in only one of
/// the two lists count as wrong; two empty lists give 0.
pub fn accuracy(pred: &[usize], gold: &[usize]) -> f64 {
    let n = pred.len().max(gold.len());
    if n == 0 {
        return 0.0;
    }
    let right = pred.iter().zip(gold).filter(|(p, g)| p == g).count();
    right as f64 / n as f64
}

/// An `n x n` confusion matrix: `counts[gold][pred]`, rows are the true classes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Confusion {
    pub counts: Vec<Vec<u64>>,
}

impl Confusion {
    /// An empty matrix over `n` classes.
    pub fn new(n: usize) -> Self {
        Confusion {
            counts: vec![vec![0; n]; n],
        }
    }

    /// The matrix of paired predictions and gold labels over `n` classes; labels outside
    /// `0..n` and lists of different lengths are errors.
    pub fn from_labels(n: usize, pred: &[usize], gold: &[usize]) -> Result<Self, TrainError> {
        if pred.len() != gold.len() {
            return Err(TrainError::data_hint(
                format!(
                    "expected as many predictions as gold labels ({}), found {}",
                    gold.len(),
                    pred.len()
                ),
                "predict one label per example",
            ));
        }
        let mut c = Confusion::new(n);
        for (&p, &g) in pred.iter().zip(gold) {
            c.add(g, p)?;
        }
        Ok(c)
    }

    /// Counts one example of true class `gold` predicted as `pred`.
    pub fn add(&mut self, gold: usize, pred: usize) -> Result<(), TrainError> {
        let n = self.num_classes();
        for (what, label) in [("gold label", gold), ("predicted label", pred)] {
            if label >= n {
                return Err(TrainError::data_hint(
                    format!("expected a {what} below {n}, found {label}"),
                    format!("the confusion matrix has {n} classes; count the labels of the data"),
                ));
            }
        }
        self.counts[gold][pred] += 1;
        Ok(())
    }

    pub fn num_classes(&self) -> usize {
        self.counts.len()
    }

    /// Examples counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Examples of class `c` (row sum).
    pub fn support(&self, c: usize) -> u64 {
        self.counts[c].iter().sum()
    }

    /// Examples predicted as class `c` (column sum).
    pub fn predicted(&self, c: usize) -> u64 {
        self.counts.iter().map(|row| row[c]).sum()
    }

    /// Correct predictions over all examples (0 when empty).
    pub fn accuracy(&self) -> f64 {
        let total = self.total();
        if total == 0 {
            return 0.0;
        }
        let right: u64 = (0..self.num_classes()).map(|c| self.counts[c][c]).sum();
        right as f64 / total as f64
    }

    /// Of the examples predicted as `c`, the fraction that are `c` (0 when none are).
    pub fn precision(&self, c: usize) -> f64 {
        ratio(self.counts[c][c], self.predicted(c))
    }

    /// Of the examples of class `c`, the fraction predicted as `c` (0 when there are none).
    pub fn recall(&self, c: usize) -> f64 {
        ratio(self.counts[c][c], self.support(c))
    }

    /// Harmonic mean of precision and recall (0 when both are 0).
    pub fn f1(&self, c: usize) -> f64 {
        let (p, r) = (self.precision(c), self.recall(c));
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }

    /// Unweighted mean of the per-class F1 scores.
    pub fn macro_f1(&self) -> f64 {
        let n = self.num_classes();
        if n == 0 {
            return 0.0;
        }
        (0..n).map(|c| self.f1(c)).sum::<f64>() / n as f64
    }

    /// A plain-text table: the matrix (rows = gold, columns = predicted) followed by precision,
    /// recall, F1 and support per class. `labels` names the classes; missing names are the
    /// class numbers.
    pub fn render(&self, labels: &[String]) -> String {
        let n = self.num_classes();
        let names: Vec<String> = (0..n)
            .map(|c| labels.get(c).cloned().unwrap_or_else(|| c.to_string()))
            .collect();
        let name_w = names
            .iter()
            .map(|s| s.chars().count())
            .chain(["gold\\pred".len(), "macro f1".len()])
            .max()
            .unwrap_or(0);
        let cell_w = names
            .iter()
            .map(|s| s.chars().count())
            .chain(self.counts.iter().flatten().map(|c| c.to_string().len()))
            .max()
            .unwrap_or(1)
            .max(1);
        let mut out = String::new();
        out.push_str(&format!("{:<name_w$}", "gold\\pred"));
        for name in &names {
            out.push_str(&format!("  {name:>cell_w$}"));
        }
        out.push('\n');
        for (g, row) in self.counts.iter().enumerate() {
            out.push_str(&format!("{:<name_w$}", names[g]));
            for c in row {
                out.push_str(&format!("  {c:>cell_w$}"));
            }
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&format!(
            "{:<name_w$}  {:>9}  {:>6}  {:>6}  {:>7}\n",
            "class", "precision", "recall", "f1", "support"
        ));
        for (c, name) in names.iter().enumerate() {
            out.push_str(&format!(
                "{:<name_w$}  {:>9.4}  {:>6.4}  {:>6.4}  {:>7}\n",
                name,
                self.precision(c),
                self.recall(c),
                self.f1(c),
                self.support(c)
            ));
        }
        out.push_str(&format!(
            "{:<name_w$}  {:>9}  {:>6}  {:>6.4}  {:>7}\n",
            "macro f1",
            "",
            "",
            self.macro_f1(),
            self.total()
        ));
        out.push_str(&format!(
            "{:<name_w$}  {:>9}  {:>6}  {:>6.4}  {:>7}\n",
            "accuracy",
            "",
            "",
            self.accuracy(),
            self.total()
        ));
        out
    }
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn bleu_perfect_match_is_100() {
        // 6 tokens: 6/6 unigrams, 5/5 bigrams, 4/4 trigrams, 3/3 4-grams, BP = 1.
        let b = corpus_bleu(
            &[toks("the cat sat on the mat")],
            &[vec![toks("the cat sat on the mat")]],
        );
        assert!(close(b.score, 100.0), "{b}");
        assert_eq!(b.precisions, [100.0; 4]);
        assert_eq!(b.brevity_penalty, 1.0);
        assert_eq!((b.hyp_len, b.ref_len), (6, 6));
    }

    #[test]
    fn bleu_without_a_4gram_match_is_0() {
        // hyp `a b c d`, ref `a b c e`: 1-grams 3/4, 2-grams 2/3 (ab, bc), 3-grams 1/2 (abc),
        // 4-grams 0/1: no smoothing, so the score is 0 while the lower orders are kept.
        let b = corpus_bleu(&[toks("a b c d")], &[vec![toks("a b c e")]]);
        assert_eq!(b.score, 0.0);
        assert!(close(b.precisions[0], 75.0));
        assert!(close(b.precisions[1], 200.0 / 3.0));
        assert!(close(b.precisions[2], 50.0));
        assert_eq!(b.precisions[3], 0.0);
    }

    #[test]
    fn bleu_clips_counts_by_the_reference() {
        // Papineni's example: 7 x `the` against a reference with 2 `the`: unigram 2/7.
        let b = corpus_bleu(
            &[toks("the the the the the the the")],
            &[vec![toks("the cat is on the mat")]],
        );
        assert!(close(b.precisions[0], 200.0 / 7.0));
        assert_eq!(b.score, 0.0);

        // hyp `a a b c d`, ref `a b c d e`: unigrams a x2 clipped to 1, b c d -> 4/5;
        // bigrams aa ab bc cd -> ab bc cd match 3/4; trigrams aab abc bcd -> 2/3;
        // 4-grams aabc abcd -> 1/2; lengths 5 and 5, BP 1.
        // score = 100 * (4/5 * 3/4 * 2/3 * 1/2)^(1/4) = 100 * 0.2^0.25 = 66.87403049764220.
        let b = corpus_bleu(&[toks("a a b c d")], &[vec![toks("a b c d e")]]);
        assert!(close(b.precisions[0], 80.0));
        assert!(close(b.precisions[1], 75.0));
        assert!(close(b.precisions[2], 200.0 / 3.0));
        assert!(close(b.precisions[3], 50.0));
        assert!(close(b.score, 66.874_030_497_642_2), "{b}");
        assert_eq!(
            b.to_string(),
            "BLEU = 66.87 80.0/75.0/66.7/50.0 (BP = 1.000 ratio = 1.000 hyp_len = 5 ref_len = 5)"
        );
    }

    #[test]
    fn bleu_brevity_penalty() {
        // hyp `a b c d` (4) is a prefix of the 6-token reference: every precision is 100,
        // BP = exp(1 - 6/4) = exp(-0.5) = 0.6065306597126334, score 60.65306597126334.
        let b = corpus_bleu(&[toks("a b c d")], &[vec![toks("a b c d e f")]]);
        assert_eq!(b.precisions, [100.0; 4]);
        assert!(close(b.brevity_penalty, 0.606_530_659_712_633_4));
        assert!(close(b.score, 60.653_065_971_263_34));
        assert_eq!((b.hyp_len, b.ref_len), (4, 6));
        // A longer hypothesis is not penalised: BP stays 1.
        let b = corpus_bleu(&[toks("a b c d e f")], &[vec![toks("a b c d")]]);
        assert_eq!(b.brevity_penalty, 1.0);
    }

    #[test]
    fn bleu_multi_reference_uses_the_closest_length() {
        // hyp length 4; references of 7 and 5 tokens: closest is 5, BP = exp(1 - 5/4) =
        // exp(-0.25) = 0.7788007830714049; all n-grams of `a b c d` occur in a reference.
        let b = corpus_bleu(
            &[toks("a b c d")],
            &[vec![toks("a b c d e f g"), toks("a b c d x")]],
        );
        assert_eq!(b.ref_len, 5);
        assert!(close(b.score, 77.880_078_307_140_49), "{b}");
        // Lengths 5 and 3 are both 1 away from 4: the tie goes to the shorter (3), so BP = 1.
        // `a b c d` is matched by the first reference at every order: score 100.
        let b = corpus_bleu(
            &[toks("a b c d")],
            &[vec![toks("a b c d e"), toks("a b c")]],
        );
        assert_eq!(b.ref_len, 3);
        assert!(close(b.score, 100.0), "{b}");
        // Clipping takes the largest count in any one reference: `x x` against refs with one
        // `x` each gives 1/2, against a ref with two gives 2/2.
        let b = corpus_bleu(&[toks("x x")], &[vec![toks("x y"), toks("y x")]]);
        assert!(close(b.precisions[0], 50.0));
        let b = corpus_bleu(&[toks("x x")], &[vec![toks("x y"), toks("x x")]]);
        assert!(close(b.precisions[0], 100.0));
    }

    #[test]
    fn bleu_sums_statistics_over_the_corpus() {
        // Sentence 1 is perfect (`a b c d`); sentence 2 is `a b c d` against `a b c e`.
        // Matches/totals: 1-grams (4+3)/(4+4) = 7/8, 2-grams (3+2)/6 = 5/6, 3-grams (2+1)/4 = 3/4,
        // 4-grams (1+0)/2 = 1/2. score = 100 * (105/384)^(1/4) = 72.31269021297695, not the
        // mean of the sentence scores (50).
        let b = corpus_bleu(
            &[toks("a b c d"), toks("a b c d")],
            &[vec![toks("a b c d")], vec![toks("a b c e")]],
        );
        assert!(close(b.score, 72.312_690_212_976_95), "{b}");
        assert_eq!((b.hyp_len, b.ref_len), (8, 8));
    }

    #[test]
    fn bleu_of_nothing_is_0() {
        let b = corpus_bleu(&[vec![]], &[vec![toks("a b")]]);
        assert_eq!((b.score, b.brevity_penalty, b.hyp_len, b.ref_len), (0.0, 0.0, 0, 2));
        let b = corpus_bleu(&[], &[]);
        assert_eq!(b.score, 0.0);
    }

    #[test]
    fn bleu_checked_rejects_mismatched_lists() {
        let e = corpus_bleu_checked(&[toks("a")], &[]).expect_err("mismatch");
        assert!(e.to_string().contains("expected one reference set per hypothesis (1), found 0"), "{e}");
        let e = corpus_bleu_checked(&[toks("a")], &[vec![]]).expect_err("no reference");
        assert!(e.to_string().contains("at least one reference"), "{e}");
    }

    #[test]
    fn accuracy_counts_equal_positions() {
        assert_eq!(accuracy(&[1, 2, 3, 4], &[1, 2, 0, 4]), 0.75);
        // The missing fourth prediction counts as wrong: 2 right of 4.
        assert_eq!(accuracy(&[1, 2, 0], &[1, 2, 3, 4]), 0.5);
        assert_eq!(accuracy(&[], &[]), 0.0);
    }

    #[test]
    fn confusion_per_class_scores() {
        // gold:  0 0 0 1 1 2
        // pred:  0 0 1 1 2 2
        // counts[gold][pred] = [[2,1,0],[0,1,1],[0,0,1]]
        // class 0: precision 2/2 = 1, recall 2/3, f1 = 2*(1*2/3)/(1+2/3) = 0.8
        // class 1: precision 1/2, recall 1/2, f1 0.5
        // class 2: precision 1/2, recall 1/1, f1 = 2*(0.5)/(1.5) = 2/3
        // accuracy 4/6, macro f1 (0.8 + 0.5 + 2/3)/3 = 0.6555...
        let c = Confusion::from_labels(3, &[0, 0, 1, 1, 2, 2], &[0, 0, 0, 1, 1, 2]).expect("ok");
        assert_eq!(c.counts, vec![vec![2, 1, 0], vec![0, 1, 1], vec![0, 0, 1]]);
        assert!(close(c.precision(0), 1.0));
        assert!(close(c.recall(0), 2.0 / 3.0));
        assert!(close(c.f1(0), 0.8));
        assert!(close(c.precision(1), 0.5));
        assert!(close(c.recall(1), 0.5));
        assert!(close(c.f1(1), 0.5));
        assert!(close(c.precision(2), 0.5));
        assert!(close(c.recall(2), 1.0));
        assert!(close(c.f1(2), 2.0 / 3.0));
        assert!(close(c.accuracy(), 4.0 / 6.0));
        assert!(close(c.macro_f1(), (0.8 + 0.5 + 2.0 / 3.0) / 3.0));
        assert_eq!(c.total(), 6);
    }

    #[test]
    fn confusion_classes_never_predicted_score_0() {
        // Class 1 never predicted and never gold: precision, recall and f1 are 0, not NaN.
        let c = Confusion::from_labels(2, &[0, 0], &[0, 0]).expect("ok");
        assert_eq!((c.precision(1), c.recall(1), c.f1(1)), (0.0, 0.0, 0.0));
        assert_eq!(c.f1(0), 1.0);
    }

    #[test]
    fn confusion_rejects_bad_labels() {
        let e = Confusion::from_labels(2, &[0, 2], &[0, 1]).expect_err("label 2");
        assert!(e.to_string().contains("expected a predicted label below 2, found 2"), "{e}");
        let e = Confusion::from_labels(2, &[0], &[0, 1]).expect_err("lengths");
        assert!(e.to_string().contains("expected as many predictions as gold labels (2), found 1"), "{e}");
    }

    #[test]
    fn confusion_table_render() {
        let c = Confusion::from_labels(3, &[0, 0, 1, 1, 2, 2], &[0, 0, 0, 1, 1, 2]).expect("ok");
        let labels = vec!["neg".to_string(), "neu".to_string(), "pos".to_string()];
        let expected = "\
gold\\pred  neg  neu  pos
neg          2    1    0
neu          0    1    1
pos          0    0    1

class      precision  recall      f1  support
neg           1.0000  0.6667  0.8000        3
neu           0.5000  0.5000  0.5000        2
pos           0.5000  1.0000  0.6667        1
macro f1                      0.6556        6
accuracy                      0.6667        6
";
        assert_eq!(c.render(&labels), expected);
    }
}
