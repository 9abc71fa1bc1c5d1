//! The example tasks beyond language modelling: text classification, masked-token prediction,
//! translation, image classification and image-text pairs. Each loads its dataset, builds its
//! vocabulary from the training split, holds out its test split, binds its tensors to the
//! model's inputs by name, and draws batches for the training loop.
//!
//! # Binding
//! A task offers tensors under fixed roles; a model input receives the role its name names:
//!
//! | role | input names | tasks |
//! |---|---|---|
//! | tokens | `tokens`, `input_ids`, `ids`, `text`, `x` | classify, masked_lm, image_text |
//! | segments | `segments`, `token_types`, `segment_ids` (all zeros) | classify, masked_lm |
//! | labels | `labels`, `label`, `y` | classify, image_classify |
//! | src / tgt | `src`, `source` / `tgt`, `target`, `decoder_input` | translate |
//! | images | `images`, `image`, `pixels` | image_classify, image_text |
//!
//! Targets: `classify` and `image_classify` give the labels, `masked_lm` the original tokens at
//! masked positions (`-100` elsewhere), `translate` the target sentence shifted left (`-100` at
//! padding); `image_text` pairs row `i` with row `i` and needs none.

use std::path::PathBuf;

use tfm_ir::{DType, Model};
use tfm_runtime::{Batch, HostTensor};

use crate::config::{RunConfig, TaskKind, TokenizerKind};
use crate::data::{DataSource, Drawn, Split, Tokenizer};
use crate::error::TrainError;
use crate::loaders::{self, Images};
use crate::rng::{derive_seed, Rng};
use crate::vocab::{self, Level, Vocab};

/// MNIST's pixel mean and standard deviation (of x / 255 over the training set).
pub const MNIST_MEAN: f32 = 0.1307;
pub const MNIST_STD: f32 = 0.3081;

/// One labelled token sequence (classification).
#[derive(Clone, Debug)]
pub struct Labelled {
    pub ids: Vec<u32>,
    pub label: usize,
}

/// One translation pair, both sides tokenized (no BOS/EOS).
#[derive(Clone, Debug)]
pub struct Pair {
    pub src: Vec<u32>,
    pub tgt: Vec<u32>,
}

/// A held-out source sentence with every reference translation (for BLEU).
#[derive(Clone, Debug)]
pub struct TestSentence {
    pub source: String,
    pub ids: Vec<u32>,
    pub references: Vec<String>,
}

/// Images and their labels.
#[derive(Clone, Debug)]
pub struct ImageSet {
    pub images: Images,
    pub labels: Vec<u8>,
}

#[derive(Clone, Debug)]
pub enum TaskBody {
    Classify { train: Vec<Labelled>, test: Vec<Labelled> },
    MaskedLm { train: Vec<u32>, val: Vec<u32>, mask_prob: f64 },
    Translate { train: Vec<Pair>, test: Vec<Pair>, test_sentences: Vec<TestSentence> },
    Images { train: ImageSet, test: ImageSet },
    ImageText { train: ImageSet, test: ImageSet },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Tokens,
    Segments,
    Labels,
    Src,
    Tgt,
    Images,
}

impl Role {
    fn of(name: &str) -> Option<Role> {
        Some(match name {
            "tokens" | "input_ids" | "ids" | "text" | "x" => Role::Tokens,
            "segments" | "token_types" | "segment_ids" => Role::Segments,
            "labels" | "label" | "y" => Role::Labels,
            "src" | "source" => Role::Src,
            "tgt" | "target" | "decoder_input" => Role::Tgt,
            "images" | "image" | "pixels" => Role::Images,
            _ => return None,
        })
    }
    fn name(self) -> &'static str {
        match self {
            Role::Tokens => "tokens",
            Role::Segments => "segments",
            Role::Labels => "labels",
            Role::Src => "src",
            Role::Tgt => "tgt",
            Role::Images => "images",
        }
    }
}

/// A loaded task: data, vocabulary, class names and the binding to a model's inputs.
#[derive(Clone, Debug)]
pub struct TaskData {
    pub kind: TaskKind,
    pub path: PathBuf,
    pub tokenizer: Tokenizer,
    /// Class names by label id (`classify`: sorted distinct labels; images: the digits).
    pub classes: Vec<String>,
    pub body: TaskBody,
    ports: Vec<Role>,
    /// Caption length for `image_text` (words + EOS, padded with EOS).
    caption_len: usize,
}

