//! Training: optimisers, schedules, data and tokenizers, checkpoints, run configuration, logging
//! and the training loop, all generic over the dfdx device.
//!
//! # Code map
//! - [`config`]: the YAML run configuration, validated key by key, with CLI overrides.
//! - [`data`]: tokenizers (char, byte, pre-tokenized files), train/val split, random windows.
//! - [`loaders`]: readers for TSV pairs, labelled text and MNIST IDX; stratified/grouped splits; digit captions.
//! - [`vocab`]: serialisable char/word vocabularies with special tokens and the word pre-tokenizer.
//! - [`addition`]: the built-in multi-digit addition task and its exact-match evaluator.
//! - [`optim`]: AdamW and SGD over a [`ParamStore`], gradient accumulation and clipping.
//! - [`schedule`]: learning-rate schedules (constant, linear, cosine with warm-up).
//! - [`checkpoint`]: atomic safetensors checkpoints with validated metadata.
//! - [`logging`]: the [`Observer`] trait, TensorBoard event files, a metrics file, a progress bar.
//! - [`tasks`]: the example tasks (classification, masked tokens, translation, images, image-text).
//! - [`evaluate`], [`translate`]: task metrics (accuracy, zero-shot, BLEU with greedy and beam search).
//! - [`trainer`]: the loop itself, [`train`].
//! - [`metrics`]: corpus BLEU, accuracy, and a confusion matrix with per-class precision/recall/F1.
//! - [`decode`]: model-independent greedy and beam-search decoding over a step closure.
//! - [`rng`]: the small seeded generator whose state is saved in checkpoints.

pub mod addition;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod decode;
pub mod error;
pub mod evaluate;
pub mod loaders;
pub mod logging;
pub mod metrics;
pub mod optim;
pub mod rng;
pub mod runtime;
pub mod schedule;
pub mod tasks;
pub mod trainer;
pub mod translate;
pub mod vocab;

pub use checkpoint::{Checkpoint, CheckpointMeta};
pub use config::{ConfigError, RunConfig};
pub use data::{DataSource, Dataset, Split, TextData, TokenBatch, Tokenizer};
pub use error::TrainError;
pub use logging::{Observer, StepStats};
pub use optim::Optimizer;
pub use rng::Rng;
pub use schedule::Schedule;
pub use tfm_runtime::{Param, ParamStore};
pub use trainer::{train, TrainModel, TrainOptions, TrainReport};
