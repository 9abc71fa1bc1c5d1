//! The run configuration: a YAML file in which only `spec` and `data` are required. Every key is
//! checked: an unknown key is an error at its line and column with a did-you-mean, and CLI flags
//! override file values through [`RunConfig::set_key`].
//!
//! ```yaml
//! spec: specs/gpt.tfm          # the model
//! set: { n_layer: 4 }          # overrides of the spec's parameters
//! data:
//!   path: data/tinyshakespeare.txt   # or `task: addition`
//!   tokenizer: char            # char | byte | tokens
//!   val_fraction: 0.1
//! batch_size: 12
//! context: 64
//! steps: 2000
//! optimizer: { kind: adamw, lr: 1.0e-3, betas: [0.9, 0.95], weight_decay: 0.1, eps: 1.0e-8 }
//! schedule: { kind: cosine, warmup: 100, min_lr: 1.0e-4, decay_steps: 2000 }
//! grad_clip: 1.0
//! accumulation: 1
//! eval: { every: 250, batches: 20 }
//! logging: { dir: runs/gpt, every: 10, tensorboard: true }
//! checkpoints: { dir: runs/gpt/checkpoints, every: 500, keep_best: true, keep_last: true }
//! seed: 1337
//! device: cpu
//! precision: f32               # f32 | f16 (mixed precision)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tfm_diag::{Diagnostic, FileId, Span};

use crate::optim::{OptimKind, OptimSettings};
use crate::schedule::{Schedule, ScheduleKind};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Path of the `.tfm` model spec (relative to the config file's directory when loaded).
    pub spec: PathBuf,
    /// Overrides of the spec's parameters (`n_layer: 4`).
    #[serde(default)]
    pub set: BTreeMap<String, SetValue>,
    pub data: DataConfig,
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// Tokens per training window (`T`).
    #[serde(default = "d_context")]
    pub context: usize,
    /// Optimizer steps in total.
    #[serde(default = "d_steps")]
    pub steps: u64,
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    #[serde(default)]
    pub schedule: ScheduleConfig,
    /// Clip the global gradient norm to this value; `0` or `null` turns clipping off.
    #[serde(default = "d_clip")]
    pub grad_clip: Option<f64>,
    /// Micro-batches per optimizer step.
    #[serde(default = "d_one")]
    pub accumulation: usize,
    #[serde(default)]
    pub eval: EvalConfig,
    #[serde(default)]
    pub logging: LoggingConfig,
    #[serde(default)]
    pub checkpoints: CheckpointConfig,
    #[serde(default = "d_seed")]
    pub seed: u64,
    #[serde(default)]
    pub device: DeviceKind,
    /// `f32`, or `f16` for mixed precision: each step runs the model with half-precision weights
    /// and values cast from an `f32` master copy, which the optimizer updates, with dynamic loss
    /// scaling. Evaluation and checkpoints use the `f32` weights.
    #[serde(default)]
    pub precision: Precision,
    /// Start from the weights of a checkpoint of another spec, matched by parameter name
    /// (a pretrained encoder into a classifier). New weights keep their initialisation.
    #[serde(default)]
    pub init_from: Option<PathBuf>,
}

/// A spec parameter override value.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SetValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl std::fmt::Display for SetValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetValue::Bool(b) => write!(f, "{b}"),
            SetValue::Int(i) => write!(f, "{i}"),
            SetValue::Float(x) => write!(f, "{x:?}"),
            SetValue::Str(s) => write!(f, "{s}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerKind {
    /// One token per distinct character of the corpus, sorted (nanoGPT's shakespeare_char).
    Char,
    /// One token per byte: vocabulary 256.
    Byte,
    /// A pre-tokenized file (see `data::read_token_file`).
    Tokens,
    /// Words and punctuation (the `translate` and `image_text` tasks).
    Word,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Multi-digit additions, see `addition`.
    Addition,
    /// Sequence classification of `label<TAB>text` lines (objective `classify`).
    Classify,
    /// Masked-token prediction on a text corpus (objective `masked_token`).
    MaskedLm,
    /// Sequence-to-sequence on `source<TAB>target` lines (objective `seq2seq`).
    Translate,
    /// Image classification on MNIST's IDX files (objective `classify`).
    ImageClassify,
    /// Images paired with generated captions (objective `contrastive`).
    ImageText,
}