fn vocab_level(config: &RunConfig, default: Level) -> Result<Level, TrainError> {
    Ok(match config.data.tokenizer {
        None => default,
        Some(TokenizerKind::Char) => Level::Char,
        Some(TokenizerKind::Word) => Level::Word,
        Some(TokenizerKind::Byte) => Level::Byte,
        Some(TokenizerKind::Tokens) => {
            return Err(TrainError::data_hint(
                format!("the `{}` task reads text, found `tokenizer: tokens`", config.data.task.map_or("", |t| t.name())),
                "use `tokenizer: char`, `byte` or `word`",
            ))
        }
    })
}

/// The vocabulary: a fixed byte vocabulary, or one built from the training texts.
fn make_vocab<'a>(config: &RunConfig, level: Level, texts: impl Iterator<Item = &'a str>) -> Vocab {
    match level {
        Level::Byte => Vocab::bytes(),
        _ => Vocab::build(texts, level, config.data.lowercase, config.data.min_count, config.data.max_vocab),
    }
}

fn limit<T>(mut v: Vec<T>, n: Option<usize>) -> Vec<T> {
    if let Some(n) = n {
        v.truncate(n);
    }
    v
}

impl TaskData {
    /// Loads the task `config.data.task` from `config.data.path`.
    pub fn load(config: &RunConfig) -> Result<Self, TrainError> {
        let kind = config.data.task.ok_or_else(|| TrainError::data("no task given"))?;
        let path = config
            .data
            .path
            .clone()
            .ok_or_else(|| TrainError::data_hint(format!("the `{}` task needs `data.path`", kind.name()), "set `data.path`"))?;
        let seed = derive_seed(config.seed, &[11]);
        let mut classes = Vec::new();
        let mut caption_len = 0;
        let (tokenizer, body) = match kind {
            TaskKind::Addition => return Err(TrainError::data("the addition task is not loaded from a file")),
            TaskKind::Classify => {
                let rows = limit(loaders::read_tsv_labeled(&path)?, config.data.limit);
                if rows.is_empty() {
                    return Err(TrainError::data_at(&path, 0, "no examples", "expected `label<TAB>text` lines"));
                }
                classes = rows.iter().map(|(l, _)| l.clone()).collect();
                classes.sort();
                classes.dedup();
                let labels: Vec<usize> = rows.iter().map(|(l, _)| classes.binary_search(l).unwrap_or(0)).collect();
                let (train_idx, test_idx) = loaders::stratified_split(&labels, config.data.test_fraction.unwrap_or(0.2), seed);
                let level = vocab_level(config, Level::Char)?;
                let v = make_vocab(config, level, train_idx.iter().map(|&i| rows[i].1.as_str()));
                let enc = |idx: &[usize]| -> Vec<Labelled> {
                    idx.iter().map(|&i| Labelled { ids: v.encode(&rows[i].1), label: labels[i] }).collect()
                };
                let body = TaskBody::Classify { train: enc(&train_idx), test: enc(&test_idx) };
                (Tokenizer::Vocab(v), body)
            }
            TaskKind::MaskedLm => {
                let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, "read", e))?;
                if text.is_empty() {
                    return Err(TrainError::data_hint(format!("{}: the corpus is empty", path.display()), "point `data.path` at a non-empty file"));
                }
                let level = vocab_level(config, Level::Byte)?;
                let n_val = ((text.len() as f64) * config.data.val_fraction) as usize;
                let mut cut = text.len() - n_val;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                let v = make_vocab(config, level, std::iter::once(&text[..cut]));
                let train = v.encode(&text[..cut]);
                let val = v.encode(&text[cut..]);
                (Tokenizer::Vocab(v), TaskBody::MaskedLm { train, val, mask_prob: config.data.mask_prob })
            }
            TaskKind::Translate => {
                let pairs = limit(loaders::read_tsv_pairs(&path)?, config.data.limit);
                if pairs.is_empty() {
                    return Err(TrainError::data_at(&path, 0, "no sentence pairs", "expected `source<TAB>target` lines"));
                }
                let keys: Vec<&str> = pairs.iter().map(|(s, _)| s.as_str()).collect();
                let (train_idx, test_idx) = loaders::holdout_by_key(&keys, config.data.test_fraction.unwrap_or(0.05), seed);
                let level = vocab_level(config, Level::Word)?;
                let texts = train_idx.iter().flat_map(|&i| [pairs[i].0.as_str(), pairs[i].1.as_str()]);
                let v = make_vocab(config, level, texts);
                let enc = |idx: &[usize]| -> Vec<Pair> {
                    idx.iter().map(|&i| Pair { src: v.encode(&pairs[i].0), tgt: v.encode(&pairs[i].1) }).collect()
                };
                let train = enc(&train_idx);
                let test = enc(&test_idx);
                // Every reference of each held-out source sentence, in first-seen order.
                let mut test_sentences: Vec<TestSentence> = Vec::new();
                let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
                for &i in &test_idx {
                    let (s, t) = &pairs[i];
                    match seen.get(s.as_str()) {
                        Some(&k) => test_sentences[k].references.push(t.clone()),
                        None => {
                            seen.insert(s.as_str(), test_sentences.len());
                            test_sentences.push(TestSentence { source: s.clone(), ids: v.encode(s), references: vec![t.clone()] });
                        }
                    }
                }
                (Tokenizer::Vocab(v), TaskBody::Translate { train, test, test_sentences })
            }
            TaskKind::ImageClassify | TaskKind::ImageText => {
                let (ti, tl) = loaders::read_mnist(&path, "train")?;
                let (vi, vl) = loaders::read_mnist(&path, "test")?;
                let cut = |images: Images, labels: Vec<u8>| -> ImageSet {
                    match config.data.limit {
                        Some(n) if n < images.n => {
                            let per = images.rows * images.cols;
                            ImageSet {
                                images: Images { n, rows: images.rows, cols: images.cols, pixels: images.pixels[..n * per].to_vec() },
                                labels: labels[..n].to_vec(),
                            }
                        }
                        _ => ImageSet { images, labels },
                    }
                };
                let train = cut(ti, tl);
                let test = cut(vi, vl);
                classes = (0..10).map(|d| d.to_string()).collect();
                if kind == TaskKind::ImageClassify {
                    (Tokenizer::None, TaskBody::Images { train, test })
                } else {
                    let mut texts: Vec<String> = Vec::new();
                    for d in 0..10u8 {
                        for k in 0..loaders::CAPTION_VARIANTS {
                            texts.push(loaders::digit_captions(d, k));
                        }
                        texts.push(loaders::zero_shot_caption(d));
                    }
                    let level = vocab_level(config, Level::Word)?;
                    let v = make_vocab(config, level, texts.iter().map(|s| s.as_str()));
                    caption_len = texts.iter().map(|t| v.encode(t).len() + 1).max().unwrap_or(1);
                    (Tokenizer::Vocab(v), TaskBody::ImageText { train, test })
                }
            }
        };
        Ok(TaskData { kind, path, tokenizer, classes, body, ports: Vec::new(), caption_len })
    }

    /// A task without data, for inference from a checkpoint's tokenizer and classes (`tfm
    /// predict`, `tfm generate`); bind it to the model before use.
    pub fn for_inference(kind: TaskKind, tokenizer: Tokenizer, classes: Vec<String>) -> Result<Self, TrainError> {
        let empty = || ImageSet { images: Images { n: 0, rows: 28, cols: 28, pixels: Vec::new() }, labels: Vec::new() };
        let body = match kind {
            TaskKind::Classify => TaskBody::Classify { train: Vec::new(), test: Vec::new() },
            TaskKind::MaskedLm => TaskBody::MaskedLm { train: Vec::new(), val: Vec::new(), mask_prob: 0.15 },
            TaskKind::Translate => TaskBody::Translate { train: Vec::new(), test: Vec::new(), test_sentences: Vec::new() },
            TaskKind::ImageClassify => TaskBody::Images { train: empty(), test: empty() },
            TaskKind::ImageText => TaskBody::ImageText { train: empty(), test: empty() },
            TaskKind::Addition => return Err(TrainError::data("the addition task has its own generator")),
        };
        Ok(TaskData { kind, path: PathBuf::new(), tokenizer, classes, body, ports: Vec::new(), caption_len: 0 })
    }

    /// The roles this task offers.
    fn offers(&self) -> &'static [Role] {
        match self.body {
            TaskBody::Classify { .. } => &[Role::Tokens, Role::Segments, Role::Labels],
            TaskBody::MaskedLm { .. } => &[Role::Tokens, Role::Segments],
            TaskBody::Translate { .. } => &[Role::Src, Role::Tgt],
            TaskBody::Images { .. } => &[Role::Images, Role::Labels],
            TaskBody::ImageText { .. } => &[Role::Images, Role::Tokens],
        }
    }

    /// Binds the task's tensors to `model`'s inputs by name and checks what the data must fit:
    /// the image input's channels and size, and the classifier's number of classes.
    pub fn bind(&mut self, model: &Model) -> Result<(), TrainError> {
        let offers = self.offers();
        let mut ports = Vec::new();
        for p in &model.inputs {
            let value = &model.graph.values[p.value];
            let role = Role::of(&p.name).filter(|r| offers.contains(r)).ok_or_else(|| {
                let names: Vec<String> = offers.iter().map(|r| format!("`{}`", r.name())).collect();
                TrainError::SpecMismatch {
                    span: value.span,
                    message: format!("the `{}` task has no tensor for the model input `{}`", self.kind.name(), p.name),
                    label: "this input".into(),
                    hint: Some(format!("the task provides {}; name the input after one of them", names.join(", "))),
                }
            })?;
            let want = if role == Role::Images { DType::F32 } else { DType::I64 };
            if value.ty.dtype != want {
                return Err(TrainError::SpecMismatch {
                    span: value.span,
                    message: format!("expected the input `{}` to be {}, found {}", p.name, want.name(), value.ty.dtype.name()),
                    label: "declared here".into(),
                    hint: Some(format!("the `{}` task feeds {} {}", self.kind.name(), want.name(), role.name())),
                });
            }
            if role == Role::Images {
                let dims: Vec<Option<i64>> = value.ty.shape.iter().map(|d| d.as_const()).collect();
                let (rows, cols) = match &self.body {
                    TaskBody::Images { train, .. } | TaskBody::ImageText { train, .. } => (train.images.rows, train.images.cols),
                    _ => (0, 0),
                };
                let fits = dims.len() == 4 && dims[1] == Some(1) && dims[2] == Some(rows as i64) && dims[3] == Some(cols as i64);
                if !fits {
                    return Err(TrainError::SpecMismatch {
                        span: value.span,
                        message: format!(
                            "the model's input `{}` is {}, but {} holds 1 x {rows} x {cols} images",
                            p.name,
                            value.ty,
                            self.path.display()
                        ),
                        label: format!("expects {}", value.ty),
                        hint: Some(format!("declare it as f32[B, 1, {rows}, {cols}] (e.g. `--set channels=1 --set image={rows}`) with a patch size that divides {rows}")),
                    });
                }
            }
            ports.push(role);
        }
        // The classifier must have an output for every class.
        if matches!(self.body, TaskBody::Classify { .. } | TaskBody::Images { .. }) {
            if let Some(obj) = &model.objective {
                if let Some(&logits) = obj.args.first() {
                    let v = &model.graph.values[logits];
                    if let Some(n) = v.ty.shape.last().and_then(|d| d.as_const()) {
                        if (n as usize) < self.classes.len() {
                            return Err(TrainError::SpecMismatch {
                                span: v.span,
                                message: format!(
                                    "expected a classifier with at least {} outputs, one per class of the data ({}), found {n}; a label would be outside its range",
                                    self.classes.len(),
                                    self.classes.join(", ")
                                ),
                                label: format!("{n} classes"),
                                hint: Some(format!("give the classifier {k} outputs (e.g. `--set classes={k}`)", k = self.classes.len())),
                            });
                        }
                    }
                }
            }
        }
        self.ports = ports;
        Ok(())
    }

    pub fn vocab(&self) -> Option<&Vocab> {
        match &self.tokenizer {
            Tokenizer::Vocab(v) => Some(v),
            _ => None,
        }
    }

    /// Number of examples in a split (windows are not counted for `masked_lm`).
    pub fn len(&self, split: Split) -> usize {
        let pick = |a: usize, b: usize| if split == Split::Train { a } else { b };
        match &self.body {
            TaskBody::Classify { train, test } => pick(train.len(), test.len()),
            TaskBody::MaskedLm { train, val, .. } => pick(train.len(), val.len()),
            TaskBody::Translate { train, test, .. } => pick(train.len(), test.len()),
            TaskBody::Images { train, test } | TaskBody::ImageText { train, test } => pick(train.images.n, test.images.n),
        }
    }

    pub fn is_empty(&self, split: Split) -> bool {
        self.len(split) == 0
    }

    /// The batch of examples `idx` of `split`, with inputs in the bound order. For `masked_lm`,
    /// `idx` are window starts. `rng` draws masks and caption wordings.
    pub fn batch_of(&self, split: Split, idx: &[usize], context: usize, rng: &mut Rng) -> Result<Drawn, TrainError> {
        if self.ports.is_empty() {
            return Err(TrainError::data("internal: the task was not bound to a model"));
        }
        let b = idx.len();
        let mut tensors: Vec<(Role, HostTensor)> = Vec::new();
        let mut targets = None;
        let units;
        match &self.body {
            TaskBody::Classify { train, test } => {
                let rows = if split == Split::Train { train } else { test };
                let t = idx.iter().map(|&i| rows[i].ids.len() + 1).max().unwrap_or(1).min(context).max(1);
                let mut tok = vec![vocab::PAD as i64; b * t];
                let mut labels = Vec::with_capacity(b);
                for (r, &i) in idx.iter().enumerate() {
                    tok[r * t] = vocab::BOS as i64;
                    for (j, &id) in rows[i].ids.iter().take(t - 1).enumerate() {
                        tok[r * t + 1 + j] = id as i64;
                    }
                    labels.push(rows[i].label as i64);
                }
                units = b;
                tensors.push((Role::Tokens, HostTensor::I64 { shape: vec![b, t], data: tok }));
                tensors.push((Role::Segments, HostTensor::I64 { shape: vec![b, t], data: vec![0; b * t] }));
                tensors.push((Role::Labels, HostTensor::I64 { shape: vec![b], data: labels.clone() }));
                targets = Some(HostTensor::I64 { shape: vec![b], data: labels });
            }
            TaskBody::MaskedLm { train, val, mask_prob } => {
                let corpus = if split == Split::Train { train } else { val };
                let vocab_len = self.tokenizer.vocab_size() as u64;
                let first_real = vocab::SPECIALS.len() as u64;
                let mut tok = Vec::with_capacity(b * context);
                let mut lab = Vec::with_capacity(b * context);
                for &s in idx {
                    for &id in &corpus[s..s + context] {
                        if rng.next_f64() < *mask_prob {
                            lab.push(id as i64);
                            let r = rng.next_f64();
                            let shown = if r < 0.8 {
                                vocab::MASK as u64
                            } else if r < 0.9 {
                                first_real + rng.below(vocab_len.saturating_sub(first_real).max(1))
                            } else {
                                id as u64
                            };
                            tok.push(shown as i64);
                        } else {
                            lab.push(-100);
                            tok.push(id as i64);
                        }
                    }
                }
                units = b * context;
                tensors.push((Role::Tokens, HostTensor::I64 { shape: vec![b, context], data: tok }));
                tensors.push((Role::Segments, HostTensor::I64 { shape: vec![b, context], data: vec![0; b * context] }));
                targets = Some(HostTensor::I64 { shape: vec![b, context], data: lab });
            }
            TaskBody::Translate { train, test, .. } => {
                let rows = if split == Split::Train { train } else { test };
                let s = idx.iter().map(|&i| rows[i].src.len() + 1).max().unwrap_or(1).min(context);
                let t = idx.iter().map(|&i| rows[i].tgt.len() + 1).max().unwrap_or(1).min(context);
                let mut src = vec![vocab::PAD as i64; b * s];
                let mut tgt = vec![vocab::PAD as i64; b * t];
                let mut lab = vec![-100i64; b * t];
                let mut n = 0;
                for (r, &i) in idx.iter().enumerate() {
                    let p = &rows[i];
                    let sx: Vec<u32> = p.src.iter().copied().chain([vocab::EOS]).take(s).collect();
                    for (j, &id) in sx.iter().enumerate() {
                        src[r * s + j] = id as i64;
                    }
                    let ty: Vec<u32> = p.tgt.iter().copied().chain([vocab::EOS]).take(t).collect();
                    for (j, &id) in ty.iter().enumerate() {
                        lab[r * t + j] = id as i64;
                        tgt[r * t + j] = if j == 0 { vocab::BOS as i64 } else { ty[j - 1] as i64 };
                        n += 1;
                    }
                }
                units = n;
                tensors.push((Role::Src, HostTensor::I64 { shape: vec![b, s], data: src }));
                tensors.push((Role::Tgt, HostTensor::I64 { shape: vec![b, t], data: tgt }));
                targets = Some(HostTensor::I64 { shape: vec![b, t], data: lab });
            }
            TaskBody::Images { train, test } | TaskBody::ImageText { train, test } => {
                let set = if split == Split::Train { train } else { test };
                tensors.push((Role::Images, image_tensor(&set.images, idx)));
                let labels: Vec<i64> = idx.iter().map(|&i| set.labels[i] as i64).collect();
                units = b;
                if self.kind == TaskKind::ImageText {
                    let v = self.vocab().ok_or_else(|| TrainError::data("internal: no caption vocabulary"))?;
                    let captions: Vec<String> = labels
                        .iter()
                        .map(|&l| loaders::digit_captions(l as u8, rng.below(loaders::CAPTION_VARIANTS as u64) as usize))
                        .collect();
                    tensors.push((Role::Tokens, caption_tensor(v, &captions, self.caption_len)));
                } else {
                    tensors.push((Role::Labels, HostTensor::I64 { shape: vec![b], data: labels.clone() }));
                    targets = Some(HostTensor::I64 { shape: vec![b], data: labels });
                }
            }
        }
        let mut inputs = Vec::with_capacity(self.ports.len());
        for role in &self.ports {
            let t = tensors
                .iter()
                .find(|(r, _)| r == role)
                .map(|(_, t)| t.clone())
                .ok_or_else(|| TrainError::data(format!("internal: no {} tensor", role.name())))?;
            inputs.push(t);
        }
        Ok(Drawn { batch: Batch { inputs, targets }, units })
    }

    /// Captions of `texts` as the model's token input (used by zero-shot evaluation).
    pub fn caption_batch(&self, texts: &[String]) -> Result<HostTensor, TrainError> {
        let v = self.vocab().ok_or_else(|| TrainError::data("this task has no caption vocabulary"))?;
        Ok(caption_tensor(v, texts, self.caption_len))
    }

    /// Inputs for images `idx` of `split` with captions `texts` (zero-shot evaluation).
    pub fn image_text_inputs(&self, split: Split, idx: &[usize], texts: &[String]) -> Result<Vec<HostTensor>, TrainError> {
        let TaskBody::ImageText { train, test } = &self.body else {
            return Err(TrainError::data("expected the image_text task"));
        };
        let set = if split == Split::Train { train } else { test };
        let images = image_tensor(&set.images, idx);
        let tokens = self.caption_batch(texts)?;
        Ok(self
            .ports
            .iter()
            .map(|r| if *r == Role::Images { images.clone() } else { tokens.clone() })
            .collect())
    }

    /// The classifier's inputs for one text (`tfm predict`).
    pub fn text_inputs(&self, text: &str, context: usize) -> Result<Vec<HostTensor>, TrainError> {
        let v = self.vocab().ok_or_else(|| TrainError::data("this task has no text vocabulary"))?;
        let ids: Vec<u32> = std::iter::once(vocab::BOS).chain(v.encode(text)).take(context.max(1)).collect();
        let t = ids.len();
        let tok = HostTensor::I64 { shape: vec![1, t], data: ids.iter().map(|&i| i as i64).collect() };
        Ok(self
            .ports
            .iter()
            .map(|r| match r {
                Role::Segments => HostTensor::I64 { shape: vec![1, t], data: vec![0; t] },
                Role::Labels => HostTensor::I64 { shape: vec![1], data: vec![0] },
                _ => tok.clone(),
            })
            .collect())
    }

    /// Inputs for a translation step: sources (with EOS, padded) and target prefixes.
    pub fn seq2seq_inputs(&self, src: &[Vec<u32>], tgt: &[Vec<u32>]) -> Vec<HostTensor> {
        let b = src.len();
        let s = src.iter().map(|x| x.len()).max().unwrap_or(1).max(1);
        let t = tgt.iter().map(|x| x.len()).max().unwrap_or(1).max(1);
        let pad = |rows: &[Vec<u32>], w: usize| -> Vec<i64> {
            let mut d = vec![vocab::PAD as i64; rows.len() * w];
            for (r, x) in rows.iter().enumerate() {
                for (j, &id) in x.iter().enumerate() {
                    d[r * w + j] = id as i64;
                }
            }
            d
        };
        let sx = HostTensor::I64 { shape: vec![b, s], data: pad(src, s) };
        let tx = HostTensor::I64 { shape: vec![b, t], data: pad(tgt, t) };
        self.ports.iter().map(|r| if *r == Role::Src { sx.clone() } else { tx.clone() }).collect()
    }
}

