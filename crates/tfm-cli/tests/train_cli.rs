//! End-to-end tests of `tfm train`, `tfm eval` and `tfm generate` through the built binary: tiny
//! models on a slice of tiny Shakespeare and on the addition task, exact resumption (split runs
//! and Ctrl-C), and the error messages users see.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tfm_train::Checkpoint;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn spec(name: &str) -> PathBuf {
    workspace().join("examples").join(name)
}

/// The shared data folder: `$TFM_DATA_DIR`, else `../shared/data` beside the repository.
fn data_dir() -> PathBuf {
    std::env::var_os("TFM_DATA_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("../shared/data"))
}

/// The first `bytes` bytes of tiny Shakespeare, copied into `dir`.
fn shakespeare_slice(dir: &Path, bytes: usize) -> PathBuf {
    let src = data_dir().join("tinyshakespeare.txt");
    let text = std::fs::read_to_string(&src)
        .unwrap_or_else(|e| panic!("tiny Shakespeare is needed at {} (set TFM_DATA_DIR): {e}", src.display()));
    let cut: String = text.chars().take(bytes).collect();
    let path = dir.join("tiny.txt");
    std::fs::write(&path, cut).expect("write the slice");
    path
}

fn tfm() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tfm"));
    c.env("NO_COLOR", "1").env_remove("TFM_DATA_DIR");
    c
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run tfm")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Replaces the temporary folder and 64-hex-digit hashes so snapshots are stable.
fn normalise(s: &str, tmp: &Path) -> String {
    let s = s.replace(&tmp.display().to_string(), "[TMP]");
    let mut out = String::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let run = chars[i..].iter().take_while(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()).count();
        if run == 64 {
            out.push_str("[HASH]");
            i += 64;
        } else if run > 0 {
            out.extend(&chars[i..i + run]);
            i += run;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// A 1-layer, 32-wide model with a 16-character context: a few milliseconds per step.
const TINY: &[&str] = &["--set", "layers=1", "--set", "d_model=32", "--set", "heads=2", "--set", "context=16"];

/// Trains the tiny Shakespeare model for `steps` steps into `out`.
fn train_shakespeare(data: &Path, out: &Path, steps: u64, extra: &[&str]) -> Output {
    let steps = steps.to_string();
    let mut c = tfm();
    c.arg("train").arg(spec("shakespeare_char.tfm")).arg("--data").arg(data).arg("--out").arg(out);
    c.args(TINY).args(["--steps", &steps, "--batch", "4", "--lr", "1e-2", "--no-progress"]);
    c.args(["--cfg", "schedule.warmup=2", "--cfg", "eval.every=10", "--cfg", "eval.batches=2", "--cfg", "logging.every=1"]);
    c.args(extra);
    run(&mut c)
}

fn assert_ok(o: &Output) {
    assert!(o.status.success(), "exit {:?}\nstdout:\n{}\nstderr:\n{}", o.status.code(), text(&o.stdout), text(&o.stderr));
}

/// `(step, value)` pairs.
type Series = Vec<(u64, String)>;

/// `(step, loss)` of every training step and `(step, val_loss)` of every evaluation in a run's
/// `metrics.jsonl`, as the raw JSON texts of the numbers.
fn metrics(dir: &Path) -> (Series, Series) {
    let body = std::fs::read_to_string(dir.join("metrics.jsonl")).expect("metrics.jsonl");
    let mut train = vec![];
    let mut val = vec![];
    for line in body.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        let step = v["step"].as_u64().expect("step");
        if let Some(l) = v.get("loss") {
            train.push((step, l.to_string()));
        }
        if let Some(l) = v.get("val_loss") {
            val.push((step, l.to_string()));
        }
    }
    (train, val)
}

/// The number on the line of `out` that starts with `label`.
fn figure(out: &str, label: &str) -> f64 {
    let line = out.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("no `{label}` line in:\n{out}"));
    line[label.len()..]
        .split_whitespace()
        .next()
        .and_then(|w| w.trim_end_matches('%').parse().ok())
        .unwrap_or_else(|| panic!("no number in `{line}`"))
}

#[test]
fn trains_on_a_shakespeare_slice_with_logs_and_checkpoints() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = shakespeare_slice(tmp.path(), 20_000);
    let out = tmp.path().join("run");
    let o = train_shakespeare(&data, &out, 30, &[]);
    assert_ok(&o);
    let stdout = text(&o.stdout);
    assert!(stdout.contains("trained `shakespeare_char` for 30 steps"), "{stdout}");
    assert_eq!(figure(&stdout, "steps"), 30.0);
    assert!(figure(&stdout, "throughput") > 0.0);
    for kind in ["last", "best"] {
        let ck = out.join("checkpoints").join(kind).join("model.safetensors");
        assert!(ck.is_file(), "{} is missing", ck.display());
        assert!(stdout.contains(&ck.display().to_string()), "{stdout}");
    }
    let events = std::fs::read_dir(&out)
        .expect("run folder")
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("events.out.tfevents"));
    assert!(events, "no TensorBoard event file in {}", out.display());
    let (train, val) = metrics(&out);
    assert_eq!(train.len(), 30);
    assert_eq!(val.iter().map(|v| v.0).collect::<Vec<_>>(), vec![0, 10, 20, 30]);
    // It learns: the last evaluation is well below the first (ln 65 = 4.17 at the start).
    let first: f64 = val[0].1.parse().expect("number");
    let last: f64 = val[3].1.parse().expect("number");
    assert!(last < first - 0.3, "val loss went from {first} to {last}");
    assert!((figure(&stdout, "final val loss") - last).abs() < 1e-3);
}