impl TaskKind {
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Addition => "addition",
            TaskKind::Classify => "classify",
            TaskKind::MaskedLm => "masked_lm",
            TaskKind::Translate => "translate",
            TaskKind::ImageClassify => "image_classify",
            TaskKind::ImageText => "image_text",
        }
    }
    /// Whether the task reads `data.path` (all but the generated addition task).
    pub fn needs_path(self) -> bool {
        self != TaskKind::Addition
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// A text corpus or a token file. Exactly one of `path` and `task`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub task: Option<TaskKind>,
    /// Defaults to `tokens` for files ending in `.tok`, else `char`.
    #[serde(default)]
    pub tokenizer: Option<TokenizerKind>,
    /// The last fraction of the tokens is the validation split.
    #[serde(default = "d_val")]
    pub val_fraction: f64,
    /// Largest operand length of the addition task.
    #[serde(default = "d_digits")]
    pub digits: usize,
    /// Held-out addition problems (never trained on).
    #[serde(default = "d_test")]
    pub test_examples: usize,
    /// The held-out fraction of the examples (`classify`: stratified, default 0.2; `translate`:
    /// distinct source sentences with all their targets, default 0.05). MNIST has its own test set.
    #[serde(default)]
    pub test_fraction: Option<f64>,
    /// Lower-case text before tokenizing (word and character vocabularies).
    #[serde(default = "d_true")]
    pub lowercase: bool,
    /// Words seen fewer times in the training split become `[UNK]`.
    #[serde(default = "d_one")]
    pub min_count: usize,
    /// Keep at most this many tokens in a built vocabulary (specials included).
    #[serde(default)]
    pub max_vocab: Option<usize>,
    /// Fraction of the tokens masked by `masked_lm` (80% `[MASK]`, 10% random, 10% kept).
    #[serde(default = "d_mask")]
    pub mask_prob: f64,
    /// Use only the first N examples of the file (quick experiments and tests).
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    pub kind: OptimKind,
    pub lr: f64,
    pub betas: [f64; 2],
    pub weight_decay: f64,
    pub eps: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Decay every weight, also norms, biases and embeddings.
    pub decay_all: bool,
    /// Also decay every weight of two or more dimensions, embeddings included (nanoGPT's grouping).
    pub decay_matrices: bool,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        let s = OptimSettings::default();
        OptimizerConfig {
            kind: s.kind,
            lr: 1e-3,
            betas: s.betas,
            weight_decay: s.weight_decay,
            eps: s.eps,
            momentum: s.momentum,
            decay_all: s.decay_all,
            decay_matrices: s.decay_matrices,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    pub kind: ScheduleKind,
    pub warmup: u64,
    /// Floor of the decay; defaults to a tenth of the learning rate.
    pub min_lr: Option<f64>,
    /// Step at which the decay reaches `min_lr`; defaults to `steps`.
    pub decay_steps: Option<u64>,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            kind: ScheduleKind::Cosine,
            warmup: 100,
            min_lr: None,
            decay_steps: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Evaluate every this many steps (and at the end); 0 = only at the end.
    pub every: u64,
    /// Validation batches averaged per evaluation.
    pub batches: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            every: 250,
            batches: 20,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// Defaults to `runs/<spec file stem>`.
    pub dir: Option<PathBuf>,
    /// Report training loss every this many steps.
    pub every: u64,
    pub tensorboard: bool,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            dir: None,
            every: 10,
            tensorboard: true,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Defaults to `<logging dir>/checkpoints`.
    pub dir: Option<PathBuf>,
    /// Write `last/` every this many steps (and at the end); 0 = only at the end.
    pub every: u64,
    /// Keep `best/`: the checkpoint with the lowest validation loss.
    pub keep_best: bool,
    pub keep_last: bool,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            dir: None,
            every: 500,
            keep_best: true,
            keep_last: true,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    /// Mixed precision: half-precision steps, `f32` master weights, dynamic loss scaling.
    F16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16 mixed precision",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    #[default]
    Cpu,
    Cuda,
}

fn d_batch() -> usize {
    12
}
fn d_context() -> usize {
    64
}
fn d_steps() -> u64 {
    1000
}
fn d_clip() -> Option<f64> {
    Some(1.0)
}
fn d_one() -> usize {
    1
}
fn d_seed() -> u64 {
    1337
}
fn d_true() -> bool {
    true
}
fn d_mask() -> f64 {
    0.15
}
fn d_val() -> f64 {
    0.1
}
fn d_digits() -> usize {
    3
}
fn d_test() -> usize {
    1000
}

/// A configuration problem, with where it is in the YAML text when known.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigError {
    pub message: String,
    /// The dotted key the problem is about (`optimizer.lr`), when known.
    pub key: Option<String>,
    /// 1-based line and column, and the byte offset, in the YAML text.
    pub location: Option<Location>,
    pub hints: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
    pub offset: usize,
}

