//! `tfm train`: builds the run configuration (file, then flags), checks the spec, trains on the
//! chosen device with progress, TensorBoard logs and checkpoints, handles Ctrl-C, and prints a
//! summary (and, for the addition task, exact-match accuracy with sample answers). Also holds the
//! loading helpers `tfm eval` and `tfm generate` share.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use tfm_diag::{Diagnostic, FileId, SourceMap};
use tfm_elab::{check_file, CheckOptions};
use tfm_runtime::{AnyPrecision, Backend, ParamStore, Runtime};
use tfm_train::addition::AdditionTask;
use tfm_train::config::TaskKind;
use tfm_train::logging::{self, EvalStats, Observer, StepStats};
use tfm_train::runtime::greedy_generate;
use tfm_train::{checkpoint, train, Checkpoint, DataSource, Dataset, RunConfig, TrainError, TrainOptions};

use crate::common::{parse_overrides, stderr_color};
use crate::device::{dispatch, DeviceArg, DeviceJob};

/// Exit codes (see `tfm train --help`).
pub const OK: u8 = 0;
pub const FAILED: u8 = 1;
pub const USAGE: u8 = 2;
/// Training stopped by Ctrl-C after writing `last/` (128 + SIGINT, as shells report it).
pub const INTERRUPTED: u8 = 130;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TaskArg {
    /// Multi-digit addition, generated on the fly with held-out test problems.
    Addition,
    /// Classify `label<TAB>text` lines (`--data` a TSV file).
    Classify,
    /// Masked-token prediction on a text corpus.
    MaskedLm,
    /// Translate `source<TAB>target` lines.
    Translate,
    /// Classify MNIST images (`--data` the folder of its IDX files).
    ImageClassify,
    /// Contrastive training of MNIST images with generated captions.
    ImageText,
}

impl From<TaskArg> for TaskKind {
    fn from(t: TaskArg) -> TaskKind {
        match t {
            TaskArg::Addition => TaskKind::Addition,
            TaskArg::Classify => TaskKind::Classify,
            TaskArg::MaskedLm => TaskKind::MaskedLm,
            TaskArg::Translate => TaskKind::Translate,
            TaskArg::ImageClassify => TaskKind::ImageClassify,
            TaskArg::ImageText => TaskKind::ImageText,
        }
    }
}

#[derive(Args)]
#[command(after_help = "Flags override the run configuration (`--config`), which overrides the defaults.\n\
Exit codes: 0 done, 1 error (diagnostics on stderr), 2 usage error, 130 interrupted by Ctrl-C\n\
(a checkpoint was written to `<out>/checkpoints/last`; continue with `--resume`).")]
pub struct TrainArgs {
    /// The model spec (`.tfm`).
    spec: PathBuf,
    /// Run configuration (YAML); its relative paths are taken relative to its folder.
    #[arg(long, value_name = "RUN.yaml")]
    config: Option<PathBuf>,
    /// Training data: a text file (one token per character), a `.tok` token file, or the file
    /// or folder a `--task` reads.
    #[arg(long, value_name = "PATH")]
    data: Option<PathBuf>,
    /// A task instead of language modelling on a corpus.
    #[arg(long, value_enum)]
    task: Option<TaskArg>,
    /// Override a model parameter of the spec (`--set layers=2`).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// Override any run-configuration key (`--cfg optimizer.lr=3e-4 --cfg eval.every=100`).
    #[arg(long = "cfg", value_name = "KEY=VALUE")]
    cfg: Vec<String>,
    /// Optimizer steps in total (counting steps done before a resume).
    #[arg(long)]
    steps: Option<u64>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Sequences per micro-batch.
    #[arg(long)]
    batch: Option<usize>,
    /// Output folder: logs, TensorBoard events and `checkpoints/` (default `runs/<spec name>`).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Continue a run from a checkpoint folder (`<out>/checkpoints/last`, or the run folder).
    /// Without `--config`, the checkpoint's own run configuration is used.
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    /// Replace the earlier run in the output folder (its checkpoints, `metrics.jsonl` and
    /// TensorBoard events); without it, a fresh run there is refused.
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
    #[arg(long, value_enum)]
    device: Option<DeviceArg>,
    /// Seed of the weights, the data order and dropout.
    #[arg(long)]
    seed: Option<u64>,
    /// The model to train when the spec defines several (default: the first).
    #[arg(long)]
    model: Option<String>,
    /// Never draw the progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long)]
    no_progress: bool,
}