#[test]
fn trains_on_addition_and_reports_exact_match_with_sample_answers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("run");
    let mut c = tfm();
    c.arg("train").arg(spec("addition.tfm")).args(["--task", "addition", "--steps", "10", "--no-progress"]);
    c.args(["--set", "layers=1", "--set", "d_model=32", "--set", "heads=2", "--cfg", "data.test_examples=200"]);
    c.arg("--out").arg(&out);
    let o = run(&mut c);
    assert_ok(&o);
    let stdout = text(&o.stdout);
    assert!(stdout.contains("/200 held-out problems)"), "{stdout}");
    let acc = figure(&stdout, "exact match");
    assert!((0.0..=100.0).contains(&acc));
    // Sample lines: `aaa+bbb=  model  correct  ok|WRONG`, the correct answer being the sum.
    let samples: Vec<&str> = stdout.lines().filter(|l| l.trim_start().chars().next().is_some_and(|c| c.is_ascii_digit())).collect();
    assert_eq!(samples.len(), 6, "{stdout}");
    for line in samples {
        let w: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(w.len(), 4, "{line}");
        let (a, b) = w[0].trim_end_matches('=').split_once('+').expect("a+b=");
        let sum: u64 = a.parse::<u64>().expect("a") + b.parse::<u64>().expect("b");
        assert_eq!(w[2].parse::<u64>().expect("correct answer"), sum, "{line}");
        assert_eq!(w[3], if w[1] == w[2] { "ok" } else { "WRONG" }, "{line}");
    }
}

/// The tensors (weights and optimizer moments) of a checkpoint folder's file.
fn tensors(dir: &Path) -> (u64, Vec<(String, Vec<u32>)>) {
    let ck = Checkpoint::read(dir).expect("checkpoint");
    let t = ck.tensors.iter().map(|(n, (_, d))| (n.clone(), d.iter().map(|x| x.to_bits()).collect())).collect();
    (ck.meta.step, t)
}

