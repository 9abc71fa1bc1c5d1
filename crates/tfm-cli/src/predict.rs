//! `tfm predict`: classifies a text given on the command line with a classifier checkpoint; and
//! the translation path of `tfm generate` for encoder-decoder checkpoints. Both rebuild the
//! task's inputs from the checkpoint's own vocabulary and class names, without the data file.

use std::path::PathBuf;

use clap::Args;
use tfm_diag::SourceMap;
use tfm_runtime::AnyPrecision;
use tfm_train::config::TaskKind;
use tfm_train::tasks::TaskData;
use tfm_train::{Checkpoint, TrainError};

use crate::common::parse_overrides;
use crate::device::{dispatch, DeviceArg, DeviceJob};
use crate::train::{checkpoint_config, emit_error, int_param, load_checkpointed_model, read_checkpoint, restored, usage, FAILED, OK};

#[derive(Args)]
#[command(after_help = "Exit codes: 0 done, 1 error (wrong spec, damaged checkpoint, not a classifier, ...), 2 usage error.")]
pub struct PredictArgs {
    /// The classifier's spec.
    spec: PathBuf,
    /// A checkpoint folder or a run folder (its best checkpoint).
    #[arg(long, value_name = "DIR")]
    checkpoint: PathBuf,
    /// The text to classify.
    text: String,
    /// Override a model parameter (on top of the checkpoint's own overrides).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    #[arg(long)]
    model: Option<String>,
    #[arg(long, value_enum)]
    device: Option<DeviceArg>,
}

/// The checkpoint, its model and its task rebuilt for inference; errors are rendered.
pub struct Inference {
    pub model: tfm_ir::Model,
    pub ck: Checkpoint,
    pub task: TaskData,
    pub context: usize,
    pub sources: SourceMap,
}

/// Loads `checkpoint` for `spec` and checks that it was trained on `want`.
pub fn load_inference(
    spec: &PathBuf,
    checkpoint: &PathBuf,
    set: &[String],
    model: Option<String>,
    device: Option<DeviceArg>,
    want: &[TaskKind],
) -> Result<(Inference, tfm_train::config::DeviceKind), u8> {
    let mut sources = SourceMap::new();
    let extra = parse_overrides(set).map_err(|e| usage(&e, "write `--set layers=4`"))?;
    let ck = read_checkpoint(checkpoint, &["best", "last"], &sources)?;
    let mut cfg = checkpoint_config(&ck, &sources)?;
    cfg.spec = spec.clone();
    if let Some(d) = device {
        cfg.device = d.into();
    }
    let kind = cfg.data.task.filter(|k| want.contains(k)).ok_or_else(|| {
        let names: Vec<String> = want.iter().map(|k| format!("`{}`", k.name())).collect();
        let e = TrainError::data_hint(
            format!(
                "checkpoint `{}` was trained on {}, expected the {} task",
                ck.path.display(),
                cfg.data.task.map_or("a text corpus".to_string(), |t| format!("the `{}` task", t.name())),
                names.join(" or ")
            ),
            format!("pass the checkpoint of a model trained with `data.task: {}`; `tfm eval` reports this checkpoint's own metrics", want.first().map_or("", |k| k.name())),
        );
        emit_error(&e, &sources, None)
    })?;
    let loaded = load_checkpointed_model(&mut cfg, &extra, model, &ck, &mut sources)?;
    let mut task = TaskData::for_inference(kind, ck.meta.tokenizer.clone(), ck.meta.classes.clone()).map_err(|e| emit_error(&e, &sources, None))?;
    task.bind(&loaded.model).map_err(|e| emit_error(&e, &sources, None))?;
    let context = int_param(&loaded.model, "context").unwrap_or(cfg.context).min(cfg.context.max(1));
    let device = cfg.device;
    Ok((Inference { model: loaded.model, ck, task, context, sources }, device))
}

struct PredictJob {
    inf: Inference,
    text: String,
}

impl DeviceJob for PredictJob {
    fn run<D: AnyPrecision>(self, dev: D) -> u8 {
        let PredictJob { inf, text } = self;
        let Inference { model, ck, task, context, sources } = inf;
        let (rt, store) = match restored(model, dev, &ck, &sources) {
            Ok(x) => x,
            Err(code) => return code,
        };
        let inputs = match task.text_inputs(&text, context) {
            Ok(i) => i,
            Err(e) => return emit_error(&e, &sources, None),
        };
        let rows = match tfm_train::evaluate::class_logits(&rt, &store, &inputs) {
            Ok(r) => r,
            Err(e) => return emit_error(&e, &sources, None),
        };
        let Some(row) = rows.first() else {
            eprintln!("error: the model returned no logits");
            return FAILED;
        };
        let n = task.classes.len().min(row.len()).max(1);
        let probs: Vec<f32> = tfm_train::decode::log_softmax(&row[..n]).iter().map(|l| l.exp()).collect();
        let best = (0..n).max_by(|&a, &b| probs[a].total_cmp(&probs[b])).unwrap_or(0);
        let name = |i: usize| task.classes.get(i).cloned().unwrap_or_else(|| i.to_string());
        println!("{}", name(best));
        for (i, p) in probs.iter().enumerate() {
            eprintln!("  {:<12} {:.4}", name(i), p);
        }
        OK
    }
}

pub fn run(args: PredictArgs) -> u8 {
    if args.text.trim().is_empty() {
        return usage("expected a text to classify, found an empty one", "pass the message in quotes");
    }
    let (inf, device) = match load_inference(&args.spec, &args.checkpoint, &args.set, args.model.clone(), args.device, &[TaskKind::Classify]) {
        Ok(x) => x,
        Err(code) => return code,
    };
    dispatch(device, 0, PredictJob { inf, text: args.text })
}

struct TranslateJob {
    inf: Inference,
    text: String,
    beam: usize,
}

impl DeviceJob for TranslateJob {
    fn run<D: AnyPrecision>(self, dev: D) -> u8 {
        let TranslateJob { inf, text, beam } = self;
        let Inference { model, ck, task, context, sources } = inf;
        let (rt, store) = match restored(model, dev, &ck, &sources) {
            Ok(x) => x,
            Err(code) => return code,
        };
        let Some(v) = task.vocab() else {
            eprintln!("error: the checkpoint has no vocabulary");
            return FAILED;
        };
        let ids: Vec<u32> = v.encode(&text).into_iter().take(context.saturating_sub(1)).collect();
        let unknown = ids.iter().filter(|&&i| i == tfm_train::vocab::UNK).count();
        if unknown > 0 {
            eprintln!("note: {unknown} word(s) of the input are not in the vocabulary and read as [UNK]");
        }
        match tfm_train::translate::translate(&rt, &store, &task, &[ids], beam, 0.6, context.saturating_sub(1).max(1), 1) {
            Ok(out) => {
                println!("{}", v.decode(&out[0]));
                OK
            }
            Err(e) => emit_error(&e, &sources, None),
        }
    }
}

/// `tfm generate` on a translation checkpoint: translates `prompt` with beam search.
pub fn translate_prompt(inf: Inference, device: tfm_train::config::DeviceKind, text: String, beam: usize) -> u8 {
    dispatch(device, 0, TranslateJob { inf, text, beam })
}
