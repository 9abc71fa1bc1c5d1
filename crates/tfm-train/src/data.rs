//! Training data: tokenizers (characters, bytes, pre-tokenized files), the train/validation split,
//! and random context windows drawn exactly as nanoGPT's `get_batch`.
//!
//! # Token files
//! A pre-tokenized corpus is one file, all integers little-endian:
//!
//! | bytes | content |
//! |---|---|
//! | 0..8 | magic `TFMTOKS\0` |
//! | 8..12 | `u32` bytes per token: 2 (`u16` tokens) or 4 (`u32` tokens) |
//! | 12..16 | `u32` vocabulary size (every token is below it) |
//! | 16..24 | `u64` number of tokens `n` |
//! | 24.. | `n` tokens |
//!
//! [`write_token_file`] writes one (choosing `u16` when the vocabulary fits).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{DataConfig, TokenizerKind};
use crate::error::TrainError;
use crate::rng::Rng;

pub const TOKEN_MAGIC: &[u8; 8] = b"TFMTOKS\0";

/// Maps text to token ids and back. Saved with every checkpoint (as JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Tokenizer {
    /// Token `i` is the `i`-th character of `chars` (sorted, distinct).
    Char { chars: String },
    /// Token `i` is byte `i`.
    Byte,
    /// Ids from a token file; no text form.
    Tokens { vocab_size: usize },
    /// A vocabulary with special tokens (`[PAD]`, `[UNK]`, `[BOS]`, `[EOS]`, `[MASK]`), built
    /// from the training split by the example tasks.
    Vocab(crate::vocab::Vocab),
    /// No text at all (image classification).
    None,
}

impl Tokenizer {
    /// The sorted distinct characters of `text` (nanoGPT's `shakespeare_char/prepare.py`).
    pub fn char_from_corpus(text: &str) -> Self {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        Tokenizer::Char {
            chars: chars.into_iter().collect(),
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Char { chars } => chars.chars().count(),
            Tokenizer::Byte => 256,
            Tokenizer::Tokens { vocab_size } => *vocab_size,
            Tokenizer::Vocab(v) => v.len(),
            Tokenizer::None => 0,
        }
    }

    pub fn kind(&self) -> TokenizerKind {
        match self {
            Tokenizer::Char { .. } => TokenizerKind::Char,
            Tokenizer::Byte => TokenizerKind::Byte,
            Tokenizer::Tokens { .. } => TokenizerKind::Tokens,
            Tokenizer::Vocab(v) => match v.level {
                crate::vocab::Level::Word => TokenizerKind::Word,
                crate::vocab::Level::Char => TokenizerKind::Char,
                crate::vocab::Level::Byte => TokenizerKind::Byte,
            },
            Tokenizer::None => TokenizerKind::Tokens,
        }
    }

