//! The `tfm-bench` binary: builds a model (a GPT, a ViT or an encoder-decoder) from a `.tfm`
//! spec, times training steps on the CPU (or, built with `--features cuda`, on a GPU) and prints
//! one JSON line of results (the same fields as `bench/torch_gpt.py` and `bench/torch_models.py`).

mod step;

use clap::Parser;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;
use dfdx::prelude::Cpu;
use tfm_bench::{all_names, bench, peak_rss_mib, stats, Bench, ParamCount};
use tfm_runtime::{profile, Backend};
use tfm_diag::SourceMap;
use tfm_elab::{check_file, CheckOptions};

/// Failed `expect` statements: expected when `--set` resizes the model, so not fatal here.
const EXPECTATION_FAILED: &str = "E0302";

/// Times training steps of a tfm model (forward, backward, AdamW update).
#[derive(Parser, Debug)]
#[command(name = "tfm-bench")]
struct Args {
    /// Named configuration: nanogpt-cpu, medium-cpu, gpt2 (GPTs), vit-mnist (ViT) or
    /// seq2seq-small (encoder-decoder).
    #[arg(long, default_value = "nanogpt-cpu")]
    config: String,
    /// The spec to build (default: the configuration's own, e.g. examples/shakespeare_char.tfm).
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Which model of the spec file, where it has several.
    #[arg(long)]
    model: Option<String>,
    /// Batch size (overrides the configuration's).
    #[arg(long)]
    batch: Option<usize>,
    /// Untimed steps before timing.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 0.1)]
    weight_decay: f64,
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// Worker threads (rayon pool), where the runtime uses one.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// The machine's peak GFLOP/s, for the share-of-peak field.
    #[arg(long)]
    peak_gflops: Option<f64>,
    /// Where the steps run.
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    device: DeviceArg,
    /// Run the device-generic dfdx path instead of the device's fused kernels (the path a device
    /// without its own kernels takes).
    #[arg(long)]
    generic: bool,
}

/// `--device`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum DeviceArg {
    Cpu,
    Cuda,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<String, String> {
    let Some(mut cfg) = bench(&args.config) else {
        return Err(format!(
            "expected a configuration name, found `{}`; hint: use one of {}",
            args.config,
            all_names().join(", ")
        ));
    };
    if let Some(b) = args.batch {
        cfg.set_batch(b);
    }
    let spec = args.spec.clone().unwrap_or_else(|| PathBuf::from(cfg.default_spec()));
    if args.steps == 0 {
        return Err("expected at least one timed step, found `--steps 0`".into());
    }
    // The rayon pool may already exist if a dependency built it; that is not an error here.
    std::env::set_var("RAYON_NUM_THREADS", args.threads.to_string());

    if !spec.is_file() {
        return Err(format!(
            "expected a spec file, found no file at `{}`; hint: run from the repository root or pass --spec",
            spec.display()
        ));
    }
    let opts = CheckOptions { overrides: cfg.overrides(), model: args.model.clone() };
    let mut sources = SourceMap::new();
    let t_check = Instant::now();
    let checked = check_file(&spec, &opts, &mut sources);
    let check_s = t_check.elapsed().as_secs_f64();
    let errors: Vec<String> = checked
        .diagnostics
        .iter()
        .filter(|d| d.is_error() && d.code != EXPECTATION_FAILED)
        .map(|d| format!("{}: {}", d.code, d.message))
        .collect();
    if !errors.is_empty() {
        return Err(format!("the spec did not check:\n  {}", errors.join("\n  ")));
    }
    let Some(checked_model) = checked.models.into_iter().next() else {
        return Err(format!(
            "expected a model in `{}`, found none; hint: pass --model NAME",
            spec.display()
        ));
    };
    let model = checked_model.model;

    let expected = cfg.params();
    let mut spec_params = 0u64;
    model.graph.for_each_param("", &mut |_, p| {
        if p.kind == tfm_ir::ParamKind::Trainable {
            spec_params += p.numel();
        }
    });

    let built = Built { cfg, spec, model, spec_params, expected, check_s };
    match args.device {
        DeviceArg::Cpu => time_steps(args, &built, Cpu::seed_from_u64(args.seed)),
        #[cfg(feature = "cuda")]
        DeviceArg::Cuda => time_steps(args, &built, tfm_runtime::device::cuda_device(args.seed)?),
        #[cfg(not(feature = "cuda"))]
        DeviceArg::Cuda => Err("this tfm-bench was built without CUDA support; rebuild with `--features cuda`".into()),
    }
}

