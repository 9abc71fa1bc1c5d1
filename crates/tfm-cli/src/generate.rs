//! `tfm generate`: continues a prompt with a trained checkpoint, sampling with temperature and
//! top-k (temperature 0 is greedy), using the checkpoint's own tokenizer.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use tfm_diag::SourceMap;
use tfm_runtime::{AnyPrecision, HostTensor};
use tfm_train::{Rng, TrainError, Tokenizer};

use crate::common::parse_overrides;
use crate::device::{dispatch, DeviceArg, DeviceJob};
use crate::train::{checkpoint_config, emit_error, int_param, load_checkpointed_model, read_checkpoint, restored, usage, FAILED, OK};

#[derive(Args)]
#[command(after_help = "Exit codes: 0 done, 1 error (wrong spec, damaged checkpoint, characters outside the vocabulary, ...), 2 usage error.")]
pub struct GenerateArgs {
    /// The model spec the checkpoint was trained with.
    spec: PathBuf,
    /// A checkpoint folder (`runs/x/checkpoints/best`) or a run folder (`runs/x`: its best checkpoint).
    #[arg(long, value_name = "DIR")]
    checkpoint: PathBuf,
    /// The text to continue.
    #[arg(long)]
    prompt: String,
    /// Tokens to generate.
    #[arg(long, default_value_t = 200)]
    tokens: usize,
    /// Sampling temperature; 0 picks the most likely token every time.
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    /// Sample only among the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// Translation checkpoints: the beam width (1 = greedy).
    #[arg(long, default_value_t = 4)]
    beam: usize,
    /// Override a model parameter (on top of the checkpoint's own overrides).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    #[arg(long)]
    model: Option<String>,
    #[arg(long, value_enum)]
    device: Option<DeviceArg>,
}

