//! The error type of training: every variant says what went wrong, where, and how to fix it.

use std::path::PathBuf;

use crate::config::ConfigError;

#[derive(Debug)]
pub enum TrainError {
    Config(ConfigError),
    /// A file could not be read or written; names the path.
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    /// Bad data: empty corpus, context longer than the data, bad token file, ...
    Data {
        message: String,
        hint: Option<String>,
    },
    /// Bad data at a line of a data file (malformed TSV line, bad label).
    DataAt {
        path: PathBuf,
        /// 1-based line number (0 when the problem is not tied to a line, e.g. a binary header).
        line: usize,
        message: String,
        hint: Option<String>,
    },
    /// The data does not fit the model: points at the spec line (an input's shape, the classes).
    SpecMismatch {
        span: tfm_diag::Span,
        message: String,
        label: String,
        hint: Option<String>,
    },
    /// The tokenizer's vocabulary does not fit the model or the checkpoint.
    VocabMismatch {
        expected: String,
        found: String,
        hint: String,
    },
    /// A checkpoint that cannot be used.
    Checkpoint {
        path: PathBuf,
        message: String,
        hint: Option<String>,
    },
    /// The model's forward or backward pass failed.
    Model(String),
    /// A device operation failed.
    Device(String),
    /// The loss (or the gradient norm) became NaN or infinite.
    NonFinite {
        step: u64,
        what: &'static str,
        value: f32,
        last_checkpoint: Option<PathBuf>,
        /// The run computes in half precision (`precision: f16`).
        half: bool,
    },
}

impl TrainError {
    pub fn data(message: impl Into<String>) -> Self {
        TrainError::Data {
            message: message.into(),
            hint: None,
        }
    }
    pub fn data_hint(message: impl Into<String>, hint: impl Into<String>) -> Self {
        TrainError::Data {
            message: message.into(),
            hint: Some(hint.into()),
        }
    }
    pub fn data_at(path: impl Into<PathBuf>, line: usize, message: impl Into<String>, hint: impl Into<String>) -> Self {
        TrainError::DataAt {
            path: path.into(),
            line,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }
    pub fn io(path: impl Into<PathBuf>, action: &'static str, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.into(),
            action,
            source,
        }
    }
    pub fn device(e: impl std::fmt::Debug) -> Self {
        TrainError::Device(format!("{e:?}"))
    }

    /// As a diagnostic (rendered by the CLI). Configuration errors keep their location when
    /// `config_file` is the config file's id in the caller's source map.
    pub fn to_diagnostic(&self, config_file: Option<tfm_diag::FileId>) -> tfm_diag::Diagnostic {
        if let TrainError::Config(c) = self {
            return c.to_diagnostic(config_file);
        }
        let code = match self {
            TrainError::Io { .. } => "E0802",
            TrainError::Data { .. } | TrainError::DataAt { .. } | TrainError::VocabMismatch { .. } | TrainError::SpecMismatch { .. } => "E0803",
            TrainError::Checkpoint { .. } => "E0804",
            TrainError::NonFinite { .. } => "E0805",
            _ => "E0806",
        };
        let mut d = tfm_diag::Diagnostic::error(code, self.to_string());
        if let TrainError::SpecMismatch { span, label, .. } = self {
            d = d.at(*span, label.clone());
        }
        match self.hint() {
            Some(h) => d.hint(h),
            None => d,
        }
    }

    /// How to fix it, when there is something to say.
    pub fn hint(&self) -> Option<String> {
        match self {
            TrainError::Config(c) => c.hints.first().cloned(),
            TrainError::Io { action, .. } => Some(format!("check that the path exists and can be {action}")),
            TrainError::Data { hint, .. } | TrainError::DataAt { hint, .. } | TrainError::SpecMismatch { hint, .. } => hint.clone(),
            TrainError::VocabMismatch { hint, .. } => Some(hint.clone()),
            TrainError::Checkpoint { hint, .. } => hint.clone(),
            TrainError::Model(_) | TrainError::Device(_) => None,
            TrainError::NonFinite { last_checkpoint, half, .. } => {
                let fix = if *half {
                    "half precision holds values up to 65504 and the forward pass passed it: train in f32 (`--cfg precision=f32`), or lower the learning rate"
                } else {
                    "lower the learning rate or set grad_clip"
                };
                Some(match last_checkpoint {
                    Some(p) => format!("the last good checkpoint is {}; {fix} and resume", p.display()),
                    None => fix.to_string(),
                })
            }
        }
    }
}

impl std::fmt::Display for TrainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrainError::Config(c) => write!(f, "{c}"),
            TrainError::Io {
                path,
                action,
                source,
            } => {
                write!(
                    f,
                    "cannot {} `{}`: {}",
                    action_verb(action),
                    path.display(),
                    lower(&source.to_string())
                )
            }
            TrainError::Data { message, .. } | TrainError::SpecMismatch { message, .. } => write!(f, "{message}"),
            TrainError::DataAt { path, line: 0, message, .. } => write!(f, "{}: {message}", path.display()),
            TrainError::DataAt { path, line, message, .. } => write!(f, "{}:{line}: {message}", path.display()),
            TrainError::VocabMismatch {
                expected, found, ..
            } => {
                write!(f, "vocabulary mismatch: expected {expected}, found {found}")
            }
            TrainError::Checkpoint { path, message, .. } => {
                write!(f, "checkpoint `{}`: {message}", path.display())
            }
            TrainError::Model(m) => write!(f, "model error: {m}"),
            TrainError::Device(m) => write!(f, "device error: {m}"),
            TrainError::NonFinite {
                step, what, value, ..
            } => write!(f, "{what} became {value} at step {step}"),
        }
    }
}

fn action_verb(action: &str) -> &str {
    match action {
        "read" => "read",
        "written" => "write",
        "created" => "create",
        "renamed" => "rename",
        "removed" => "remove",
        other => other,
    }
}

fn lower(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_lowercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

impl std::error::Error for TrainError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TrainError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<ConfigError> for TrainError {
    fn from(e: ConfigError) -> Self {
        TrainError::Config(e)
    }
}
