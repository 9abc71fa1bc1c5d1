//! The built-in addition task: `a + b` with operands of up to `digits` digits, as fixed-length
//! character sequences, with a held-out test split and an exact-match evaluator.
//!
//! # Format
//! Operands are zero-padded to `digits`; the sum is zero-padded to `digits + 1` and written
//! **reversed** (least significant digit first, so each answer digit depends only on digits
//! already seen, which makes the task much easier to learn); a newline ends the example. With
//! `digits = 4`, `123 + 4567 = 4690` is
//!
//! ```text
//! 0123+4567=09640\n
//! ```
//!
//! Every example is `3 * digits + 4` characters; the vocabulary is `\n+0123456789=` (13 tokens,
//! sorted as the character tokenizer sorts). Training windows are whole examples: `x` is the
//! example without its last character and `y` without its first, so the context is
//! `3 * digits + 3`. Targets inside the prompt are `-100` (ignored by the loss) unless
//! `mask_prompt` is turned off: the operands are random and cannot be predicted.
//!
//! The test split is `test_examples` distinct problems drawn from the run seed; training never
//! draws a test problem, and validation loss is measured on test problems.

use std::collections::HashSet;

use crate::data::{DataSource, Split, TokenBatch, Tokenizer};
use crate::error::TrainError;
use crate::rng::{derive_seed, Rng};

pub const ALPHABET: &str = "\n+0123456789=";

#[derive(Clone, Debug)]
pub struct AdditionTask {
    pub digits: usize,
    pub tokenizer: Tokenizer,
    /// Held-out problems `(a, b)`, in draw order.
    pub test: Vec<(u64, u64)>,
    test_set: HashSet<(u64, u64)>,
    /// Targets inside the prompt (the operands) are `-100`, which the loss ignores, so only the
    /// answer and the newline are scored. On by default.
    pub mask_prompt: bool,
}

/// The label the runtime's losses skip.
pub const IGNORE: i64 = -100;

/// The result of an exact-match evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct ExactMatch {
    pub correct: usize,
    pub total: usize,
}

impl ExactMatch {
    pub fn accuracy(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.correct as f64 / self.total as f64
        }
    }
}

impl AdditionTask {
    /// A task with `digits`-digit operands (1 to 18) and `test_examples` held-out problems (at
    /// most half of all problems).
    pub fn new(digits: usize, test_examples: usize, seed: u64) -> Result<Self, TrainError> {
        if !(1..=18).contains(&digits) {
            return Err(TrainError::data_hint(
                format!("expected 1 to 18 digits for the addition task, found {digits}"),
                "set `data.digits` between 1 and 18",
            ));
        }
        let total = 10u128.pow(2 * digits as u32);
        let limit = (total / 2).min(usize::MAX as u128) as usize;
        if test_examples > limit {
            return Err(TrainError::data_hint(
                format!("expected at most {limit} test problems for {digits}-digit addition, found {test_examples}"),
                "lower `data.test_examples` or raise `data.digits`",
            ));
        }
        let mut rng = Rng::new(derive_seed(seed, &[0xADD, 0x7E57]));
        let mut test = Vec::with_capacity(test_examples);
        let mut test_set = HashSet::with_capacity(test_examples);
        while test.len() < test_examples {
            let p = draw(&mut rng, digits);
            if test_set.insert(p) {
                test.push(p);
            }
        }
        Ok(AdditionTask {
            digits,
            tokenizer: Tokenizer::char_from_corpus(ALPHABET),
            test,
            test_set,
            mask_prompt: true,
        })
    }

    /// Characters per example.
    pub fn example_len(&self) -> usize {
        3 * self.digits + 4
    }

    /// Characters of the prompt `a+b=`.
    pub fn prompt_len(&self) -> usize {
        2 * self.digits + 2
    }

    /// The example text for `a + b`.
    pub fn example(&self, a: u64, b: u64) -> String {
        format!("{}{}\n", self.prompt(a, b), self.answer(a, b))
    }

    /// `a+b=` with zero-padded operands.
    pub fn prompt(&self, a: u64, b: u64) -> String {
        let d = self.digits;
        format!("{a:0d$}+{b:0d$}=")
    }

    /// The reversed, zero-padded sum (`digits + 1` characters).
    pub fn answer(&self, a: u64, b: u64) -> String {
        let w = self.digits + 1;
        format!("{:0w$}", a as u128 + b as u128)
            .chars()
            .rev()
            .collect()
    }