/// Renders diagnostics to stderr.
pub fn emit(diags: &[Diagnostic], sources: &SourceMap) {
    if !diags.is_empty() {
        eprint!("{}", tfm_diag::render::render(diags, sources, tfm_diag::render::Format::Human, stderr_color()));
    }
}

/// Renders one training error; configuration errors point into `config` when given.
pub fn emit_error(e: &TrainError, sources: &SourceMap, config: Option<FileId>) -> u8 {
    emit(&[e.to_diagnostic(config)], sources);
    FAILED
}

pub fn usage(message: &str, hint: &str) -> u8 {
    eprintln!("error: {message}");
    eprintln!("  = help: {hint}");
    USAGE
}

/// A checked model and the hash that ties checkpoints to it.
pub struct LoadedModel {
    pub model: tfm_ir::Model,
    pub hash: String,
}

/// Checks `spec` with the overrides and picks the model; diagnostics are rendered on failure.
pub fn load_model(spec: &Path, overrides: Vec<(String, String)>, model: Option<String>, sources: &mut SourceMap) -> Result<LoadedModel, u8> {
    if !spec.is_file() {
        return Err(usage(&format!("`{}` is not a spec file", spec.display()), "pass the path of a `.tfm` file"));
    }
    let checked = check_file(spec, &CheckOptions { overrides, model }, sources);
    emit(&checked.diagnostics, sources);
    if checked.diagnostics.iter().any(|d| d.is_error()) {
        return Err(FAILED);
    }
    let Some(first) = checked.models.into_iter().next() else {
        return Err(usage(&format!("`{}` defines no model", spec.display()), "a spec needs a `model name { ... }`"));
    };
    let hash = checkpoint::spec_hash(&tfm_elab::dump_model(&first.model));
    Ok(LoadedModel { model: first.model, hash })
}

/// For `tfm eval` and `tfm generate`: applies `--set` overrides to the checkpoint's run
/// configuration, checks the spec, and refuses a checkpoint trained from another model.
pub fn load_checkpointed_model(
    cfg: &mut RunConfig,
    extra: &[(String, String)],
    model: Option<String>,
    ck: &Checkpoint,
    sources: &mut SourceMap,
) -> Result<LoadedModel, u8> {
    for (k, v) in extra {
        cfg.set_key(&format!("set.{k}"), v).map_err(|e| emit_error(&TrainError::Config(e), sources, None))?;
    }
    let loaded = load_model(&cfg.spec, cfg.set_strings(), model, sources)?;
    ck.check_spec_hash(&loaded.hash).map_err(|e| emit_error(&e, sources, None))?;
    Ok(loaded)
}

/// An integer parameter of the model (`vocab`, `context`), if it has one.
pub fn int_param(model: &tfm_ir::Model, name: &str) -> Option<usize> {
    model.params.iter().find(|(n, _)| n == name).and_then(|(_, v)| match v {
        tfm_ir::ConstValue::Int(i) => usize::try_from(*i).ok(),
        _ => None,
    })
}

/// Checks that the data's tokens fit the model's embedding (when it declares `vocab`).
pub fn check_vocab(model: &tfm_ir::Model, data: &dyn DataSource) -> Result<(), TrainError> {
    match int_param(model, "vocab") {
        Some(v) => data.tokenizer().check_model_vocab(v),
        None => Ok(()),
    }
}

/// The checkpoint file a folder argument names: the folder's own `model.safetensors`, or in a run
/// folder `checkpoints/<first of prefer>`, or `<first of prefer>/` directly.
pub fn resolve_checkpoint(dir: &Path, prefer: &[&str]) -> PathBuf {
    if dir.is_file() || dir.join(checkpoint::FILE_NAME).is_file() {
        return dir.to_path_buf();
    }
    for base in [dir.join("checkpoints"), dir.to_path_buf()] {
        for p in prefer {
            if base.join(p).join(checkpoint::FILE_NAME).is_file() {
                return base.join(p);
            }
        }
    }
    dir.to_path_buf()
}

/// Reads a checkpoint; errors are rendered.
pub fn read_checkpoint(dir: &Path, prefer: &[&str], sources: &SourceMap) -> Result<Checkpoint, u8> {
    Checkpoint::read(&resolve_checkpoint(dir, prefer)).map_err(|e| emit_error(&e, sources, None))
}