/// Picks the next token from `logits`: argmax at temperature 0, else a draw from the softmax of
/// `logits / temperature` restricted to the `top_k` largest (all when 0).
pub fn sample(logits: &[f32], temperature: f64, top_k: usize, rng: &mut Rng) -> usize {
    let argmax = || {
        let mut best = 0;
        for (i, &x) in logits.iter().enumerate() {
            if x > logits[best] {
                best = i;
            }
        }
        best
    };
    if temperature <= 0.0 || logits.len() <= 1 {
        return argmax();
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if top_k > 0 {
        order.truncate(top_k);
    }
    let top = f64::from(logits[order[0]]);
    let weights: Vec<f64> = order.iter().map(|&i| ((f64::from(logits[i]) - top) / temperature).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut r = rng.next_f64() * total;
    for (&i, w) in order.iter().zip(&weights) {
        if r < *w {
            return i;
        }
        r -= w;
    }
    order[order.len() - 1]
}

/// Encodes the prompt; for a character vocabulary every unknown character is named.
fn encode_prompt(tok: &Tokenizer, prompt: &str) -> Result<Vec<u32>, TrainError> {
    if let Tokenizer::Char { chars } = tok {
        let mut unknown: Vec<char> = prompt.chars().filter(|c| !chars.contains(*c)).collect();
        unknown.sort_unstable();
        unknown.dedup();
        if !unknown.is_empty() {
            let list: Vec<String> = unknown.iter().map(|c| format!("{c:?}")).collect();
            return Err(TrainError::data_hint(
                format!(
                    "the prompt has {} character{} outside the checkpoint's vocabulary: {}",
                    unknown.len(),
                    if unknown.len() == 1 { "" } else { "s" },
                    list.join(", ")
                ),
                format!("the vocabulary is {:?}", chars),
            ));
        }
    }
    tok.encode(prompt)
}

struct GenerateJob {
    model: tfm_ir::Model,
    tokenizer: Tokenizer,
    ck: tfm_train::Checkpoint,
    prompt: Vec<u32>,
    context: usize,
    args: GenerateArgs,
    sources: SourceMap,
}

impl DeviceJob for GenerateJob {
    fn run<D: AnyPrecision>(self, dev: D) -> u8 {
        let GenerateJob { model, tokenizer, ck, prompt, context, args, sources } = self;
        let (rt, store) = match restored(model, dev, &ck, &sources) {
            Ok(x) => x,
            Err(code) => return code,
        };
        let mut rng = Rng::new(args.seed);
        let mut ids = prompt;
        let stream = matches!(tokenizer, Tokenizer::Char { .. });
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "{}", args.prompt);
        let first_new = ids.len();
        for _ in 0..args.tokens {
            let start = ids.len().saturating_sub(context.max(1));
            let window: Vec<i64> = ids[start..].iter().map(|&t| i64::from(t)).collect();
            let t = window.len();
            let input = HostTensor::I64 { shape: vec![1, t], data: window };
            let logits = match rt.forward(&store, &[input], false, 0) {
                Ok(o) => o.into_iter().next(),
                Err(e) => return emit_error(&TrainError::Model(e.to_string()), &sources, None),
            };
            let Some(HostTensor::F32 { shape, data }) = logits else {
                eprintln!("error: expected the model's first output to be f32 logits");
                return FAILED;
            };
            let v = shape.last().copied().unwrap_or(0);
            if shape.len() != 3 || v == 0 || data.len() < t * v {
                eprintln!("error: expected logits of shape [1, {t}, V], found {shape:?}");
                return FAILED;
            }
            // Logits past the tokenizer's vocabulary (spare embedding rows) are never drawn.
            let usable = v.min(tokenizer.vocab_size()).max(1);
            let next = sample(&data[(t - 1) * v..(t - 1) * v + usable], args.temperature, args.top_k, &mut rng);
            ids.push(next as u32);
            if stream {
                let _ = write!(out, "{}", tokenizer.decode(&[next as u32]));
                let _ = out.flush();
            }
        }
        if !stream {
            let _ = write!(out, "{}", tokenizer.decode(&ids[first_new..]));
        }
        let _ = writeln!(out);
        OK
    }
}

pub fn run(args: GenerateArgs) -> u8 {
    let mut sources = SourceMap::new();
    let extra = match parse_overrides(&args.set) {
        Ok(o) => o,
        Err(e) => return usage(&e, "write `--set layers=4`"),
    };
    if args.prompt.is_empty() {
        return usage("expected a prompt, found an empty one", "pass `--prompt \"ROMEO:\"`, or a newline");
    }
    if !args.temperature.is_finite() || args.temperature < 0.0 {
        return usage(&format!("expected a temperature of 0 or more, found {}", args.temperature), "0 is greedy; 0.8 is usual");
    }
    let ck = match read_checkpoint(&args.checkpoint, &["best", "last"], &sources) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut cfg = match checkpoint_config(&ck, &sources) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if cfg.data.task == Some(tfm_train::config::TaskKind::Translate) {
        // An encoder-decoder translates the prompt instead of continuing it.
        return match crate::predict::load_inference(&args.spec, &args.checkpoint, &args.set, args.model.clone(), args.device, &[tfm_train::config::TaskKind::Translate]) {
            Ok((inf, device)) => crate::predict::translate_prompt(inf, device, args.prompt.clone(), args.beam.max(1)),
            Err(code) => code,
        };
    }
    cfg.spec = args.spec.clone();
    if let Some(d) = args.device {
        cfg.device = d.into();
    }
    let loaded = match load_checkpointed_model(&mut cfg, &extra, args.model.clone(), &ck, &mut sources) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let tokenizer = ck.meta.tokenizer.clone();
    let prompt = match encode_prompt(&tokenizer, &args.prompt) {
        Ok(p) => p,
        Err(e) => return emit_error(&e, &sources, None),
    };
    let context = int_param(&loaded.model, "context").unwrap_or(cfg.context);
    let device = cfg.device;
    dispatch(device, args.seed, GenerateJob { model: loaded.model, tokenizer, ck, prompt, context, args, sources })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temperature_zero_is_argmax() {
        let mut rng = Rng::new(1);
        assert_eq!(sample(&[0.1, 2.0, -1.0, 1.9], 0.0, 0, &mut rng), 1);
    }

    #[test]
    fn top_k_one_is_argmax_at_any_temperature() {
        let mut rng = Rng::new(2);
        for _ in 0..50 {
            assert_eq!(sample(&[0.5, 0.4, 3.0, 0.2], 5.0, 1, &mut rng), 2);
        }
    }

    #[test]
    fn top_k_never_draws_outside_the_k_largest() {
        let mut rng = Rng::new(3);
        let logits = [1.0, 0.9, 0.8, 0.0, -0.1];
        let mut seen = [0usize; 5];
        for _ in 0..2000 {
            seen[sample(&logits, 1.0, 3, &mut rng)] += 1;
        }
        assert_eq!(seen[3] + seen[4], 0);
        // All three candidates are close in probability: each is drawn often.
        assert!(seen[..3].iter().all(|&n| n > 400), "{seen:?}");
    }

    #[test]
    fn unknown_prompt_characters_are_all_named() {
        let tok = Tokenizer::Char { chars: "abc".into() };
        let e = encode_prompt(&tok, "abxcyx").expect_err("x and y are unknown");
        assert!(e.to_string().contains("2 characters"), "{e}");
        assert!(e.to_string().contains("'x', 'y'"), "{e}");
    }
}