    pub fn is_test(&self, a: u64, b: u64) -> bool {
        self.test_set.contains(&(a, b))
    }

    /// A training problem: random, never one of the test problems.
    pub fn draw_train(&self, rng: &mut Rng) -> (u64, u64) {
        loop {
            let p = draw(rng, self.digits);
            if !self.test_set.contains(&p) {
                return p;
            }
        }
    }

    fn encode(&self, s: &str) -> Vec<u32> {
        // The alphabet covers every character an example uses.
        self.tokenizer.encode(s).unwrap_or_default()
    }

    /// Exact match over the test problems. `generate` receives a batch of prompts (token ids, all
    /// `prompt_len()` long) and returns, per prompt, the tokens that follow it; a problem counts as
    /// solved when the first `digits + 1` generated tokens spell the reversed sum. Problems are
    /// batched `batch` at a time; `limit` caps how many test problems are used.
    pub fn evaluate<E>(
        &self,
        batch: usize,
        limit: Option<usize>,
        mut generate: impl FnMut(&[Vec<u32>]) -> Result<Vec<Vec<u32>>, E>,
    ) -> Result<ExactMatch, E> {
        let n = limit.unwrap_or(self.test.len()).min(self.test.len());
        let mut correct = 0;
        for chunk in self.test[..n].chunks(batch.max(1)) {
            let prompts: Vec<Vec<u32>> = chunk
                .iter()
                .map(|&(a, b)| self.encode(&self.prompt(a, b)))
                .collect();
            let outs = generate(&prompts)?;
            for (&(a, b), out) in chunk.iter().zip(outs.iter()) {
                let want = self.encode(&self.answer(a, b));
                if out.len() >= want.len() && out[..want.len()] == want[..] {
                    correct += 1;
                }
            }
        }
        Ok(ExactMatch { correct, total: n })
    }
}

/// Operand lengths uniform in `1..=digits`, then the value uniform among numbers of that length,
/// so short and long operands are equally common.
fn draw(rng: &mut Rng, digits: usize) -> (u64, u64) {
    let mut one = || {
        let len = 1 + rng.below(digits as u64) as u32;
        let lo = if len == 1 { 0 } else { 10u64.pow(len - 1) };
        let hi = 10u64.pow(len);
        lo + rng.below(hi - lo)
    };
    let a = one();
    let b = one();
    (a, b)
}

impl DataSource for AdditionTask {
    fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn fixed_context(&self) -> Option<usize> {
        Some(self.example_len() - 1)
    }

    fn check_context(&self, context: usize, val: bool) -> Result<(), TrainError> {
        if context != self.example_len() - 1 {
            return Err(TrainError::data_hint(
                format!(
                    "expected a context of {} for {}-digit addition, found {context}",
                    self.example_len() - 1,
                    self.digits
                ),
                "the addition task sets its own context; leave `context` unset or match it",
            ));
        }
        if val && self.test.is_empty() {
            return Err(TrainError::data_hint(
                "the addition task has no test problems to validate on",
                "set `data.test_examples` above 0",
            ));
        }
        Ok(())
    }

    /// One example per row: training rows are fresh problems, validation rows are drawn from the
    /// test problems.
    fn sample(
        &self,
        split: Split,
        batch: usize,
        context: usize,
        rng: &mut Rng,
    ) -> Result<TokenBatch, TrainError> {
        self.check_context(context, split == Split::Val)?;
        let mut x = Vec::with_capacity(batch * context);
        let mut y = Vec::with_capacity(batch * context);
        for _ in 0..batch {
            let (a, b) = match split {
                Split::Train => self.draw_train(rng),
                Split::Val => self.test[rng.below(self.test.len() as u64) as usize],
            };
            let ids = self.encode(&self.example(a, b));
            x.extend(ids[..context].iter().map(|&t| t as i64));
            let first_scored = if self.mask_prompt {
                self.prompt_len() - 1
            } else {
                0
            };
            y.extend(ids[1..=context].iter().enumerate().map(|(t, &id)| {
                if t < first_scored {
                    IGNORE
                } else {
                    id as i64
                }
            }));
        }
        Ok(TokenBatch {
            batch,
            context,
            x,
            y,
        })
    }
}