    /// Encodes text; a character outside the vocabulary is an error naming it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TrainError> {
        match self {
            Tokenizer::Char { chars } => {
                let table: Vec<char> = chars.chars().collect();
                text.chars()
                    .enumerate()
                    .map(|(i, c)| {
                        table.binary_search(&c).map(|x| x as u32).map_err(|_| {
                            TrainError::data_hint(
                                format!("character {c:?} at position {i} is not in the vocabulary"),
                                "the character tokenizer knows only the characters of its training corpus",
                            )
                        })
                    })
                    .collect()
            }
            Tokenizer::Byte => Ok(text.bytes().map(u32::from).collect()),
            Tokenizer::Tokens { .. } => Err(TrainError::data_hint(
                "a token-file vocabulary cannot encode text",
                "pass token ids, or train with `tokenizer: char` or `byte`",
            )),
            Tokenizer::Vocab(v) => Ok(v.encode(text)),
            Tokenizer::None => Err(TrainError::data_hint(
                "this model was trained without a text vocabulary",
                "it takes images, not text",
            )),
        }
    }

    /// Decodes ids; ids outside the vocabulary become `\u{fffd}`, invalid UTF-8 is replaced.
    pub fn decode(&self, ids: &[u32]) -> String {
        match self {
            Tokenizer::Char { chars } => {
                let table: Vec<char> = chars.chars().collect();
                ids.iter()
                    .map(|&i| table.get(i as usize).copied().unwrap_or('\u{fffd}'))
                    .collect()
            }
            Tokenizer::Byte => {
                let bytes: Vec<u8> = ids
                    .iter()
                    .map(|&i| u8::try_from(i).unwrap_or(b'?'))
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            Tokenizer::Tokens { .. } => ids
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(" "),
            Tokenizer::Vocab(v) => v.decode(ids),
            Tokenizer::None => String::new(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(s: &str) -> Result<Self, TrainError> {
        serde_json::from_str(s)
            .map_err(|e| TrainError::data(format!("invalid tokenizer description: {e}")))
    }

    /// Checks that `self` (e.g. from a checkpoint) is the same vocabulary as `other` (the data).
    pub fn check_same(&self, other: &Tokenizer) -> Result<(), TrainError> {
        if self == other {
            return Ok(());
        }
        Err(TrainError::VocabMismatch {
            expected: describe(self),
            found: describe(other),
            hint: "train on the corpus the checkpoint was trained on, or start a fresh run".into(),
        })
    }

    /// Checks that every token fits the model's embedding table.
    pub fn check_model_vocab(&self, model_vocab: usize) -> Result<(), TrainError> {
        if self.vocab_size() <= model_vocab {
            return Ok(());
        }
        Err(TrainError::VocabMismatch {
            expected: format!("at most {model_vocab} tokens (the model's vocabulary)"),
            found: format!("{} ({})", self.vocab_size(), describe(self)),
            hint: format!(
                "set the model's vocabulary to at least {}",
                self.vocab_size()
            ),
        })
    }
}

fn describe(t: &Tokenizer) -> String {
    match t {
        Tokenizer::Char { chars } => format!(
            "a character vocabulary of {} symbols",
            chars.chars().count()
        ),
        Tokenizer::Byte => "the byte vocabulary (256)".into(),
        Tokenizer::Tokens { vocab_size } => format!("a token-file vocabulary of {vocab_size}"),
        Tokenizer::Vocab(v) => format!("a {:?}-level vocabulary of {} tokens", v.level, v.len()).to_lowercase(),
        Tokenizer::None => "no vocabulary (images)".into(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "validation",
        }
    }
}

/// `batch` windows of `context` tokens, row-major: `x[b * context + t]`; `y` is `x` shifted by one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBatch {
    pub batch: usize,
    pub context: usize,
    pub x: Vec<i64>,
    pub y: Vec<i64>,
}

impl TokenBatch {
    pub fn tokens(&self) -> usize {
        self.batch * self.context
    }
}

/// One batch as the loop feeds it to the model, and how many units (tokens, examples) it holds.
#[derive(Clone, Debug)]
pub struct Drawn {
    pub batch: tfm_runtime::Batch,
    pub units: usize,
}

/// Anything the training loop can draw batches from.
pub trait DataSource {
    fn tokenizer(&self) -> &Tokenizer;
    /// The window length this source needs, overriding `context` (fixed-length tasks).
    fn fixed_context(&self) -> Option<usize> {
        None
    }
    /// Checks that windows of `context` tokens fit in both splits (validation only if `val`).
    fn check_context(&self, context: usize, val: bool) -> Result<(), TrainError>;
    /// Token windows for language modelling (`x` and `y` shifted by one).
    fn sample(
        &self,
        split: Split,
        batch: usize,
        context: usize,
        rng: &mut Rng,
    ) -> Result<TokenBatch, TrainError> {
        let _ = (split, batch, context, rng);
        Err(TrainError::data(
            "this data source yields examples, not token windows",
        ))
    }
    /// A batch for the model: by default the token windows of [`DataSource::sample`] as the
    /// model's single input with next-token targets.
    fn draw(
        &self,
        split: Split,
        batch: usize,
        context: usize,
        rng: &mut Rng,
    ) -> Result<Drawn, TrainError> {
        let b = self.sample(split, batch, context, rng)?;
        Ok(Drawn {
            units: b.tokens(),
            batch: crate::runtime::to_batch(&b),
        })
    }
    /// What [`Drawn::units`] counts, for throughput ("tokens", "images", "examples").
    fn unit(&self) -> &'static str {
        "tokens"
    }
    /// Class names by label id (classification tasks; saved with checkpoints).
    fn classes(&self) -> &[String] {
        &[]
    }
}

/// A tokenized corpus split into training and validation tokens.
#[derive(Clone, Debug)]
pub struct TextData {
    pub tokenizer: Tokenizer,
    pub train: Vec<u32>,
    pub val: Vec<u32>,
}

impl TextData {
    /// Splits tokens: the first `1 - val_fraction` for training, the rest for validation
    /// (nanoGPT: `int(n * 0.9)`).
    pub fn from_tokens(
        tokenizer: Tokenizer,
        tokens: Vec<u32>,
        val_fraction: f64,
    ) -> Result<Self, TrainError> {
        if tokens.is_empty() {
            return Err(TrainError::data_hint(
                "the corpus is empty",
                "point `data.path` at a non-empty file",
            ));
        }
        let vocab = tokenizer.vocab_size();
        if let Some((i, t)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &t)| t as usize >= vocab)
        {
            return Err(TrainError::VocabMismatch {
                expected: format!("tokens below {vocab}"),
                found: format!("token {t} at position {i}"),
                hint: "the vocabulary size in the token file header is too small".into(),
            });
        }
        let cut = (tokens.len() as f64 * (1.0 - val_fraction)) as usize;
        let mut train = tokens;
        let val = train.split_off(cut.min(train.len()));
        Ok(TextData {
            tokenizer,
            train,
            val,
        })
    }

    /// Tokenizes text with a tokenizer of the given kind (a char vocabulary is built from the
    /// whole text).
    pub fn from_text(
        text: &str,
        kind: TokenizerKind,
        val_fraction: f64,
    ) -> Result<Self, TrainError> {
        if text.is_empty() {
            return Err(TrainError::data_hint(
                "the corpus is empty",
                "point `data.path` at a non-empty file",
            ));
        }
        let tokenizer = match kind {
            TokenizerKind::Char => Tokenizer::char_from_corpus(text),
            TokenizerKind::Byte => Tokenizer::Byte,
            TokenizerKind::Tokens => {
                return Err(TrainError::data_hint(
                    "expected a token file for `tokenizer: tokens`, found text",
                    "use `tokenizer: char` or `byte` for text",
                ))
            }
            TokenizerKind::Word => {
                return Err(TrainError::data_hint(
                    "a language-modelling corpus takes `tokenizer: char` or `byte`, found `word`",
                    "word vocabularies are built by the `translate` and `image_text` tasks",
                ))
            }
        };
        let tokens = tokenizer.encode(text)?;
        Self::from_tokens(tokenizer, tokens, val_fraction)
    }

    /// Loads `cfg.path` with `kind`. Errors name the path.
    pub fn load(cfg: &DataConfig, kind: TokenizerKind) -> Result<Self, TrainError> {
        let Some(path) = &cfg.path else {
            return Err(TrainError::data_hint(
                "no data path given",
                "set `data.path`",
            ));
        };
        let with_path = |e: TrainError| match e {
            TrainError::Data { message, hint } => TrainError::Data {
                message: format!("{}: {message}", path.display()),
                hint,
            },
            other => other,
        };
        match kind {
            TokenizerKind::Tokens => {
                let (tokens, vocab) = read_token_file(path)?;
                Self::from_tokens(
                    Tokenizer::Tokens { vocab_size: vocab },
                    tokens,
                    cfg.val_fraction,
                )
                .map_err(with_path)
            }
            TokenizerKind::Byte => {
                let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, "read", e))?;
                if bytes.is_empty() {
                    return Err(with_path(TrainError::data_hint(
                        "the corpus is empty",
                        "point `data.path` at a non-empty file",
                    )));
                }
                Self::from_tokens(
                    Tokenizer::Byte,
                    bytes.into_iter().map(u32::from).collect(),
                    cfg.val_fraction,
                )
                .map_err(with_path)
            }
            TokenizerKind::Char | TokenizerKind::Word => {
                let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, "read", e))?;
                let text = String::from_utf8(bytes).map_err(|e| {
                    TrainError::data_hint(
                        format!(
                            "{}: expected UTF-8 text, found an invalid byte at offset {}",
                            path.display(),
                            e.utf8_error().valid_up_to()
                        ),
                        "use `tokenizer: byte` for binary or non-UTF-8 files",
                    )
                })?;
                Self::from_text(&text, kind, cfg.val_fraction).map_err(with_path)
            }
        }
    }

    pub fn split(&self, split: Split) -> &[u32] {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
        }
    }
}