/// The run configuration stored in a checkpoint.
pub fn checkpoint_config(ck: &Checkpoint, sources: &SourceMap) -> Result<RunConfig, u8> {
    RunConfig::from_yaml_str(&ck.meta.config_yaml).map_err(|e| {
        let err = TrainError::Checkpoint {
            path: ck.path.clone(),
            message: format!("its run configuration cannot be read: {e}"),
            hint: Some("the checkpoint was written by another version of tfm".into()),
        };
        emit_error(&err, sources, None)
    })
}

/// `examples/../runs/x` -> `runs/x`: removes `.` and `name/..` pairs without touching the disk.
pub fn tidy(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.is_empty() {
        PathBuf::from(".")
    } else {
        out.iter().collect()
    }
}

/// Tidies the paths a configuration file's folder was joined to.
fn tidy_paths(c: &mut RunConfig) {
    c.spec = tidy(&c.spec);
    for p in [&mut c.data.path, &mut c.logging.dir, &mut c.checkpoints.dir].into_iter().flatten() {
        *p = tidy(p);
    }
}

/// Points the data at a file or a task (flags of train and eval).
pub fn set_data(cfg: &mut RunConfig, data: Option<&Path>, task: Option<TaskArg>) {
    if let Some(p) = data {
        cfg.data.path = Some(p.to_path_buf());
        // A task that reads a file keeps reading it from the new path.
        if cfg.data.task.is_none_or(|t| !t.needs_path()) {
            cfg.data.task = None;
            cfg.data.tokenizer = None;
        }
    }
    match task.map(TaskKind::from) {
        Some(TaskKind::Addition) => {
            cfg.data.path = None;
            cfg.data.task = Some(TaskKind::Addition);
        }
        Some(t) => cfg.data.task = Some(t),
        None => {}
    }
}

/// `1h 02m`, `3m 07s`, `12.3s`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m {:02}s", (s / 60.0) as u64, (s as u64) % 60)
    } else {
        format!("{}h {:02}m", (s / 3600.0) as u64, ((s as u64) / 60) % 60)
    }
}

/// Exact match of a model on the addition task's held-out problems, and `samples` answers.
pub struct AdditionReport {
    pub correct: usize,
    pub total: usize,
    /// (prompt, model answer, correct answer), answers in normal digit order.
    pub samples: Vec<(String, String, String)>,
}

/// Greedy answers to the held-out problems, scored by exact match.
pub fn addition_report<D: Backend>(rt: &Runtime<D>, store: &ParamStore<D>, task: &AdditionTask, samples: usize) -> Result<AdditionReport, TrainError> {
    let context = task.example_len() - 1;
    let answer_len = task.digits + 1;
    let em = task.evaluate(250, None, |prompts| greedy_generate(rt, store, prompts, answer_len, context))?;
    let shown: Vec<(u64, u64)> = task.test.iter().take(samples).copied().collect();
    let prompts: Vec<Vec<u32>> = shown.iter().map(|&(a, b)| task.tokenizer.encode(&task.prompt(a, b))).collect::<Result<_, _>>()?;
    let outs = greedy_generate(rt, store, &prompts, answer_len, context)?;
    let unreverse = |s: String| s.chars().rev().collect::<String>();
    let samples = shown
        .iter()
        .zip(outs)
        .map(|(&(a, b), out)| {
            let said = unreverse(task.tokenizer.decode(&out).replace('\n', "⏎"));
            (task.prompt(a, b), said, unreverse(task.answer(a, b)))
        })
        .collect();
    Ok(AdditionReport { correct: em.correct, total: em.total, samples })
}

/// Prints an addition report to stdout.
pub fn print_addition(r: &AdditionReport) {
    let pct = if r.total == 0 { 0.0 } else { 100.0 * r.correct as f64 / r.total as f64 };
    println!("exact match     {pct:.1}% ({}/{} held-out problems)", r.correct, r.total);
    if r.samples.is_empty() {
        return;
    }
    println!("sample answers (the model writes the sum least significant digit first; shown in normal order):");
    let w = r.samples.iter().map(|s| s.0.chars().count()).max().unwrap_or(0);
    println!("  {:w$}  {:>8}  {:>8}", "prompt", "model", "correct");
    for (prompt, said, want) in &r.samples {
        let mark = if said == want { "ok" } else { "WRONG" };
        println!("  {prompt:w$}  {said:>8}  {want:>8}  {mark}");
    }
}

