//! Checks every reference spec and example with the elaborator, compares the parameter counts
//! with the published figures, and snapshots each model's summary and snapshot text.

use std::path::{Path, PathBuf};
use tfm_diag::{render, SourceMap};
use tfm_elab::{check_file, CheckOptions, CheckedModel};
use tfm_summary::{render_table, snapshot, summarize, SummaryOptions};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Checks one file; fails the test with the rendered diagnostics if there is an error or a
/// failed expectation.
fn check(rel: &str) -> Vec<CheckedModel> {
    let path = repo_root().join(rel);
    let mut sources = SourceMap::new();
    let checked = check_file(&path, &CheckOptions::default(), &mut sources);
    let errors: Vec<_> = checked.diagnostics.iter().filter(|d| d.is_error()).cloned().collect();
    assert!(errors.is_empty(), "{rel}:\n{}", render::render(&errors, &sources, render::Format::Short, false));
    for m in &checked.models {
        for e in &m.expectations {
            assert!(e.passed, "{rel}: model {}: expectation failed: {}", m.model.name, e.description);
        }
    }
    assert!(!checked.models.is_empty(), "{rel}: no model");
    checked.models
}

/// The published trainable-parameter counts (see scripts/param_counts.py for each breakdown).
const COUNTS: &[(&str, &str, u128)] = &[
    ("specs/bert_base.tfm", "bert_base", 109_482_240),
    ("specs/bert_base.tfm", "bert_large", 335_141_888),
    ("specs/gpt2.tfm", "gpt2", 124_439_808),
    ("specs/gpt2.tfm", "gpt2_medium", 354_823_168),
    ("specs/t5_small.tfm", "t5_small", 60_506_624),
    ("specs/vit_b16.tfm", "vit_b16", 86_567_656),
    ("specs/vit_b16.tfm", "vit_l16", 304_326_632),
    ("specs/clip_vit_b32.tfm", "clip_vit_b32", 151_277_313),
    // OpenAI's Whisper: no key biases.
    ("specs/whisper_tiny.tfm", "whisper_tiny", 37_184_640),
    ("specs/llama2_7b.tfm", "llama2_7b", 6_738_415_616),
    ("specs/llama2_7b.tfm", "llama2_13b", 13_015_864_320),
    ("specs/mistral_7b.tfm", "mistral_7b", 7_241_732_096),
    ("specs/transformer_base.tfm", "transformer_base", 63_082_496),
    ("specs/transformer_base.tfm", "transformer_big", 214_245_376),
    ("examples/shakespeare_char.tfm", "shakespeare_char", 809_856),
    ("examples/addition.tfm", "addition", 601_216),
];