/// The checked model and what the report says about it.
struct Built {
    cfg: Bench,
    spec: PathBuf,
    model: tfm_ir::Model,
    spec_params: u64,
    expected: ParamCount,
    check_s: f64,
}

/// Times the warm-up and the timed steps on `dev` and returns the JSON report.
fn time_steps<D: Backend>(args: &Args, built: &Built, dev: D) -> Result<String, String> {
    let Built { cfg, spec, model, spec_params, expected, check_s } = built;
    let hp = step::Hyper { lr: args.lr, weight_decay: args.weight_decay, seed: args.seed, fused: !args.generic };
    let mut trainer = step::Trainer::new(model, cfg, hp, dev)?;
    if trainer.num_params() as u64 != expected.total {
        return Err(format!(
            "expected {} parameters for configuration `{}`, found {} in the built model; the \
             models would not be identical",
            expected.total,
            args.config,
            trainer.num_params()
        ));
    }

    let t_warm = Instant::now();
    let mut first_loss = None;
    for i in 0..args.warmup {
        let loss = trainer.step(i)?;
        first_loss.get_or_insert(loss);
    }
    let warmup_s = t_warm.elapsed().as_secs_f64();
    profile::take();

    let mut times = Vec::with_capacity(args.steps);
    let mut last_loss = f32::NAN;
    for i in 0..args.steps {
        let t0 = Instant::now();
        last_loss = trainer.step(args.warmup + i)?;
        times.push(t0.elapsed().as_secs_f64());
    }
    if first_loss.is_none() {
        first_loss = Some(last_loss);
    }
    let st = stats(&times).ok_or("no timed steps")?;
    if profile::enabled() {
        let rows = profile::take();
        let total: f64 = rows.iter().map(|r| r.1).sum();
        eprintln!("profile: {} timed steps, device synchronised around every op; ms per step", args.steps);
        for (what, secs, calls) in rows {
            eprintln!("{:>10.2} ms {:>5.1}% {:>6} calls  {what}", secs * 1e3 / args.steps as f64, 100.0 * secs / total, calls / args.steps as u64);
        }
    }
    let flops = cfg.flops_per_step();
    let gflops = flops / st.median / 1e9;
    let items_per_s = cfg.items_per_step() as f64 / st.median;

    let mut out = json!({
        "side": "tfm",
        "family": cfg.kind(),
        "config": args.config,
        "spec": spec.display().to_string(),
        "device": match args.device { DeviceArg::Cpu => "cpu", DeviceArg::Cuda => "cuda" },
        "dtype": "fp32",
        "threads": args.threads,
        "kernels": if args.generic { "generic" } else { "fused" },
        "params": trainer.num_params(),
        "spec_params": spec_params,
        "check_ms": check_s * 1e3,
        "warmup": args.warmup,
        "steps": args.steps,
        "warmup_s": warmup_s,
        "ms_per_step": st.median * 1e3,
        "ms_per_step_mean": st.mean * 1e3,
        "ms_per_step_min": st.min * 1e3,
        "unit": cfg.unit(),
        "items_per_s": items_per_s,
        "flops_per_step": flops,
        "gflops": gflops,
        "first_loss": first_loss,
        "last_loss": last_loss,
        "peak_rss_mib": peak_rss_mib(),
        "gpu_mem_used_mib": trainer.device_memory_used_mib(),
        "loadavg_1m": loadavg_1m(),
    });
    if let Some(obj) = out.as_object_mut() {
        if let Some(fields) = cfg.fields().as_object() {
            for (k, v) in fields {
                obj.insert(k.clone(), v.clone());
            }
        }
        // The throughput under its own name as well: tokens_per_s (GPT, target tokens of the
        // encoder-decoder) or images_per_s (ViT).
        let named = if cfg.unit() == "images" { "images_per_s" } else { "tokens_per_s" };
        obj.insert(named.into(), json!(items_per_s));
        if let Some(peak) = args.peak_gflops {
            obj.insert("peak_gflops".into(), json!(peak));
            obj.insert("share_of_peak".into(), json!(gflops / peak));
        }
    }
    Ok(out.to_string())
}

/// The one-minute load average, where the platform reports it (to judge a shared machine).
fn loadavg_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}