/// Prints evaluations (and every tenth of the run) as lines when no progress bar is drawn.
struct Lines {
    total: u64,
    every: u64,
    /// Throughput label: `tok` for tokens, else the data's unit (`images`, `examples`).
    unit: &'static str,
}

impl Observer for Lines {
    fn on_start(&mut self, start: u64, total: u64) {
        self.total = total;
        self.every = (total / 10).max(1);
        if start > 0 {
            eprintln!("resuming at step {start}/{total}");
        }
    }
    fn on_step(&mut self, s: &StepStats) {
        if (s.step + 1).is_multiple_of(self.every) {
            eprintln!(
                "step {:>6}/{}  loss {:.4}  lr {:.2e}  {:.0} {}/s",
                s.step + 1,
                self.total,
                s.loss,
                s.lr,
                s.tokens_per_sec,
                self.unit
            );
        }
    }
    fn on_eval(&mut self, e: &EvalStats) {
        let best = if e.best { "  (best)" } else { "" };
        eprintln!("step {:>6}/{}  val loss {:.4}{best}", e.step, self.total, e.val_loss);
    }
    fn on_warning(&mut self, m: &str) {
        eprintln!("warning: {m}");
    }
}

/// Reports warnings when the progress bar is drawn.
struct Quiet;
impl Observer for Quiet {
    fn on_warning(&mut self, m: &str) {
        eprintln!("warning: {m}");
    }
}

struct TrainJob {
    model: tfm_ir::Model,
    hash: String,
    cfg: RunConfig,
    data: Dataset,
    resume: Option<Checkpoint>,
    progress: bool,
    sources: SourceMap,
}