#[test]
fn a_resumed_run_matches_an_uninterrupted_one_exactly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = shakespeare_slice(tmp.path(), 20_000);
    let fixed = ["--cfg", "schedule.decay_steps=16"];
    let whole = tmp.path().join("whole");
    assert_ok(&train_shakespeare(&data, &whole, 16, &fixed));
    let split = tmp.path().join("split");
    assert_ok(&train_shakespeare(&data, &split, 8, &fixed));
    // Resume from the checkpoint alone: its run configuration comes with it.
    let o = run(tfm().arg("train").arg(spec("shakespeare_char.tfm")).arg("--resume").arg(split.join("checkpoints/last")).args([
        "--steps",
        "16",
        "--no-progress",
    ]));
    assert_ok(&o);
    assert!(text(&o.stderr).contains("resuming at step 8/16"), "{}", text(&o.stderr));
    let (mw, vw) = metrics(&whole);
    let (ms, vs) = metrics(&split);
    assert_eq!(mw.len(), 16);
    assert_eq!(mw, ms, "training losses differ");
    assert_eq!(vw.last(), vs.last(), "final validation losses differ");
    let (step_w, tw) = tensors(&whole.join("checkpoints/last"));
    let (step_s, ts) = tensors(&split.join("checkpoints/last"));
    assert_eq!((step_w, step_s), (16, 16));
    assert_eq!(tw, ts, "weights or optimizer state differ");
}

#[cfg(unix)]
#[test]
fn ctrl_c_writes_a_checkpoint_exits_130_and_resumes_exactly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = shakespeare_slice(tmp.path(), 20_000);
    let out = tmp.path().join("stopped");
    let common = |c: &mut Command, out: &Path, steps: &str| {
        c.arg("train").arg(spec("shakespeare_char.tfm")).arg("--data").arg(&data).arg("--out").arg(out);
        c.args(TINY).args(["--steps", steps, "--batch", "4", "--no-progress"]);
        c.args(["--cfg", "schedule.decay_steps=100000", "--cfg", "eval.every=0", "--cfg", "logging.every=1"]);
    };
    let mut c = tfm();
    common(&mut c, &out, "100000");
    let child = c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn tfm");
    // Wait for the first logged step (the handler is installed before training starts).
    let start = Instant::now();
    while !std::fs::read_to_string(out.join("metrics.jsonl")).is_ok_and(|m| m.lines().count() >= 2) {
        assert!(start.elapsed() < Duration::from_secs(60), "no training step after 60 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill");
    assert!(kill.success());
    let o = child.wait_with_output().expect("wait");
    assert_eq!(o.status.code(), Some(130), "stdout:\n{}\nstderr:\n{}", text(&o.stdout), text(&o.stderr));
    let stdout = text(&o.stdout);
    assert!(stdout.contains("interrupted at step"), "{stdout}");
    assert!(stdout.contains("--resume"), "{stdout}");
    let (k, _) = tensors(&out.join("checkpoints/last"));
    assert!(k >= 1);
    let target = (k + 3).to_string();
    let o = run(tfm().arg("train").arg(spec("shakespeare_char.tfm")).arg("--resume").arg(&out).args(["--steps", &target, "--no-progress"]));
    assert_ok(&o);
    let whole = tmp.path().join("whole");
    let mut c = tfm();
    common(&mut c, &whole, &target);
    assert_ok(&run(&mut c));
    assert_eq!(tensors(&whole.join("checkpoints/last")), tensors(&out.join("checkpoints/last")));
    assert_eq!(metrics(&whole).0, metrics(&out).0);
}

