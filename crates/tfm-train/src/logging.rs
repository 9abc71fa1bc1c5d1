//! Training observers: the loop reports steps, evaluations and checkpoints to an [`Observer`];
//! this module has observers that write TensorBoard event files and a JSON-lines metrics file,
//! and an optional progress bar (hidden when stderr is not a terminal). The CLI picks which to use.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tensorboard_rs::summary_writer::SummaryWriter;

use crate::error::TrainError;

/// One optimizer step, as reported to observers.
#[derive(Clone, Debug, PartialEq)]
pub struct StepStats {
    /// 0-based index of the step just taken.
    pub step: u64,
    pub total_steps: u64,
    /// Mean training loss over the step's micro-batches.
    pub loss: f32,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub tokens_per_sec: f64,
    /// Whether this step falls on the logging interval.
    pub log: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EvalStats {
    /// Optimizer steps completed when measured.
    pub step: u64,
    pub val_loss: f32,
    pub train_loss: Option<f32>,
    pub best: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointKind {
    Last,
    Best,
}

/// Receives training events. Every method has an empty default.
pub trait Observer {
    fn on_start(&mut self, _start_step: u64, _total_steps: u64) {}
    fn on_step(&mut self, _s: &StepStats) {}
    fn on_eval(&mut self, _e: &EvalStats) {}
    fn on_checkpoint(&mut self, _step: u64, _kind: CheckpointKind, _path: &Path) {}
    /// A non-fatal problem (a logging write failed, say).
    fn on_warning(&mut self, _message: &str) {}
    fn on_finish(&mut self, _step: u64) {}
}

/// Does nothing.
pub struct NullObserver;
impl Observer for NullObserver {}

/// Forwards every event to each observer in turn.
#[derive(Default)]
pub struct Observers(pub Vec<Box<dyn Observer>>);

impl Observer for Observers {
    fn on_start(&mut self, a: u64, b: u64) {
        self.0.iter_mut().for_each(|o| o.on_start(a, b))
    }
    fn on_step(&mut self, s: &StepStats) {
        self.0.iter_mut().for_each(|o| o.on_step(s))
    }
    fn on_eval(&mut self, e: &EvalStats) {
        self.0.iter_mut().for_each(|o| o.on_eval(e))
    }
    fn on_checkpoint(&mut self, step: u64, kind: CheckpointKind, path: &Path) {
        self.0
            .iter_mut()
            .for_each(|o| o.on_checkpoint(step, kind, path))
    }
    fn on_warning(&mut self, m: &str) {
        self.0.iter_mut().for_each(|o| o.on_warning(m))
    }
    fn on_finish(&mut self, step: u64) {
        self.0.iter_mut().for_each(|o| o.on_finish(step))
    }
}

/// Collects everything in memory (tests, summaries).
#[derive(Default, Debug)]
pub struct Recorder {
    pub steps: Vec<StepStats>,
    pub evals: Vec<EvalStats>,
    pub checkpoints: Vec<(u64, CheckpointKind, PathBuf)>,
    pub warnings: Vec<String>,
}

impl Observer for Recorder {
    fn on_step(&mut self, s: &StepStats) {
        self.steps.push(s.clone())
    }
    fn on_eval(&mut self, e: &EvalStats) {
        self.evals.push(e.clone())
    }
    fn on_checkpoint(&mut self, step: u64, kind: CheckpointKind, path: &Path) {
        self.checkpoints.push((step, kind, path.to_path_buf()))
    }
    fn on_warning(&mut self, m: &str) {
        self.warnings.push(m.to_string())
    }
}

/// Writes TensorBoard scalars `train/loss`, `val/loss`, `lr`, `grad_norm`, `tokens_per_sec`.
/// Steps are logged 1-based (the number of optimizer steps completed).
pub struct TensorBoard {
    writer: SummaryWriter,
}

impl TensorBoard {
    /// Creates `dir` and an event file in it.
    pub fn new(dir: &Path) -> Result<Self, TrainError> {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, "created", e))?;
        // The writer's thread panics on an unwritable directory: find out first.
        let probe = dir.join(".write-test");
        std::fs::write(&probe, b"").map_err(|e| TrainError::io(dir, "written", e))?;
        let _ = std::fs::remove_file(&probe);
        Ok(TensorBoard {
            writer: SummaryWriter::new(dir),
        })
    }

