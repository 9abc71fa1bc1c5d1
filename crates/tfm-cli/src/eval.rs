//! `tfm eval`: loss and perplexity of a checkpoint on the validation split (and exact match on
//! the addition task's held-out problems), after checking that the checkpoint belongs to the
//! spec and the data's vocabulary.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use tfm_diag::SourceMap;
use tfm_runtime::AnyPrecision;
use tfm_train::trainer::evaluate;
use tfm_train::{Checkpoint, DataSource, Dataset, RunConfig};

use crate::common::parse_overrides;
use crate::device::{dispatch, DeviceArg, DeviceJob};
use crate::train::{
    addition_report, batch_shape, check_vocab, checkpoint_config, duration, emit_error, eval_options, load_checkpointed_model, print_addition, read_checkpoint, restored, set_data, usage,
    TaskArg, OK,
};

#[derive(Args)]
#[command(after_help = "The data, the `set` overrides and the seed default to those the checkpoint was trained with.\n\
Exit codes: 0 done, 1 error (wrong spec, damaged checkpoint, vocabulary mismatch, ...), 2 usage error.")]
pub struct EvalArgs {
    /// The model spec the checkpoint was trained with.
    spec: PathBuf,
    /// A checkpoint folder (`runs/x/checkpoints/best`) or a run folder (`runs/x`: its best checkpoint).
    #[arg(long, value_name = "DIR")]
    checkpoint: PathBuf,
    /// Evaluate on this corpus (its last `val_fraction` is the validation split), or on the
    /// test split of this file for a task.
    #[arg(long, value_name = "PATH")]
    data: Option<PathBuf>,
    /// Evaluate on a task.
    #[arg(long, value_enum)]
    task: Option<TaskArg>,
    /// Translation: beam width for BLEU (besides greedy decoding); 0 or 1 for greedy only.
    #[arg(long, default_value_t = 4)]
    beam: usize,
    /// Task metrics on at most this many held-out examples (0: all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// Validation batches to average (default: the run's `eval.batches`).
    #[arg(long)]
    batches: Option<usize>,
    /// Override a model parameter (on top of the checkpoint's own overrides).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    #[arg(long)]
    model: Option<String>,
    #[arg(long, value_enum)]
    device: Option<DeviceArg>,
}

struct EvalJob {
    model: tfm_ir::Model,
    cfg: RunConfig,
    data: Dataset,
    ck: Checkpoint,
    sources: SourceMap,
    beam: usize,
    limit: usize,
}

impl DeviceJob for EvalJob {
    fn run<D: AnyPrecision>(self, dev: D) -> u8 {
        let EvalJob { model, cfg, data, ck, sources, beam, limit } = self;
        let (rt, store) = match restored(model, dev, &ck, &sources) {
            Ok(x) => x,
            Err(code) => return code,
        };
        let context = data.fixed_context().unwrap_or(cfg.context);
        if let Err(e) = data.check_context(context, true) {
            return emit_error(&e, &sources, None);
        }
        let started = Instant::now();
        let loss = match evaluate(&rt, &store, &data, &cfg, context) {
            Ok(l) => l,
            Err(e) => return emit_error(&e, &sources, None),
        };
        println!("checkpoint      {} (step {})", ck.path.display(), ck.meta.step);
        println!(
            "val loss        {loss:.4} ({} batches of {})",
            cfg.eval.batches,
            batch_shape(&data, cfg.batch_size, context)
        );
        println!("perplexity      {:.4}", f64::from(loss).exp());
        if let Dataset::Addition(task) = &data {
            match addition_report(&rt, &store, task, 6) {
                Ok(r) => print_addition(&r),
                Err(e) => return emit_error(&e, &sources, None),
            }
        }
        if let Dataset::Task(task) = &data {
            let mut opts = eval_options(&cfg, context, beam);
            opts.limit = limit;
            match tfm_train::evaluate::evaluate_task(&rt, &store, task, &opts) {
                Ok(m) => print!("{m}"),
                Err(e) => return emit_error(&e, &sources, None),
            }
        }
        eprintln!("evaluated in {}", duration(started.elapsed()));
        OK
    }
}

pub fn run(args: EvalArgs) -> u8 {
    let mut sources = SourceMap::new();
    let extra = match parse_overrides(&args.set) {
        Ok(o) => o,
        Err(e) => return usage(&e, "write `--set layers=4`"),
    };
    let ck = match read_checkpoint(&args.checkpoint, &["best", "last"], &sources) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut cfg = match checkpoint_config(&ck, &sources) {
        Ok(c) => c,
        Err(code) => return code,
    };
    cfg.spec = args.spec.clone();
    set_data(&mut cfg, args.data.as_deref(), args.task);
    if let Some(d) = args.device {
        cfg.device = d.into();
    }
    if let Some(b) = args.batches {
        if b == 0 {
            return usage("`--batches` must be at least 1, found 0", "pass `--batches 20`");
        }
        cfg.eval.batches = b;
    }
    cfg.eval.batches = cfg.eval.batches.max(1);
    let loaded = match load_checkpointed_model(&mut cfg, &extra, args.model.clone(), &ck, &mut sources) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let mut data = match Dataset::load(&cfg) {
        Ok(d) => d,
        Err(e) => return emit_error(&e, &sources, None),
    };
    if let Err(e) = data.bind(&loaded.model) {
        return emit_error(&e, &sources, None);
    }
    if let Err(e) = ck.meta.tokenizer.check_same(data.tokenizer()).and_then(|_| check_vocab(&loaded.model, &data)) {
        return emit_error(&e, &sources, None);
    }
    let device = cfg.device;
    let seed = cfg.seed;
    dispatch(device, seed, EvalJob { model: loaded.model, cfg, data, ck, sources, beam: args.beam, limit: args.limit })
}