#[test]
fn eval_prints_loss_and_perplexity() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = shakespeare_slice(tmp.path(), 20_000);
    let out = tmp.path().join("run");
    assert_ok(&train_shakespeare(&data, &out, 10, &[]));
    let o = run(tfm().arg("eval").arg(spec("shakespeare_char.tfm")).arg("--checkpoint").arg(&out).args(["--batches", "3"]));
    assert_ok(&o);
    let stdout = text(&o.stdout);
    let loss = figure(&stdout, "val loss");
    let ppl = figure(&stdout, "perplexity");
    assert!(loss > 0.5 && loss < 5.0, "{stdout}");
    assert!((ppl - loss.exp()).abs() < 1e-3 * ppl, "perplexity {ppl} is not exp({loss})");
    assert!(stdout.contains("3 batches of 4 x 16 tokens"), "{stdout}");
    assert!(stdout.contains("best/model.safetensors (step 10)"), "{stdout}");
}

#[test]
fn eval_on_addition_reports_exact_match() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("run");
    let mut c = tfm();
    c.arg("train").arg(spec("addition.tfm")).args(["--task", "addition", "--steps", "4", "--no-progress"]);
    c.args(["--set", "layers=1", "--set", "d_model=16", "--set", "heads=2", "--cfg", "data.test_examples=50"]).arg("--out").arg(&out);
    assert_ok(&run(&mut c));
    let o = run(tfm().arg("eval").arg(spec("addition.tfm")).arg("--checkpoint").arg(out.join("checkpoints/last")));
    assert_ok(&o);
    let stdout = text(&o.stdout);
    assert!(figure(&stdout, "perplexity") > 1.0);
    assert!(stdout.contains("/50 held-out problems)"), "{stdout}");
}

#[test]
fn generate_continues_the_prompt() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = shakespeare_slice(tmp.path(), 20_000);
    let out = tmp.path().join("run");
    assert_ok(&train_shakespeare(&data, &out, 10, &[]));
    let gen = |extra: &[&str]| {
        let o = run(tfm().arg("generate").arg(spec("shakespeare_char.tfm")).arg("--checkpoint").arg(&out).args(["--prompt", "ROMEO:", "--tokens", "40"]).args(extra));
        assert_ok(&o);
        text(&o.stdout)
    };
    let a = gen(&["--seed", "1"]);
    assert!(a.starts_with("ROMEO:"), "{a}");
    assert_eq!(a.trim_end_matches('\n').chars().count(), 6 + 40, "{a:?}");
    let vocab: std::collections::HashSet<char> = std::fs::read_to_string(&data).expect("slice").chars().collect();
    assert!(a.trim_end_matches('\n').chars().all(|c| vocab.contains(&c)), "{a:?}");
    assert_eq!(a, gen(&["--seed", "1"]), "same seed, same text");
    let g1 = gen(&["--temperature", "0", "--seed", "1"]);
    let g2 = gen(&["--temperature", "0", "--seed", "2"]);
    assert_eq!(g1, g2, "greedy decoding ignores the seed");
}

#[test]
fn generate_names_characters_outside_the_vocabulary() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = shakespeare_slice(tmp.path(), 5_000);
    let out = tmp.path().join("run");
    assert_ok(&train_shakespeare(&data, &out, 2, &[]));
    let o = run(tfm().arg("generate").arg(spec("shakespeare_char.tfm")).arg("--checkpoint").arg(&out).args(["--prompt", "ROMEO~é~"]));
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("2 characters outside the checkpoint's vocabulary: '~', 'é'"), "{err}");
}

#[test]
fn error_missing_data_file_names_the_path() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let o = run(tfm().arg("train").arg(spec("shakespeare_char.tfm")).arg("--data").arg(tmp.path().join("nope.txt")).arg("--out").arg(tmp.path()));
    assert_eq!(o.status.code(), Some(1));
    insta::assert_snapshot!("missing_data_file", normalise(&text(&o.stderr), tmp.path()));
}

#[test]
fn error_unknown_config_key_has_line_and_suggestion() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = tmp.path().join("run.yaml");
    std::fs::write(&cfg, "spec: spec.tfm\ndata:\n  task: addition\noptimizer:\n  kind: adamw\n  weight_decai: 0.1\nsteps: 10\n").expect("write");
    let o = run(tfm().arg("train").arg(spec("addition.tfm")).arg("--config").arg(&cfg));
    assert_eq!(o.status.code(), Some(1));
    insta::assert_snapshot!("unknown_config_key", normalise(&text(&o.stderr), tmp.path()));
}