    pub fn flush(&mut self) {
        self.writer.flush();
    }
}

impl Observer for TensorBoard {
    fn on_step(&mut self, s: &StepStats) {
        if !s.log {
            return;
        }
        let step = (s.step + 1) as usize;
        self.writer.add_scalar("train/loss", s.loss, step);
        self.writer.add_scalar("lr", s.lr as f32, step);
        self.writer
            .add_scalar("grad_norm", s.grad_norm as f32, step);
        self.writer
            .add_scalar("tokens_per_sec", s.tokens_per_sec as f32, step);
    }
    fn on_eval(&mut self, e: &EvalStats) {
        self.writer
            .add_scalar("val/loss", e.val_loss, e.step as usize);
        self.writer.flush();
    }
    fn on_finish(&mut self, _step: u64) {
        self.writer.flush();
    }
}

/// Appends one JSON object per logged step or evaluation to `metrics.jsonl`.
pub struct MetricsFile {
    path: PathBuf,
    file: std::fs::File,
    failed: bool,
}

impl MetricsFile {
    pub fn new(dir: &Path) -> Result<Self, TrainError> {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, "created", e))?;
        let path = dir.join("metrics.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| TrainError::io(&path, "written", e))?;
        Ok(MetricsFile {
            path,
            file,
            failed: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, v: serde_json::Value) {
        if !self.failed && writeln!(self.file, "{v}").is_err() {
            self.failed = true;
        }
    }
}

impl Observer for MetricsFile {
    fn on_step(&mut self, s: &StepStats) {
        if s.log {
            self.write(serde_json::json!({
                "step": s.step + 1, "loss": s.loss, "lr": s.lr,
                "grad_norm": s.grad_norm, "tokens_per_sec": s.tokens_per_sec,
            }));
        }
    }
    fn on_eval(&mut self, e: &EvalStats) {
        self.write(serde_json::json!({ "step": e.step, "val_loss": e.val_loss, "best": e.best }));
    }
}

/// A progress bar with step, loss, learning rate, tokens per second and ETA. Draws to stderr,
/// and only when stderr is a terminal.
pub struct Progress {
    bar: ProgressBar,
    last_val: Option<f32>,
}

impl Progress {
    pub fn new() -> Self {
        Self::with_target(ProgressDrawTarget::stderr())
    }

    /// A bar that never draws (tests, non-interactive runs).
    pub fn hidden() -> Self {
        Self::with_target(ProgressDrawTarget::hidden())
    }

    fn with_target(target: ProgressDrawTarget) -> Self {
        let bar = ProgressBar::with_draw_target(Some(0), target);
        let style = ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(500));
        Progress {
            bar,
            last_val: None,
        }
    }

    pub fn message(&self) -> String {
        self.bar.message()
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Observer for Progress {
    fn on_start(&mut self, start: u64, total: u64) {
        self.bar.set_length(total);
        self.bar.set_position(start);
        self.bar.reset_eta();
    }
    fn on_step(&mut self, s: &StepStats) {
        self.bar.set_position(s.step + 1);
        let val = self
            .last_val
            .map(|v| format!(" val {v:.4}"))
            .unwrap_or_default();
        self.bar.set_message(format!(
            "loss {:.4}{val} lr {:.2e} {:.0} tok/s",
            s.loss, s.lr, s.tokens_per_sec
        ));
    }
    fn on_eval(&mut self, e: &EvalStats) {
        self.last_val = Some(e.val_loss);
    }
    fn on_finish(&mut self, _step: u64) {
        self.bar.finish();
    }
}

/// The usual observers for a run: TensorBoard events (if `logging.tensorboard`) and
/// `metrics.jsonl` in the log directory, plus a progress bar when `progress` is set.
pub fn standard(
    config: &crate::config::RunConfig,
    progress: bool,
) -> Result<Observers, TrainError> {
    let dir = config.log_dir();
    let mut obs: Vec<Box<dyn Observer>> = Vec::new();
    if config.logging.tensorboard {
        obs.push(Box::new(TensorBoard::new(&dir)?));
    }
    obs.push(Box::new(MetricsFile::new(&dir)?));
    if progress {
        obs.push(Box::new(Progress::new()));
    }
    Ok(Observers(obs))
}