/// Candidates drawn per batch slot when batching by length.
const POOL: usize = 8;

/// `batch` indices below `n` of similar length: `POOL * batch` random candidates sorted by
/// `len`, cut into `POOL` consecutive chunks, one chunk drawn at random (so every candidate is
/// kept with the same probability, short and long alike).
fn pooled(batch: usize, n: usize, rng: &mut Rng, len: impl Fn(usize) -> usize) -> Vec<usize> {
    let mut cand: Vec<usize> = (0..batch * POOL).map(|_| rng.below(n as u64) as usize).collect();
    cand.sort_by_key(|&i| (len(i), i));
    let chunk = rng.below(POOL as u64) as usize;
    cand[chunk * batch..(chunk + 1) * batch].to_vec()
}

/// Normalised `f32[B, 1, rows, cols]` images.
pub fn image_tensor(images: &Images, idx: &[usize]) -> HostTensor {
    let per = images.rows * images.cols;
    let mut data = Vec::with_capacity(idx.len() * per);
    for &i in idx {
        data.extend(images.pixels[i * per..(i + 1) * per].iter().map(|&p| (p as f32 / 255.0 - MNIST_MEAN) / MNIST_STD));
    }
    HostTensor::F32 { shape: vec![idx.len(), 1, images.rows, images.cols], data }
}