impl DataSource for TextData {
    fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn check_context(&self, context: usize, val: bool) -> Result<(), TrainError> {
        let splits: &[Split] = if val {
            &[Split::Train, Split::Val]
        } else {
            &[Split::Train]
        };
        for &s in splits {
            let n = self.split(s).len();
            if n <= context {
                return Err(TrainError::data_hint(
                    format!(
                        "context of {context} tokens is longer than the {} split ({n} tokens); a window needs {} tokens",
                        s.name(),
                        context + 1
                    ),
                    match s {
                        Split::Train => "lower `context` or use a longer corpus".to_string(),
                        Split::Val => "lower `context`, raise `data.val_fraction`, or use a longer corpus".to_string(),
                    },
                ));
            }
        }
        Ok(())
    }

    /// nanoGPT's `get_batch`: `i ~ U[0, n - T)`, `x = data[i..i+T]`, `y = data[i+1..i+T+1]`, one
    /// draw per row in order.
    fn sample(
        &self,
        split: Split,
        batch: usize,
        context: usize,
        rng: &mut Rng,
    ) -> Result<TokenBatch, TrainError> {
        let data = self.split(split);
        if data.len() <= context {
            self.check_context(context, split == Split::Val)?;
        }
        let span = (data.len() - context) as u64;
        let mut x = Vec::with_capacity(batch * context);
        let mut y = Vec::with_capacity(batch * context);
        for _ in 0..batch {
            let i = rng.below(span) as usize;
            x.extend(data[i..i + context].iter().map(|&t| t as i64));
            y.extend(data[i + 1..i + context + 1].iter().map(|&t| t as i64));
        }
        Ok(TokenBatch {
            batch,
            context,
            x,
            y,
        })
    }
}