impl DeviceJob for TrainJob {
    fn run<D: AnyPrecision>(self, dev: D) -> u8 {
        let TrainJob { model, hash, cfg, data, resume, progress, sources } = self;
        let name = model.name.clone();
        let context = data.fixed_context().unwrap_or(cfg.context);
        if let Some((free, total)) = dev.memory_info() {
            // a run that cannot fit stops here with what to change, not at its first allocation
            let opts = tfm_summary::SummaryOptions { batch: cfg.batch_size as u64, seq: context as u64 };
            let t = tfm_summary::summarize(&model, &opts).totals;
            let half = cfg.precision == tfm_train::config::Precision::F16;
            let (fixed, activations) = tfm_runtime::device::training_memory(t.weight_bytes, t.gradient_bytes, t.optimizer_bytes, t.activation_bytes, half);
            if let Err(msg) = tfm_runtime::device::check_fits(fixed, activations, free, total, cfg.batch_size, context) {
                return emit_error(&TrainError::Model(msg), &sources, None);
            }
        }
        let rt = match Runtime::new(model, dev) {
            Ok(rt) => rt,
            Err(e) => return emit_error(&TrainError::Model(e.to_string()), &sources, None),
        };
        let mut store = rt.init_params(cfg.seed);
        if let (Some(from), None) = (&cfg.init_from, &resume) {
            if let Err(e) = init_from(&mut store, from, &data) {
                return emit_error(&e, &sources, None);
            }
        }
        let mut obs = match logging::standard(&cfg, progress) {
            Ok(o) => o,
            Err(e) => return emit_error(&e, &sources, None),
        };
        if progress {
            obs.0.push(Box::new(Quiet));
        } else {
            let unit = match data.unit() {
                "tokens" => "tok",
                u => u,
            };
            obs.0.push(Box::new(Lines { total: 0, every: 1, unit }));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        // A first Ctrl-C asks the loop to checkpoint and stop; a second one quits at once.
        let _ = ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                std::process::exit(i32::from(INTERRUPTED));
            }
            eprintln!("\ninterrupted: writing a checkpoint and stopping (Ctrl-C again to quit at once)");
        });
        let params: usize = store.params.iter().map(|p| p.shape.iter().product::<usize>()).sum();
        eprintln!(
            "training `{name}` ({params} parameters) for {} steps: batch {}, lr {:.2e}, {}{}",
            cfg.steps,
            batch_shape(&data, cfg.batch_size * cfg.accumulation, context),
            cfg.optimizer.lr,
            match cfg.device {
                tfm_train::config::DeviceKind::Cpu => "cpu",
                tfm_train::config::DeviceKind::Cuda => "cuda",
            },
            match cfg.precision {
                tfm_train::config::Precision::F32 => String::new(),
                p => format!(", {}", p.name()),
            }
        );
        if cfg.precision == tfm_train::config::Precision::F16 && cfg.device == tfm_train::config::DeviceKind::Cpu {
            eprintln!("note: mixed precision on the CPU runs dfdx's own kernels, not the fused f32 ones, and is about ten times slower here; it pays on a GPU");
        }
        let started = Instant::now();
        let report = match train(&rt, &mut store, &cfg, &data, TrainOptions { spec_hash: hash, resume }, &mut obs, stop) {
            Ok(r) => r,
            Err(e) => return emit_error(&e, &sources, None),
        };
        drop(obs);
        let elapsed = started.elapsed();
        let steps_run = report.step - report.start_step;
        let unit = data.unit();
        // Tokens, images or examples trained on in this run, as the loop counted them.
        let tokens = report.units as f64;
        if report.interrupted {
            println!("interrupted at step {}/{} after {}", report.step, cfg.steps, duration(elapsed));
        } else {
            println!("trained `{name}` for {} steps in {}", cfg.steps, duration(elapsed));
        }
        if let Some(l) = report.losses.last() {
            println!("final train loss {l:.4}");
        }
        if let Some(v) = report.final_val_loss {
            let best = report.best_val_loss.map(|b| format!(" (best {b:.4})")).unwrap_or_default();
            println!("final val loss   {v:.4}{best}");
        }
        println!("steps            {} (this run: {steps_run})", report.step);
        if steps_run > 0 {
            println!("throughput       {:.0} {unit}/s", tokens / elapsed.as_secs_f64().max(1e-9));
        }
        if let Some(p) = &report.last_checkpoint {
            println!("last checkpoint  {}", p.display());
        }
        if let Some(p) = &report.best_checkpoint {
            println!("best checkpoint  {}", p.display());
        }
        println!("logs             {} (TensorBoard events, metrics.jsonl)", cfg.log_dir().display());
        if let Dataset::Addition(task) = &data {
            let t = Instant::now();
            match addition_report(&rt, &store, task, 6) {
                Ok(r) => {
                    print_addition(&r);
                    eprintln!("(exact match measured in {})", duration(t.elapsed()));
                }
                Err(e) => return emit_error(&e, &sources, None),
            }
        }
        if let (Dataset::Task(task), false) = (&data, report.interrupted) {
            let t = Instant::now();
            match tfm_train::evaluate::evaluate_task(&rt, &store, task, &eval_options(&cfg, context, 0)) {
                Ok(m) => {
                    print!("{m}");
                    eprintln!("(test metrics measured in {})", duration(t.elapsed()));
                }
                Err(e) => return emit_error(&e, &sources, None),
            }
        }
        if report.interrupted {
            if let Some(p) = &report.last_checkpoint {
                let dir = p.parent().unwrap_or(p);
                println!("continue with   --resume {}", dir.display());
            }
            INTERRUPTED
        } else {
            OK
        }
    }
}

/// `12 x 64 tokens` for token windows, `128 images` or `32 examples (at most 128 tokens)` for tasks.
pub fn batch_shape(data: &Dataset, batch: usize, context: usize) -> String {
    match data.task().map(|t| &t.body) {
        None | Some(tfm_train::tasks::TaskBody::MaskedLm { .. }) => format!("{batch} x {context} tokens"),
        Some(tfm_train::tasks::TaskBody::Images { .. } | tfm_train::tasks::TaskBody::ImageText { .. }) => format!("{batch} images"),
        Some(_) => format!("{batch} examples of at most {context} tokens"),
    }
}

/// Evaluation settings from the run configuration (`beam`: 0 for greedy decoding only).
pub fn eval_options(cfg: &RunConfig, context: usize, beam: usize) -> tfm_train::evaluate::EvalOptions {
    tfm_train::evaluate::EvalOptions {
        batch: cfg.batch_size.max(64),
        beam,
        alpha: 0.6,
        limit: 0,
        context,
        mlm_batches: cfg.eval.batches.max(1),
        seed: cfg.seed,
    }
}