/// Captions as `i64[B, len]`: the words, then EOS up to `len` (so the last position is EOS).
fn caption_tensor(v: &Vocab, texts: &[String], len: usize) -> HostTensor {
    let len = len.max(1);
    let mut data = vec![vocab::EOS as i64; texts.len() * len];
    for (r, t) in texts.iter().enumerate() {
        for (j, id) in v.encode(t).into_iter().take(len - 1).enumerate() {
            data[r * len + j] = id as i64;
        }
    }
    HostTensor::I64 { shape: vec![texts.len(), len], data }
}

impl DataSource for TaskData {
    fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    fn check_context(&self, context: usize, val: bool) -> Result<(), TrainError> {
        for split in [Split::Train, Split::Val] {
            if split == Split::Val && !val {
                continue;
            }
            let n = self.len(split);
            let enough = match self.body {
                TaskBody::MaskedLm { .. } => n > context,
                _ => n > 0,
            };
            if !enough {
                let what = match self.body {
                    TaskBody::MaskedLm { .. } => format!("{n} tokens, fewer than a window of {}", context + 1),
                    _ => "no examples".to_string(),
                };
                return Err(TrainError::data_hint(
                    format!("the {} split of {} has {what}", split.name(), self.path.display()),
                    "use more data, a smaller `context`, or a different `data.test_fraction`",
                ));
            }
        }
        Ok(())
    }

