//! End-to-end: the `tfm-bench` binary builds the example GPT, trains two steps and reports JSON.

use std::path::Path;
use std::process::Command;

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().and_then(Path::parent).expect("crate sits in crates/")
}

#[test]
fn times_the_example_gpt_and_reports_json() {
    let out = Command::new(env!("CARGO_BIN_EXE_tfm-bench"))
        .current_dir(repo_root())
        .args(["--config", "nanogpt-cpu", "--batch", "2", "--warmup", "1", "--steps", "1", "--peak-gflops", "100"])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tfm-bench failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    // 809,856 is nanoGPT's count for this configuration with its position table (worked by hand
    // in the spec's doc comment), so the built model and the PyTorch reference agree.
    assert_eq!(v["params"], 809_856);
    assert_eq!(v["spec_params"], 809_856);
    assert_eq!(v["batch"], 2);
    // Uniform random tokens over 65 characters: the first loss is close to ln 65 = 4.17.
    let loss = v["first_loss"].as_f64().expect("a number");
    assert!((loss - 65f64.ln()).abs() < 0.3, "first loss {loss}");
    let ms = v["ms_per_step"].as_f64().expect("a number");
    assert!(ms > 0.0);
    let share = v["share_of_peak"].as_f64().expect("a number");
    let gflops = v["gflops"].as_f64().expect("a number");
    assert!((share - gflops / 100.0).abs() < 1e-9);
}

#[test]
fn rejects_an_unknown_configuration() {
    let out = Command::new(env!("CARGO_BIN_EXE_tfm-bench"))
        .current_dir(repo_root())
        .args(["--config", "huge"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("expected a configuration name, found `huge`"), "{stderr}");
    assert!(stderr.contains("nanogpt-cpu"), "{stderr}");
}

/// Runs `tfm-bench` with these arguments from the repository root and parses its JSON line.
fn bench_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_tfm-bench")).current_dir(repo_root()).args(args).output().expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tfm-bench {args:?} failed: {stderr}");
    serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).expect("one JSON line")
}

#[test]
fn times_the_vit_and_reports_images_per_second() {
    let v = bench_json(&["--config", "vit-mnist", "--batch", "2", "--warmup", "1", "--steps", "1"]);
    // Worked by hand in bench/specs/vit_mnist.tfm's doc comment.
    assert_eq!(v["params"], 1_199_882);
    assert_eq!(v["spec_params"], 1_199_882);
    assert_eq!(v["family"], "vit");
    assert_eq!(v["unit"], "images");
    assert_eq!(v["batch"], 2);
    // Random labels over 10 classes, near-uniform logits at initialisation: about ln 10 = 2.30.
    let loss = v["first_loss"].as_f64().expect("a number");
    assert!((loss - 10f64.ln()).abs() < 0.3, "first loss {loss}");
    let ms = v["ms_per_step"].as_f64().expect("a number");
    let ips = v["images_per_s"].as_f64().expect("a number");
    assert!((ips - 2.0 / (ms / 1e3)).abs() < 1e-6 * ips, "{ips} images/s at {ms} ms/step");
}

#[test]
fn times_the_encoder_decoder_and_reports_target_tokens_per_second() {
    let v = bench_json(&["--config", "seq2seq-small", "--batch", "2", "--warmup", "1", "--steps", "1"]);
    // Worked by hand in bench/specs/seq2seq_small.tfm's doc comment; the fixed sinusoidal table
    // (64 x 256) is not a parameter.
    assert_eq!(v["params"], 7_577_600);
    assert_eq!(v["spec_params"], 7_577_600);
    assert_eq!(v["family"], "seq2seq");
    assert_eq!(v["unit"], "target tokens");
    // Random target ids over 8,000 entries: about ln 8000 = 8.99.
    let loss = v["first_loss"].as_f64().expect("a number");
    assert!((loss - 8000f64.ln()).abs() < 0.3, "first loss {loss}");
    let ms = v["ms_per_step"].as_f64().expect("a number");
    let tps = v["tokens_per_s"].as_f64().expect("a number");
    assert!((tps - (2.0 * 16.0) / (ms / 1e3)).abs() < 1e-6 * tps, "{tps} tokens/s at {ms} ms/step");
}

#[test]
fn bench_specs_meet_their_own_expectations() {
    use tfm_diag::SourceMap;
    use tfm_elab::{check_file, CheckOptions};
    for spec in ["bench/specs/vit_mnist.tfm", "bench/specs/seq2seq_small.tfm"] {
        let mut sources = SourceMap::new();
        let checked = check_file(&repo_root().join(spec), &CheckOptions::default(), &mut sources);
        let errors: Vec<String> =
            checked.diagnostics.iter().filter(|d| d.is_error()).map(|d| format!("{}: {}", d.code, d.message)).collect();
        assert!(errors.is_empty(), "{spec}: {errors:?}");
        assert_eq!(checked.models.len(), 1, "{spec}");
    }
}

#[test]
fn the_generic_path_gives_the_fused_paths_first_loss() {
    let run = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["--config", "nanogpt-cpu", "--batch", "2", "--warmup", "1", "--steps", "1"];
        args.extend_from_slice(extra);
        let out = Command::new(env!("CARGO_BIN_EXE_tfm-bench")).current_dir(repo_root()).args(&args).output().expect("runs");
        assert!(out.status.success(), "tfm-bench {extra:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).expect("one JSON line")
    };
    let fused = run(&[]);
    let generic = run(&["--generic"]);
    assert_eq!(fused["kernels"], "fused");
    assert_eq!(generic["kernels"], "generic");
    // same weights and batch: the two implementations agree on the loss to float rounding
    let (a, b) = (fused["first_loss"].as_f64().expect("a number"), generic["first_loss"].as_f64().expect("a number"));
    assert!((a - b).abs() < 1e-4, "fused {a} vs generic {b}");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_feature_says_how_to_rebuild() {
    let out = Command::new(env!("CARGO_BIN_EXE_tfm-bench"))
        .current_dir(repo_root())
        .args(["--config", "nanogpt-cpu", "--device", "cuda"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("built without CUDA support; rebuild with `--features cuda`"), "{stderr}");
}