/// `precision: f16`: half-precision steps from f32 master weights with dynamic loss scaling. The
/// run learns, its first steps overflow at the initial scale of 2^16 and are skipped with a
/// warning, a resumed run (loss scale included) matches the uninterrupted one exactly, and the
/// checkpoint holds the f32 weights that `tfm eval` reads.
#[test]
fn mixed_precision_learns_resumes_exactly_and_checkpoints_f32_weights() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = shakespeare_slice(tmp.path(), 20_000);
    let f16 = ["--cfg", "precision=f16", "--cfg", "schedule.decay_steps=30"];
    let whole = tmp.path().join("whole");
    let o = train_shakespeare(&data, &whole, 30, &f16);
    assert_ok(&o);
    let err = text(&o.stderr);
    assert!(err.contains("f16 mixed precision"), "{err}");
    assert!(err.contains("step 1: the gradients overflowed half precision; step skipped, loss scale lowered to 32768"), "{err}");
    let (train, val) = metrics(&whole);
    assert_eq!(train.len(), 30);
    let loss = |s: &str| s.parse::<f64>().expect("a number");
    let (first, last) = (loss(&val[0].1), loss(&val.last().expect("a validation loss").1));
    assert!(last < first - 0.5, "validation loss {first} -> {last}: mixed precision did not learn");
    // The same run stopped after 12 steps and resumed.
    let split = tmp.path().join("split");
    assert_ok(&train_shakespeare(&data, &split, 12, &f16));
    let o = run(tfm().arg("train").arg(spec("shakespeare_char.tfm")).arg("--resume").arg(&split).args(["--steps", "30", "--no-progress"]));
    assert_ok(&o);
    let (resumed_train, resumed_val) = metrics(&split);
    assert_eq!(train, resumed_train, "the resumed run's training losses differ");
    assert_eq!(val.last(), resumed_val.last(), "the resumed run's final validation loss differs");
    assert_eq!(tensors(&whole.join("checkpoints/last")), tensors(&split.join("checkpoints/last")));
    // The checkpoint's weights are f32 and evaluate to the run's last validation loss.
    let ck = Checkpoint::read(&whole.join("checkpoints/last")).expect("checkpoint");
    assert!(ck.tensors.values().all(|(_, d)| d.iter().all(|x| x.is_finite())));
    let o = run(tfm().arg("eval").arg(spec("shakespeare_char.tfm")).arg("--checkpoint").arg(&whole).arg("--data").arg(&data).args(["--batches", "2"]));
    assert_ok(&o);
    assert!((figure(&text(&o.stdout), "val loss") - last).abs() < 1e-3, "{}", text(&o.stdout));
}