impl ConfigError {
    fn new(message: impl Into<String>) -> Self {
        ConfigError {
            message: message.into(),
            key: None,
            location: None,
            hints: Vec::new(),
        }
    }
    fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }
    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hints.push(hint.into());
        self
    }

    /// As a diagnostic pointing into the config file `file` (registered by the caller).
    pub fn to_diagnostic(&self, file: Option<FileId>) -> Diagnostic {
        let mut d = Diagnostic::error("E0801", self.message.clone());
        if let (Some(file), Some(loc)) = (file, self.location) {
            let len = self
                .key
                .as_ref()
                .and_then(|k| k.rsplit('.').next())
                .map_or(1, |k| k.len().max(1));
            d = d.at(Span::new(file, loc.offset, loc.offset + len), "here");
        }
        for h in &self.hints {
            d = d.hint(h.clone());
        }
        d
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(l) = self.location {
            write!(f, " at line {} column {}", l.line, l.column)?;
        }
        for h in &self.hints {
            write!(f, "\n  = hint: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl RunConfig {
    /// The smallest configuration: a spec and a data file, everything else defaulted.
    pub fn new(spec: impl Into<PathBuf>, data: impl Into<PathBuf>) -> Self {
        RunConfig {
            spec: spec.into(),
            set: BTreeMap::new(),
            data: DataConfig {
                path: Some(data.into()),
                task: None,
                tokenizer: None,
                val_fraction: d_val(),
                digits: d_digits(),
                test_examples: d_test(),
                test_fraction: None,
                lowercase: true,
                min_count: 1,
                max_vocab: None,
                mask_prob: d_mask(),
                limit: None,
            },
            batch_size: d_batch(),
            context: d_context(),
            steps: d_steps(),
            optimizer: OptimizerConfig::default(),
            schedule: ScheduleConfig::default(),
            grad_clip: d_clip(),
            accumulation: 1,
            eval: EvalConfig::default(),
            logging: LoggingConfig::default(),
            checkpoints: CheckpointConfig::default(),
            seed: d_seed(),
            device: DeviceKind::Cpu,
            precision: Precision::F32,
            init_from: None,
        }
    }

    /// Parses and validates YAML text. Paths stay as written.
    pub fn from_yaml_str(text: &str) -> Result<Self, ConfigError> {
        let cfg: RunConfig = serde_yaml::from_str(text).map_err(|e| yaml_error(&e))?;
        cfg.validate().map_err(|mut e| {
            if let Some(k) = &e.key {
                e.location = locate_key(text, k);
            }
            e
        })?;
        Ok(cfg)
    }

    /// Reads a config file; relative `spec`, `data.path` and directories are taken relative to
    /// the file's directory.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(format!("cannot read config `{}`: {}", path.display(), e))
                .hint("check the path of the run configuration")
        })?;
        let mut cfg = Self::from_yaml_str(&text)?;
        if let Some(base) = path.parent() {
            cfg.rebase(base);
        }
        Ok(cfg)
    }

    /// Makes relative paths relative to `base`.
    pub fn rebase(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.spec);
        if let Some(p) = &mut self.data.path {
            fix(p);
        }
        if let Some(p) = &mut self.init_from {
            fix(p);
        }
        if let Some(p) = &mut self.logging.dir {
            fix(p);
        }
        if let Some(p) = &mut self.checkpoints.dir {
            fix(p);
        }
    }

    /// Overrides one value by its dotted key, e.g. `("optimizer.lr", "3e-4")` or
    /// `("set.n_layer", "4")`; the value is parsed as YAML. Unknown keys get a did-you-mean.
    pub fn set_key(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let mut tree =
            serde_yaml::to_value(&*self).map_err(|e| ConfigError::new(format!("internal: {e}")))?;
        let parsed: serde_yaml::Value = serde_yaml::from_str(value).map_err(|e| {
            ConfigError::new(format!(
                "invalid value `{value}` for `{key}`: {}",
                strip_location(&e.to_string())
            ))
            .key(key)
        })?;
        let parts: Vec<&str> = key.split('.').collect();
        let mut node = &mut tree;
        for (i, part) in parts.iter().enumerate() {
            let prefix = parts[..i].join(".");
            let serde_yaml::Value::Mapping(map) = node else {
                return Err(
                    ConfigError::new(format!("`{prefix}` has no keys, found `{key}`")).key(key),
                );
            };
            let k = serde_yaml::Value::String(part.to_string());
            let free_form = prefix == "set";
            if !map.contains_key(&k) && !free_form {
                let known: Vec<String> = map
                    .keys()
                    .filter_map(|k| k.as_str().map(String::from))
                    .collect();
                let full = |n: &str| {
                    if prefix.is_empty() {
                        n.to_string()
                    } else {
                        format!("{prefix}.{n}")
                    }
                };
                let mut e = ConfigError::new(format!("unknown key `{key}`")).key(key);
                if let Some(s) = tfm_diag::did_you_mean(part, known.iter().map(|s| s.as_str())) {
                    e = e.hint(format!("did you mean `{}`?", full(s)));
                }
                let list: Vec<String> = known.iter().map(|n| format!("`{}`", full(n))).collect();
                return Err(e.hint(format!("expected one of {}", list.join(", "))));
            }
            if i + 1 == parts.len() {
                map.insert(k, parsed.clone());
                break;
            }
            node = map.entry(k).or_insert(serde_yaml::Value::Null);
        }
        let cfg: RunConfig = serde_yaml::from_value(tree).map_err(|e| {
            let raw = strip_location(&e.to_string());
            let (_, rest) = split_path(&raw);
            ConfigError::new(format!(
                "invalid value `{value}`: {}",
                expected_found(rest, key)
            ))
            .key(key)
        })?;
        cfg.validate()?;
        *self = cfg;
        Ok(())
    }

    /// Applies `key=value` overrides in order.
    pub fn merge(&mut self, overrides: &[(String, String)]) -> Result<(), ConfigError> {
        for (k, v) in overrides {
            self.set_key(k, v)?;
        }
        Ok(())
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).unwrap_or_default()
    }

    /// Range and consistency checks that the types alone do not express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |key: &str, v: usize| {
            if v == 0 {
                Err(ConfigError::new(format!("`{key}` must be at least 1, found 0")).key(key))
            } else {
                Ok(())
            }
        };
        positive("batch_size", self.batch_size)?;
        positive("context", self.context)?;
        positive("accumulation", self.accumulation)?;
        match (&self.data.path, self.data.task) {
            (None, None) => {
                return Err(
                    ConfigError::new("`data` needs a `path` or a `task`, found neither")
                        .key("data")
                        .hint("add `path: <text or token file>` or `task: addition` under `data`"),
                )
            }
            (Some(_), Some(TaskKind::Addition)) => {
                return Err(
                    ConfigError::new("the `addition` task generates its data and takes no `path`")
                        .key("data.task")
                        .hint("remove `data.path`"),
                )
            }
            (None, Some(t)) if t.needs_path() => {
                return Err(ConfigError::new(format!(
                    "the `{}` task reads a data file, found no `data.path`",
                    t.name()
                ))
                .key("data.task")
                .hint("add `path:` under `data` (a file, or MNIST's folder for image tasks)"))
            }
            _ => {}
        }
        if let Some(f) = self.data.test_fraction {
            if !(f > 0.0 && f < 1.0) {
                return Err(ConfigError::new(format!(
                    "expected `data.test_fraction` in (0, 1), found {f}"
                ))
                .key("data.test_fraction"));
            }
        }
        if !(self.data.mask_prob > 0.0 && self.data.mask_prob < 1.0) {
            return Err(ConfigError::new(format!(
                "expected `data.mask_prob` in (0, 1), found {}",
                self.data.mask_prob
            ))
            .key("data.mask_prob"));
        }
        if self.data.min_count == 0 {
            return Err(ConfigError::new("`data.min_count` must be at least 1, found 0").key("data.min_count"));
        }
        if !(self.data.val_fraction >= 0.0 && self.data.val_fraction < 1.0) {
            return Err(ConfigError::new(format!(
                "expected `data.val_fraction` in [0, 1), found {}",
                self.data.val_fraction
            ))
            .key("data.val_fraction"));
        }
        if self.data.task == Some(TaskKind::Addition) && !(1..=18).contains(&self.data.digits) {
            return Err(ConfigError::new(format!(
                "expected `data.digits` from 1 to 18, found {}",
                self.data.digits
            ))
            .key("data.digits"));
        }
        let o = &self.optimizer;
        if !(o.lr > 0.0 && o.lr.is_finite()) {
            return Err(ConfigError::new(format!(
                "expected a positive `optimizer.lr`, found {}",
                o.lr
            ))
            .key("optimizer.lr"));
        }
        for (i, b) in o.betas.iter().enumerate() {
            if !(0.0..1.0).contains(b) {
                return Err(ConfigError::new(format!(
                    "expected `optimizer.betas` in [0, 1), found {b}"
                ))
                .key("optimizer.betas")
                .hint(format!(
                    "beta {} is usually {}",
                    i + 1,
                    if i == 0 { "0.9" } else { "0.95 to 0.999" }
                )));
            }
        }
        if o.eps.is_nan() || o.eps <= 0.0 {
            return Err(ConfigError::new(format!(
                "expected a positive `optimizer.eps`, found {}",
                o.eps
            ))
            .key("optimizer.eps"));
        }
        if o.weight_decay.is_nan() || o.weight_decay < 0.0 {
            return Err(ConfigError::new(format!(
                "expected a non-negative `optimizer.weight_decay`, found {}",
                o.weight_decay
            ))
            .key("optimizer.weight_decay"));
        }
        if !(0.0..1.0).contains(&o.momentum) {
            return Err(ConfigError::new(format!(
                "expected `optimizer.momentum` in [0, 1), found {}",
                o.momentum
            ))
            .key("optimizer.momentum"));
        }
        if let Some(m) = self.schedule.min_lr {
            if !(m >= 0.0 && m <= o.lr) {
                return Err(ConfigError::new(format!(
                    "expected `schedule.min_lr` between 0 and `optimizer.lr` ({}), found {m}",
                    o.lr
                ))
                .key("schedule.min_lr"));
            }
        }
        if let Some(c) = self.grad_clip {
            if c.is_nan() || c < 0.0 {
                return Err(ConfigError::new(format!(
                    "expected a non-negative `grad_clip`, found {c}"
                ))
                .key("grad_clip")
                .hint("use 0 or null to turn clipping off"));
            }
        }
        if self.eval.every > 0 && self.eval.batches == 0 {
            return Err(
                ConfigError::new("`eval.batches` must be at least 1, found 0").key("eval.batches"),
            );
        }
        Ok(())
    }

    pub fn optim_settings(&self) -> OptimSettings {
        let o = &self.optimizer;
        OptimSettings {
            kind: o.kind,
            betas: o.betas,
            eps: o.eps,
            weight_decay: o.weight_decay,
            momentum: o.momentum,
            decay_all: o.decay_all,
            decay_matrices: o.decay_matrices,
        }
    }

    pub fn schedule(&self) -> Schedule {
        Schedule {
            kind: self.schedule.kind,
            lr: self.optimizer.lr,
            warmup: self.schedule.warmup,
            min_lr: self.schedule.min_lr.unwrap_or(self.optimizer.lr / 10.0),
            decay_steps: self.schedule.decay_steps.unwrap_or(self.steps),
        }
    }

    pub fn grad_clip(&self) -> Option<f64> {
        self.grad_clip.filter(|c| *c > 0.0)
    }

    pub fn log_dir(&self) -> PathBuf {
        self.logging.dir.clone().unwrap_or_else(|| {
            let stem = self
                .spec
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("run");
            PathBuf::from("runs").join(stem)
        })
    }

    pub fn checkpoint_dir(&self) -> PathBuf {
        self.checkpoints
            .dir
            .clone()
            .unwrap_or_else(|| self.log_dir().join("checkpoints"))
    }

    pub fn tokenizer_kind(&self) -> TokenizerKind {
        self.data
            .tokenizer
            .unwrap_or_else(|| match &self.data.path {
                Some(p) if p.extension().is_some_and(|e| e == "tok") => TokenizerKind::Tokens,
                _ => TokenizerKind::Char,
            })
    }

    /// The spec overrides as `name=value` strings.
    pub fn set_strings(&self) -> Vec<(String, String)> {
        self.set
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect()
    }
}