/// The same larger siblings reached by `--set` overrides of the base model instead of a variant.
type Overridden = (&'static str, &'static str, &'static [(&'static str, &'static str)], u128);

const OVERRIDDEN: &[Overridden] = &[
    ("specs/gpt2.tfm", "gpt2_medium", &[("layers", "24"), ("d_model", "1024"), ("heads", "16")], 354_823_168),
    ("specs/bert_base.tfm", "bert_large", &[("layers", "24"), ("d_model", "1024"), ("heads", "16")], 335_141_888),
    ("specs/vit_b16.tfm", "vit_l16", &[("layers", "24"), ("d_model", "1024"), ("heads", "16"), ("ffn", "4096")], 304_326_632),
    ("specs/llama2_7b.tfm", "llama2_13b", &[("layers", "40"), ("d_model", "5120"), ("heads", "40"), ("kv_heads", "40"), ("ffn", "13824")], 13_015_864_320),
    ("specs/transformer_base.tfm", "transformer_big", &[("d_model", "1024"), ("heads", "16"), ("ffn", "4096")], 214_245_376),
];

#[test]
fn parameter_counts_match_the_published_figures() {
    let mut failures = vec![];
    for (file, model, want) in COUNTS {
        let models = check(file);
        let Some(m) = models.iter().find(|m| m.model.name == *model) else {
            failures.push(format!("{file}: no model `{model}`"));
            continue;
        };
        let s = summarize(&m.model, &SummaryOptions { batch: 1, seq: 16 });
        if s.totals.trainable != *want {
            failures.push(format!("{model}: expected {want}, found {}", s.totals.trainable));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn overridden_models_match_the_published_figures() {
    for (file, name, sets, want) in OVERRIDDEN {
        let overrides = sets.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let base = file.trim_start_matches("specs/").trim_end_matches(".tfm");
        let mut sources = SourceMap::new();
        let opts = CheckOptions { overrides, model: Some(base.to_string()) };
        let checked = check_file(&repo_root().join(file), &opts, &mut sources);
        // Overrides skip the base model's expectations, which describe the model as declared.
        let errors: Vec<_> = checked.diagnostics.iter().filter(|d| d.is_error()).cloned().collect();
        assert!(errors.is_empty(), "{name}:\n{}", render::render(&errors, &sources, render::Format::Short, false));
        let m = checked.models.first().unwrap_or_else(|| panic!("{name}: no model"));
        let s = summarize(&m.model, &SummaryOptions { batch: 1, seq: 16 });
        assert_eq!(s.totals.trainable, *want, "{name}");
    }
}

#[test]
fn fixed_and_tied_weights_are_reported() {
    let whisper = check("specs/whisper_tiny.tfm");
    let s = summarize(&whisper[0].model, &SummaryOptions { batch: 1, seq: 448 });
    assert_eq!(s.totals.fixed, 1500 * 384);
    assert_eq!(s.tied.iter().map(|t| (t.name.as_str(), t.reads)).collect::<Vec<_>>(), vec![("tok.weight", 2)]);

    let t = check("specs/transformer_base.tfm");
    let s = summarize(&t[0].model, &SummaryOptions { batch: 1, seq: 32 });
    // Encoder input, decoder input and the pre-softmax projection.
    assert_eq!(s.tied.iter().map(|t| (t.name.as_str(), t.reads)).collect::<Vec<_>>(), vec![("tok.weight", 3)]);
    assert_eq!(s.totals.fixed, 1024 * 512);
}

#[test]
fn gpt2_flops_per_token_follow_the_formula() {
    let m = &check("specs/gpt2.tfm")[0].model;
    let (l, d, t, v, h) = (12u128, 768u128, 1024u128, 50257u128, 12u128);
    let s = summarize(m, &SummaryOptions { batch: 1, seq: t as u64 });
    // Matmuls: per layer qkv + o + mlp = 12 d^2 weights, 2 FLOPs each; the head 2 d V.
    let matmul = l * 2 * 12 * d * d + 2 * d * v;
    // Attention scores and weighted sum: 2 * 2 * T * d per layer and token.
    let attn = l * 4 * t * d;
    let per_token = s.totals.flops_per_token;
    let expected = (matmul + attn) as f64;
    // The rest is biases, norms, softmax and elementwise work: a few percent.
    assert!(per_token > expected && per_token < expected * 1.03, "{per_token} vs {expected}");
    // The softmax over T keys per head is part of that remainder.
    assert!(per_token - expected > (l * 5 * h * t) as f64);
}

#[test]
fn seven_billion_parameter_models_summarise_quickly() {
    let start = std::time::Instant::now();
    let m = &check("specs/mistral_7b.tfm")[0].model;
    let s = summarize(m, &SummaryOptions { batch: 1, seq: 32768 });
    assert_eq!(s.totals.trainable, 7_241_732_096);
    assert_eq!(s.totals.optimizer_bytes, 7_241_732_096 * 8);
    assert!(start.elapsed().as_secs_f64() < 5.0);
}

#[test]
fn snapshots_of_specs_and_examples() {
    let mut files = vec![];
    for dir in ["specs", "examples"] {
        let mut entries: Vec<_> = std::fs::read_dir(repo_root().join(dir))
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        entries.sort();
        for p in entries {
            if p.extension().is_some_and(|e| e == "tfm") {
                files.push(format!("{dir}/{}", p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()));
            }
        }
    }
    assert!(files.len() >= 11, "{files:?}");
    for file in files {
        for m in check(&file) {
            let seq = m
                .model
                .params
                .iter()
                .find(|(n, _)| n == "context")
                .and_then(|(_, v)| match v {
                    tfm_ir::ConstValue::Int(i) => u64::try_from(*i).ok(),
                    _ => None,
                })
                .unwrap_or(128);
            let table = render_table(&summarize(&m.model, &SummaryOptions { batch: 1, seq }));
            let text = format!("{}\n---- summary (batch 1, seq {seq})\n{table}", snapshot(&m.model));
            insta::assert_snapshot!(m.model.name.clone(), text);
        }
    }
}