    fn draw(&self, split: Split, batch: usize, context: usize, rng: &mut Rng) -> Result<Drawn, TrainError> {
        let n = self.len(split);
        let span = match self.body {
            TaskBody::MaskedLm { .. } => n.saturating_sub(context),
            _ => n,
        };
        if span == 0 {
            return Err(TrainError::data(format!("the {} split is too small", split.name())));
        }
        let idx: Vec<usize> = match &self.body {
            // Variable-length examples: draw a pool of candidates, sort it by length and take a
            // random window of `batch`, so a batch needs little padding.
            TaskBody::Classify { train, test } => {
                let rows = if split == Split::Train { train } else { test };
                pooled(batch, span, rng, |i| rows[i].ids.len())
            }
            TaskBody::Translate { train, test, .. } => {
                let rows = if split == Split::Train { train } else { test };
                pooled(batch, span, rng, |i| rows[i].src.len().max(rows[i].tgt.len()))
            }
            _ => (0..batch).map(|_| rng.below(span as u64) as usize).collect(),
        };
        self.batch_of(split, &idx, context, rng)
    }

    fn classes(&self) -> &[String] {
        &self.classes
    }

    fn unit(&self) -> &'static str {
        match self.body {
            TaskBody::MaskedLm { .. } | TaskBody::Translate { .. } => "tokens",
            TaskBody::Images { .. } | TaskBody::ImageText { .. } => "images",
            TaskBody::Classify { .. } => "examples",
        }
    }
}