/// Turns a serde_yaml error into a [`ConfigError`] with location, key path and suggestions.
/// serde_yaml prefixes errors inside a section with its dotted path (`optimizer.kind: ...`).
fn yaml_error(e: &serde_yaml::Error) -> ConfigError {
    let full_raw = strip_location(&e.to_string());
    let (parents, raw) = split_path(&full_raw);
    let location = e.location().map(|l| Location {
        line: l.line(),
        column: l.column(),
        offset: l.index(),
    });
    let mut err = ConfigError::new(raw.to_string());
    err.location = location;
    let joined = parents.join(".");
    let full = |name: &str| {
        if joined.is_empty() {
            name.to_string()
        } else {
            format!("{joined}.{name}")
        }
    };
    if let Some(rest) = raw.strip_prefix("unknown field `") {
        let name = rest.split('`').next().unwrap_or("");
        let expected = backticked(rest.split_once(", expected").map(|x| x.1).unwrap_or(""));
        let section = if joined.is_empty() {
            "the top level".to_string()
        } else {
            format!("`{joined}`")
        };
        err.message = format!("unknown key `{name}` in {section}");
        err.key = Some(full(name));
        if let Some(s) = tfm_diag::did_you_mean(name, expected.iter().map(|s| s.as_str())) {
            err.hints.push(format!("did you mean `{s}`?"));
        }
        if !expected.is_empty() {
            let list: Vec<String> = expected.iter().map(|s| format!("`{s}`")).collect();
            err.hints
                .push(format!("expected one of {}", list.join(", ")));
        }
    } else if let Some(rest) = raw.strip_prefix("unknown variant `") {
        let name = rest.split('`').next().unwrap_or("");
        let expected = backticked(rest.split_once(", expected").map(|x| x.1).unwrap_or(""));
        let list: Vec<String> = expected.iter().map(|s| format!("`{s}`")).collect();
        let what = if joined.is_empty() {
            String::new()
        } else {
            format!(" for `{joined}`")
        };
        err.message = format!("expected one of {}{what}, found `{name}`", list.join(", "));
        err.key = (!joined.is_empty()).then(|| joined.clone());
        if let Some(s) = tfm_diag::did_you_mean(name, expected.iter().map(|s| s.as_str())) {
            err.hints.push(format!("did you mean `{s}`?"));
        }
    } else if let Some(rest) = raw.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or("");
        err.message = format!("missing key `{}`", full(name));
        err.key = Some(full(name));
        err.hints.push(match name {
            "spec" => "add `spec: <path to the .tfm file>`".to_string(),
            "data" => "add `data:` with `path: <corpus>` or `task: addition`".to_string(),
            _ => format!("add `{name}:`"),
        });
    } else {
        err.message = expected_found(raw, &joined);
        err.key = (!joined.is_empty()).then(|| joined.clone());
    }
    err
}