/// Reads a token file (format in the module docs): the tokens and the vocabulary size.
pub fn read_token_file(path: &Path) -> Result<(Vec<u32>, usize), TrainError> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, "read", e))?;
    let bad = |m: String, h: &str| TrainError::data_hint(format!("{}: {m}", path.display()), h);
    if bytes.len() < 24 {
        return Err(bad(
            format!(
                "expected a token file header of 24 bytes, found {} bytes",
                bytes.len()
            ),
            "write token files with `write_token_file`; text needs `tokenizer: char` or `byte`",
        ));
    }
    if &bytes[0..8] != TOKEN_MAGIC {
        return Err(bad(
            "expected the token file magic `TFMTOKS`, found other bytes".into(),
            "this is not a token file; for text use `tokenizer: char` or `byte`",
        ));
    }
    let u32_at =
        |o: usize| u32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    let width = u32_at(8) as usize;
    let vocab = u32_at(12) as usize;
    let mut n8 = [0u8; 8];
    n8.copy_from_slice(&bytes[16..24]);
    let n = u64::from_le_bytes(n8) as usize;
    if width != 2 && width != 4 {
        return Err(bad(
            format!("expected 2 or 4 bytes per token, found {width}"),
            "the header is corrupt",
        ));
    }
    let body = &bytes[24..];
    if Some(body.len()) != n.checked_mul(width) {
        return Err(bad(
            format!(
                "expected {n} tokens ({} bytes), found {} bytes",
                n.saturating_mul(width),
                body.len()
            ),
            "the file is truncated or its header is wrong",
        ));
    }
    if n == 0 {
        return Err(bad(
            "the token file holds no tokens".into(),
            "point `data.path` at a non-empty file",
        ));
    }
    let tokens: Vec<u32> = if width == 2 {
        body.chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
            .collect()
    } else {
        body.chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    Ok((tokens, vocab))
}