#[test]
fn error_a_fresh_run_into_an_earlier_runs_folder_unless_overwrite() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = shakespeare_slice(tmp.path(), 5_000);
    let out = tmp.path().join("run");
    assert_ok(&train_shakespeare(&data, &out, 3, &[]));
    let before = tensors(&out.join("checkpoints/last"));
    let metrics_before = std::fs::read(out.join("metrics.jsonl")).expect("metrics");
    // A second fresh run into the same folder is refused and leaves the first one as it was.
    let o = train_shakespeare(&data, &out, 2, &[]);
    assert_eq!(o.status.code(), Some(1));
    insta::assert_snapshot!("fresh_run_into_an_earlier_run", normalise(&text(&o.stderr), tmp.path()));
    assert_eq!(tensors(&out.join("checkpoints/last")), before);
    assert_eq!(std::fs::read(out.join("metrics.jsonl")).expect("metrics"), metrics_before);
    // Logs alone (say, checkpoints kept elsewhere and deleted) are protected too.
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir");
    std::fs::copy(out.join("metrics.jsonl"), logs.join("metrics.jsonl")).expect("copy");
    std::fs::write(logs.join("events.out.tfevents.1.host.0"), b"").expect("write");
    let o = train_shakespeare(&data, &logs, 2, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("holds an earlier run's logs (2 files)"), "{}", text(&o.stderr));
    // `--overwrite` replaces the earlier run: its checkpoints, metrics and event files.
    assert_ok(&train_shakespeare(&data, &out, 2, &["--overwrite"]));
    let (step, _) = tensors(&out.join("checkpoints/last"));
    assert_eq!(step, 2);
    assert_eq!(metrics(&out).0.len(), 2, "the earlier run's metrics were kept");
    let events = std::fs::read_dir(&out).expect("dir").filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().starts_with("events.out.tfevents."))).count();
    assert_eq!(events, 1);
    // `--overwrite` does not go with `--resume`.
    let o = run(tfm().arg("train").arg(spec("shakespeare_char.tfm")).arg("--resume").arg(&out).arg("--overwrite"));
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn error_checkpoint_of_another_spec_shows_both_hashes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = shakespeare_slice(tmp.path(), 5_000);
    let out = tmp.path().join("run");
    assert_ok(&train_shakespeare(&data, &out, 2, &[]));
    // The same spec with another width is another model.
    let o = run(tfm().arg("eval").arg(spec("shakespeare_char.tfm")).arg("--checkpoint").arg(&out).args(["--set", "d_model=48"]));
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    let hashes = err.split(|c: char| !c.is_ascii_hexdigit()).filter(|w| w.len() == 64).collect::<Vec<_>>();
    assert_eq!(hashes.len(), 2, "{err}");
    assert_ne!(hashes[0], hashes[1]);
    insta::assert_snapshot!("checkpoint_of_another_spec", normalise(&err, tmp.path()));
}

#[test]
fn error_corrupted_checkpoint_and_vocabulary_mismatch() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = shakespeare_slice(tmp.path(), 5_000);
    let out = tmp.path().join("run");
    assert_ok(&train_shakespeare(&data, &out, 2, &[]));
    // Another corpus with other characters: the checkpoint's vocabulary does not match it.
    let other = tmp.path().join("other.txt");
    std::fs::write(&other, "0123456789 ".repeat(200)).expect("write");
    let o = run(tfm().arg("eval").arg(spec("shakespeare_char.tfm")).arg("--checkpoint").arg(&out).arg("--data").arg(&other));
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("vocabulary mismatch: expected a character vocabulary of"), "{err}");
    assert!(err.contains("found a character vocabulary of 11 symbols"), "{err}");
    // Flip one byte near the end (tensor data): the checksum catches it.
    let file = out.join("checkpoints/best/model.safetensors");
    let mut bytes = std::fs::read(&file).expect("read");
    let n = bytes.len();
    bytes[n - 10] ^= 0x40;
    std::fs::write(&file, bytes).expect("write");
    let o = run(tfm().arg("eval").arg(spec("shakespeare_char.tfm")).arg("--checkpoint").arg(out.join("checkpoints/best")));
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("the tensor data does not match its checksum"), "{err}");
    assert!(err.contains("truncated or damaged"), "{err}");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn error_device_cuda_without_the_feature() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let o = run(tfm().arg("train").arg(spec("addition.tfm")).args(["--task", "addition", "--steps", "1", "--device", "cuda"]).arg("--out").arg(tmp.path()));
    assert_eq!(o.status.code(), Some(2));
    insta::assert_snapshot!("device_cuda_without_feature", normalise(&text(&o.stderr), tmp.path()));
}

#[test]
fn usage_error_without_data() {
    let o = run(tfm().arg("train").arg(spec("addition.tfm")));
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("no training data: expected `--data PATH`, `--task addition` or `--config RUN.yaml`"));
}