/// `optimizer.lr: invalid type: ...` -> (["optimizer", "lr"], "invalid type: ...").
fn split_path(s: &str) -> (Vec<String>, &str) {
    if let Some((head, rest)) = s.split_once(": ") {
        let is_path = !head.is_empty()
            && head
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '[' || c == ']');
        if is_path && !matches!(head, "invalid type" | "invalid value" | "invalid length") {
            return (head.split('.').map(String::from).collect(), rest);
        }
    }
    (Vec::new(), s)
}

/// `invalid type: string "x", expected f64` -> `expected f64 for `key`, found string "x"`.
fn expected_found(raw: &str, key: &str) -> String {
    let body = match raw.split_once(": ") {
        Some((head, body)) if head.starts_with("invalid ") => body,
        _ => {
            return if key.is_empty() {
                raw.to_string()
            } else {
                format!("`{key}`: {raw}")
            }
        }
    };
    match body.split_once(", expected ") {
        Some((found, expected)) => {
            let what = if key.is_empty() {
                String::new()
            } else {
                format!(" for `{key}`")
            };
            format!("expected {expected}{what}, found {found}")
        }
        None => {
            if key.is_empty() {
                raw.to_string()
            } else {
                format!("`{key}`: {raw}")
            }
        }
    }
}

fn strip_location(s: &str) -> String {
    match s.rfind(" at line ") {
        Some(i) if s[i..].contains(" column ") => s[..i].to_string(),
        _ => s.to_string(),
    }
}

fn backticked(s: &str) -> Vec<String> {
    s.split('`').skip(1).step_by(2).map(String::from).collect()
}

/// The 1-based line/column of a dotted key in block-style YAML, if it appears there.
fn locate_key(text: &str, key: &str) -> Option<Location> {
    let parts: Vec<&str> = key.split('.').collect();
    let mut depth = 0;
    let mut min_indent = 0;
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        let ind = l.len() - l.trim_start().len();
        let t = l.trim_start();
        if let Some((k, _)) = t.split_once(':') {
            if depth > 0 && ind < min_indent {
                return None;
            }
            if k.trim() == parts[depth] && ind >= min_indent {
                if depth + 1 == parts.len() {
                    return Some(Location {
                        line: i + 1,
                        column: ind + 1,
                        offset: offset + ind,
                    });
                }
                depth += 1;
                min_indent = ind + 1;
            }
        }
        offset += l.len();
    }
    None
}