/// Writes a token file: `u16` tokens when `vocab_size <= 65536`, else `u32`.
pub fn write_token_file(path: &Path, tokens: &[u32], vocab_size: usize) -> Result<(), TrainError> {
    if let Some(t) = tokens.iter().find(|&&t| t as usize >= vocab_size) {
        return Err(TrainError::data(format!(
            "expected tokens below {vocab_size}, found {t}"
        )));
    }
    let vocab32 = u32::try_from(vocab_size).map_err(|_| {
        TrainError::data(format!(
            "expected a vocabulary below 2^32, found {vocab_size}"
        ))
    })?;
    let width: u32 = if vocab_size <= 1 << 16 { 2 } else { 4 };
    let mut out = Vec::with_capacity(24 + tokens.len() * width as usize);
    out.extend_from_slice(TOKEN_MAGIC);
    out.extend_from_slice(&width.to_le_bytes());
    out.extend_from_slice(&vocab32.to_le_bytes());
    out.extend_from_slice(&(tokens.len() as u64).to_le_bytes());
    for &t in tokens {
        if width == 2 {
            out.extend_from_slice(&(t as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&t.to_le_bytes());
        }
    }
    std::fs::write(path, out).map_err(|e| TrainError::io(path, "written", e))
}

/// The data a run configuration names: a corpus or a task.
#[derive(Clone, Debug)]
pub enum Dataset {
    Text(TextData),
    Addition(crate::addition::AdditionTask),
    Task(Box<crate::tasks::TaskData>),
}

impl Dataset {
    /// Loads `config.data`: the file at `data.path` with the configured tokenizer, or the task.
    pub fn load(config: &crate::config::RunConfig) -> Result<Self, TrainError> {
        match config.data.task {
            Some(crate::config::TaskKind::Addition) => {
                Ok(Dataset::Addition(crate::addition::AdditionTask::new(
                    config.data.digits,
                    config.data.test_examples,
                    config.seed,
                )?))
            }
            Some(_) => Ok(Dataset::Task(Box::new(crate::tasks::TaskData::load(config)?))),
            None => Ok(Dataset::Text(TextData::load(
                &config.data,
                config.tokenizer_kind(),
            )?)),
        }
    }

    /// Binds a task's tensors to the model's inputs (a corpus feeds the single token input).
    pub fn bind(&mut self, model: &tfm_ir::Model) -> Result<(), TrainError> {
        match self {
            Dataset::Task(t) => t.bind(model),
            _ => Ok(()),
        }
    }

    pub fn task(&self) -> Option<&crate::tasks::TaskData> {
        match self {
            Dataset::Task(t) => Some(t),
            _ => None,
        }
    }

    fn inner(&self) -> &dyn DataSource {
        match self {
            Dataset::Text(t) => t,
            Dataset::Addition(a) => a,
            Dataset::Task(t) => t.as_ref(),
        }
    }
}

impl DataSource for Dataset {
    fn tokenizer(&self) -> &Tokenizer {
        self.inner().tokenizer()
    }
    fn fixed_context(&self) -> Option<usize> {
        self.inner().fixed_context()
    }
    fn check_context(&self, context: usize, val: bool) -> Result<(), TrainError> {
        self.inner().check_context(context, val)
    }
    fn sample(
        &self,
        split: Split,
        batch: usize,
        context: usize,
        rng: &mut Rng,
    ) -> Result<TokenBatch, TrainError> {
        self.inner().sample(split, batch, context, rng)
    }
    fn draw(
        &self,
        split: Split,
        batch: usize,
        context: usize,
        rng: &mut Rng,
    ) -> Result<Drawn, TrainError> {
        self.inner().draw(split, batch, context, rng)
    }
    fn unit(&self) -> &'static str {
        self.inner().unit()
    }
    fn classes(&self) -> &[String] {
        self.inner().classes()
    }
}