/// `model` on `dev` with every weight from `ck` (the initialisation is overwritten); errors are
/// rendered.
pub fn restored<D: Backend>(model: tfm_ir::Model, dev: D, ck: &Checkpoint, sources: &SourceMap) -> Result<(Runtime<D>, ParamStore<D>), u8> {
    let rt = Runtime::new(model, dev).map_err(|e| emit_error(&TrainError::Model(e.to_string()), sources, None))?;
    let mut store = rt.init_params(0);
    ck.restore(&mut store, None).map_err(|e| emit_error(&e, sources, None))?;
    Ok((rt, store))
}

/// Loads the weights of another spec's checkpoint by name and reports what was loaded.
fn init_from<D: Backend>(store: &mut ParamStore<D>, from: &Path, data: &Dataset) -> Result<(), TrainError> {
    let ck = Checkpoint::read(&resolve_checkpoint(from, &["best", "last"]))?;
    ck.meta.tokenizer.check_same(data.tokenizer())?;
    let report = checkpoint::load_by_name(store, &ck, &[])?;
    eprintln!("initialised from {} (step {}):\n{report}", ck.path.display(), ck.meta.step);
    Ok(())
}

pub fn run(args: TrainArgs) -> u8 {
    let mut sources = SourceMap::new();
    let spec_overrides = match parse_overrides(&args.set) {
        Ok(o) => o,
        Err(e) => return usage(&e, "write `--set layers=4`"),
    };
    let cfg_overrides = match parse_overrides(&args.cfg) {
        Ok(o) => o,
        Err(e) => return usage(&e.replace("--set", "--cfg"), "write `--cfg optimizer.lr=3e-4`"),
    };

    // The checkpoint to resume from, read first: without `--config` its configuration is the base.
    let resume = match &args.resume {
        Some(dir) => match read_checkpoint(dir, &["last", "best"], &sources) {
            Ok(ck) => Some(ck),
            Err(code) => return code,
        },
        None => None,
    };

    // 1. The base configuration: the file, the checkpoint's, or the defaults.
    let mut config_file: Option<FileId> = None;
    // Whether the training context was chosen; if not, it follows the model's `context`.
    let mut context_given = resume.is_some() || cfg_overrides.iter().any(|(k, _)| k == "context");
    let mut cfg = if let Some(path) = &args.config {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                return usage(
                    &format!("cannot read config `{}`: {}", path.display(), e.to_string().to_lowercase()),
                    "check the path of the run configuration",
                )
            }
        };
        context_given |= serde_yaml::from_str::<serde_yaml::Value>(&text)
            .ok()
            .is_some_and(|v| v.get("context").is_some());
        let id = sources.add(path.display().to_string(), text.clone());
        config_file = Some(id);
        match RunConfig::from_yaml_str(&text) {
            Ok(mut c) => {
                if let Some(base) = path.parent() {
                    c.rebase(base);
                    tidy_paths(&mut c);
                }
                c
            }
            Err(e) => return emit_error(&TrainError::Config(e), &sources, config_file),
        }
    } else if let Some(ck) = &resume {
        match checkpoint_config(ck, &sources) {
            Ok(c) => c,
            Err(code) => return code,
        }
    } else {
        if args.data.is_none() && args.task.is_none() {
            return usage(
                "no training data: expected `--data PATH`, `--task addition` or `--config RUN.yaml`",
                "for example `tfm train spec.tfm --data corpus.txt`",
            );
        }
        if args.data.is_none() && args.task.is_some_and(|t| TaskKind::from(t).needs_path()) {
            return usage("this task reads a data file: expected `--data PATH`", "for example `--task classify --data messages.tsv`");
        }
        let mut c = RunConfig::new(&args.spec, "");
        c.data.path = None;
        c.data.task = Some(TaskKind::Addition);
        c
    };

    // 2. Flags override the file.
    cfg.spec = args.spec.clone();
    set_data(&mut cfg, args.data.as_deref(), args.task);
    if let Some(s) = args.steps {
        cfg.steps = s;
    }
    if let Some(lr) = args.lr {
        cfg.optimizer.lr = lr;
    }
    if let Some(b) = args.batch {
        cfg.batch_size = b;
    }
    if let Some(s) = args.seed {
        cfg.seed = s;
    }
    if let Some(d) = args.device {
        cfg.device = d.into();
    }
    if let Some(out) = &args.out {
        cfg.logging.dir = Some(out.clone());
        cfg.checkpoints.dir = Some(out.join("checkpoints"));
    }
    for (k, v) in &spec_overrides {
        if let Err(e) = cfg.set_key(&format!("set.{k}"), v) {
            return emit_error(&TrainError::Config(e), &sources, None);
        }
    }
    if let Err(e) = cfg.merge(&cfg_overrides) {
        return emit_error(&TrainError::Config(e), &sources, None);
    }
    if let Err(e) = cfg.validate() {
        return emit_error(&TrainError::Config(e), &sources, config_file);
    }

    // A fresh run never silently replaces an earlier one's checkpoints and logs.
    let (log_dir, ck_dir) = (cfg.log_dir(), cfg.checkpoint_dir());
    if resume.is_none() {
        if let Err(e) = tfm_train::checkpoint::check_fresh_run(&log_dir, &ck_dir, args.overwrite) {
            return emit_error(&e, &sources, None);
        }
    }

    // 3. The model, checked with the `set` overrides.
    let loaded = match load_model(&cfg.spec, cfg.set_strings(), args.model.clone(), &mut sources) {
        Ok(l) => l,
        Err(code) => return code,
    };
    // 4. The data, and a context that fits the model.
    let mut data = match Dataset::load(&cfg) {
        Ok(d) => d,
        Err(e) => return emit_error(&e, &sources, config_file),
    };
    if let Err(e) = data.bind(&loaded.model) {
        return emit_error(&e, &sources, None);
    }
    if let Some(model_ctx) = int_param(&loaded.model, "context") {
        if !context_given && data.fixed_context().is_none() {
            cfg.context = model_ctx;
        }
        let context = data.fixed_context().unwrap_or(cfg.context);
        if context > model_ctx {
            let what = if data.fixed_context().is_some() { "the task's examples need" } else { "found" };
            let d = Diagnostic::error(
                "E0801",
                format!("expected a training context of at most {model_ctx} tokens (the model's `context`), {what} {context}"),
            )
            .hint(format!("set `context: {model_ctx}` in the run configuration, or raise the model's with `--set context={context}`"));
            emit(&[d], &sources);
            return FAILED;
        }
    }
    if let Err(e) = check_vocab(&loaded.model, &data) {
        return emit_error(&e, &sources, None);
    }
    if let Some(ck) = &resume {
        // Checked here too, so the error comes before any device work.
        if let Err(e) = ck.check_spec_hash(&loaded.hash).and_then(|_| ck.meta.tokenizer.check_same(data.tokenizer())) {
            return emit_error(&e, &sources, None);
        }
    }

    if args.overwrite {
        // only now that everything has been checked
        if let Err(e) = tfm_train::checkpoint::clear_earlier_run(&log_dir, &ck_dir) {
            return emit_error(&e, &sources, None);
        }
    }

    let progress = !args.no_progress && std::io::stderr().is_terminal();
    let device = cfg.device;
    let seed = cfg.seed;
    dispatch(
        device,
        seed,
        TrainJob { model: loaded.model, hash: loaded.hash, cfg, data, resume, progress, sources },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tidy_removes_dots_and_name_parent_pairs_only() {
        assert_eq!(tidy(Path::new("examples/../runs/x")), PathBuf::from("runs/x"));
        assert_eq!(tidy(Path::new("examples/../../shared/data/t.txt")), PathBuf::from("../shared/data/t.txt"));
        assert_eq!(tidy(Path::new("./a/./b")), PathBuf::from("a/b"));
        assert_eq!(tidy(Path::new("/a/b/../c")), PathBuf::from("/a/c"));
        assert_eq!(tidy(Path::new("a/..")), PathBuf::from("."));
    }

    #[test]
    fn a_checkpoint_folder_a_run_folder_and_a_file_all_resolve() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let best = tmp.path().join("checkpoints/best");
        let last = tmp.path().join("checkpoints/last");
        for d in [&best, &last] {
            std::fs::create_dir_all(d).expect("mkdir");
            std::fs::write(d.join(checkpoint::FILE_NAME), b"x").expect("write");
        }
        assert_eq!(resolve_checkpoint(tmp.path(), &["best", "last"]), best);
        assert_eq!(resolve_checkpoint(tmp.path(), &["last", "best"]), last);
        assert_eq!(resolve_checkpoint(&tmp.path().join("checkpoints"), &["last"]), last);
        assert_eq!(resolve_checkpoint(&best, &["last"]), best);
        let file = best.join(checkpoint::FILE_NAME);
        assert_eq!(resolve_checkpoint(&file, &["last"]), file);
    }
}
