//! End-to-end tests of the tasks beyond language modelling through the built `tfm` binary: each
//! objective trains a tiny model on a slice of its real dataset and must learn by a stated margin,
//! then `tfm eval`, `tfm predict` and `tfm generate` run on the checkpoint; the printed metrics
//! are checked against hand-worked cases and against each other; bad inputs give the snapshotted
//! errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The shared data folder: `$TFM_DATA_DIR`, else `../shared/data` beside the repository.
fn data_dir() -> PathBuf {
    std::env::var_os("TFM_DATA_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("../shared/data"))
}

/// A file or folder of the shared data, which must exist.
fn data(name: &str) -> PathBuf {
    let p = data_dir().join(name);
    assert!(p.exists(), "the dataset {} is needed (set TFM_DATA_DIR)", p.display());
    p
}

/// The `tfm` binary, run from the repository root (specs and run configurations are given
/// relative to it, so error snippets show `examples/...`).
fn tfm() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tfm"));
    c.current_dir(workspace()).env("NO_COLOR", "1").env_remove("TFM_DATA_DIR");
    c
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run tfm")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The stdout of a command that must succeed.
fn ok(o: &Output) -> String {
    assert!(o.status.success(), "exit {:?}\nstdout:\n{}\nstderr:\n{}", o.status.code(), text(&o.stdout), text(&o.stderr));
    text(&o.stdout)
}

/// The stderr of a command that must fail with `code`, with machine paths replaced.
fn failure(o: &Output, code: i32, tmp: &Path) -> String {
    assert_eq!(o.status.code(), Some(code), "stdout:\n{}\nstderr:\n{}", text(&o.stdout), text(&o.stderr));
    let err = text(&o.stderr)
        .replace(&tmp.display().to_string(), "[TMP]")
        .replace(&data_dir().display().to_string(), "[DATA]")
        .replace(&workspace().display().to_string(), "[REPO]");
    // No absolute path of this machine is left: not the repository's parent, not the temp folder.
    let parent = workspace().parent().map(|p| p.display().to_string()).unwrap_or_default();
    let temp = std::env::temp_dir().display().to_string();
    for machine in [parent, temp] {
        assert!(machine.len() <= 1 || !err.contains(&machine), "a machine path is left in:\n{err}");
    }
    err
}

/// A BERT of one layer, 32 wide, 2 heads: tens of thousands of parameters.
const TINY_BERT: &[&str] = &["--set", "layers=1", "--set", "d_model=32", "--set", "heads=2", "--set", "ffn=64"];

/// Every logged training loss of a run folder's `metrics.jsonl`, in step order.
fn losses(dir: &Path) -> Vec<f64> {
    let body = std::fs::read_to_string(dir.join("metrics.jsonl")).expect("metrics.jsonl");
    body.lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            v.get("loss").map(|x| x.as_f64().expect("a number"))
        })
        .collect()
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// Asserts that the mean of the last `k` logged losses is at most `ratio` times the mean of the
/// first `k` (a mean, because single minibatch losses are noisy); returns the measured ratio.
fn assert_learns(dir: &Path, steps: usize, k: usize, ratio: f64) -> f64 {
    let l = losses(dir);
    assert_eq!(l.len(), steps, "one logged loss per step");
    assert!(l.iter().all(|x| x.is_finite()), "{l:?}");
    let (first, last) = (mean(&l[..k]), mean(&l[l.len() - k..]));
    let measured = last / first;
    eprintln!("{}: mean loss of the first {k} steps {first:.4}, of the last {k} {last:.4} (x{measured:.3})", dir.display());
    assert!(measured <= ratio, "the loss fell from {first:.4} to {last:.4} (x{measured:.3}); expected at most x{ratio}");
    measured
}

/// The first number after `label` on the line of `out` that starts with it (`%` dropped).
fn figure(out: &str, label: &str) -> f64 {
    let line = out.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("no `{label}` line in:\n{out}"));
    line[label.len()..]
        .split_whitespace()
        .next()
        .and_then(|w| w.trim_end_matches('%').parse().ok())
        .unwrap_or_else(|| panic!("no number in `{line}`"))
}

/// `(a, b)` from the first `(a / b)` on the line starting with `label`.
fn fraction(out: &str, label: &str) -> (usize, usize) {
    let line = out.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("no `{label}` line in:\n{out}"));
    let inner = line.split_once('(').and_then(|(_, r)| r.split_once(')')).map(|(i, _)| i).unwrap_or_else(|| panic!("no (a / b) in `{line}`"));
    let (a, b) = inner.split_once(" / ").unwrap_or_else(|| panic!("no a / b in `{line}`"));
    (a.trim().parse().expect("a count"), b.trim().parse().expect("a count"))
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

/// Checks the classification report of `out` (`test accuracy`, the confusion matrix, per-class
/// precision, recall, F1 and support, macro F1 and accuracy) for internal consistency, recomputing
/// every figure from the printed counts; returns the class names and the matrix (rows gold).
fn check_classification(out: &str) -> (Vec<String>, Vec<Vec<usize>>) {
    let acc = figure(out, "test accuracy");
    let (correct, total) = fraction(out, "test accuracy");
    assert!(total > 0, "{out}");
    assert!(close(acc, 100.0 * correct as f64 / total as f64, 0.005 + 1e-9), "accuracy {acc}% is not {correct}/{total}:\n{out}");
    let lines: Vec<&str> = out.lines().collect();
    let head = lines.iter().position(|l| l.starts_with("gold\\pred")).unwrap_or_else(|| panic!("no matrix in:\n{out}"));
    let names: Vec<String> = lines[head].split_whitespace().skip(1).map(String::from).collect();
    let n = names.len();
    let mut m = vec![vec![0usize; n]; n];
    for (g, row) in m.iter_mut().enumerate() {
        let w: Vec<&str> = lines[head + 1 + g].split_whitespace().collect();
        assert_eq!(w[0], names[g], "rows and columns name the same classes in the same order");
        assert_eq!(w.len(), n + 1, "{}", lines[head + 1 + g]);
        for (c, cell) in row.iter_mut().enumerate() {
            *cell = w[c + 1].parse().expect("a count");
        }
    }
    let trace: usize = (0..n).map(|c| m[c][c]).sum();
    let sum: usize = m.iter().flatten().sum();
    assert_eq!((trace, sum), (correct, total), "the matrix's diagonal and total are the printed counts");
    let stats = lines.iter().position(|l| l.starts_with("class ")).unwrap_or_else(|| panic!("no per-class table in:\n{out}"));
    assert_eq!(lines[stats].split_whitespace().collect::<Vec<_>>(), ["class", "precision", "recall", "f1", "support"]);
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let mut f1s = Vec::new();
    for c in 0..n {
        let w: Vec<&str> = lines[stats + 1 + c].split_whitespace().collect();
        assert_eq!(w[0], names[c]);
        let got: Vec<f64> = w[1..4].iter().map(|x| x.parse().expect("a number")).collect();
        let support: usize = w[4].parse().expect("a count");
        let row: usize = m[c].iter().sum();
        let col: usize = m.iter().map(|r| r[c]).sum();
        let (p, r) = (ratio(m[c][c], col), ratio(m[c][c], row));
        let f1 = if p + r == 0.0 { 0.0 } else { 2.0 * p * r / (p + r) };
        assert_eq!(support, row, "support of `{}`", names[c]);
        for (what, want, have) in [("precision", p, got[0]), ("recall", r, got[1]), ("f1", f1, got[2])] {
            assert!(close(have, want, 5e-5 + 1e-9), "{what} of `{}`: printed {have}, the matrix gives {want:.6}", names[c]);
        }
        f1s.push(f1);
    }
    let macro_line: Vec<&str> = lines[stats + 1 + n].split_whitespace().collect();
    assert_eq!(&macro_line[..2], ["macro", "f1"]);
    assert!(close(macro_line[2].parse().expect("macro f1"), mean(&f1s), 5e-5 + 1e-9), "{}", lines[stats + 1 + n]);
    assert_eq!(macro_line[3].parse::<usize>().expect("count"), total);
    let acc_line: Vec<&str> = lines[stats + 2 + n].split_whitespace().collect();
    assert_eq!(acc_line[0], "accuracy");
    assert!(close(acc_line[1].parse().expect("accuracy"), correct as f64 / total as f64, 5e-5 + 1e-9));
    assert_eq!(acc_line[2].parse::<usize>().expect("count"), total);
    (names, m)
}

/// Checks one `BLEU ...` line of `tfm eval` against the sacreBLEU-style statistics it prints:
/// the ratio is hyp_len / ref_len, the brevity penalty exp(1 - ref_len / hyp_len) for short
/// output (else 1), and the score the brevity penalty times the geometric mean of the four
/// precisions (0 when one is 0). Returns `(score, sentences)`.
fn check_bleu_line(out: &str, label: &str) -> (f64, usize) {
    let line = out.lines().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("no `{label}` line in:\n{out}"));
    let w: Vec<&str> = line[label.len()..].split_whitespace().collect();
    let score: f64 = w[0].parse().expect("score");
    assert_eq!(w[1], "on");
    let sentences: usize = w[2].parse().expect("sentences");
    let inner = &line[line.find("(BLEU = ").expect("the statistics") + 8..];
    let iw: Vec<&str> = inner.split_whitespace().collect();
    assert_eq!(iw[0].parse::<f64>().expect("inner score"), score, "{line}");
    let p: Vec<f64> = iw[1].split('/').map(|x| x.parse().expect("precision")).collect();
    assert_eq!(p.len(), 4, "{line}");
    let field = |name: &str| -> f64 {
        let i = iw.iter().position(|x| *x == name).unwrap_or_else(|| panic!("no {name} in {line}"));
        iw[i + 2].trim_end_matches(')').parse().expect("a number")
    };
    let (bp, ratio, hyp, refl) = (field("(BP"), field("ratio"), field("hyp_len"), field("ref_len"));
    assert!(refl > 0.0, "{line}");
    assert!(close(ratio, hyp / refl, 5e-4 + 1e-9), "{line}");
    let want_bp = if hyp == 0.0 { 0.0 } else if hyp < refl { (1.0 - refl / hyp).exp() } else { 1.0 };
    assert!(close(bp, want_bp, 5e-4 + 1e-9), "{line}: the brevity penalty should be {want_bp:.4}");
    assert!(p.iter().all(|x| (0.0..=100.0).contains(x)), "{line}");
    if p.iter().all(|&x| x >= 1.0) {
        // Printed to one decimal: each precision is within 0.05 of the true one.
        let geo = (p.iter().map(|x| x.ln()).sum::<f64>() / 4.0).exp() * bp;
        let slack = geo * p.iter().map(|x| 0.05 / x).sum::<f64>() / 4.0 + 0.01;
        assert!(close(score, geo, slack), "{line}: expected about {geo:.2}");
    } else if p.iter().all(|&x| x == 0.0) {
        assert_eq!(score, 0.0, "{line}");
    }
    (score, sentences)
}

/// The lines of `file` taken as `label<TAB>text` rows, `take` of each label in the given order.
fn balanced_slice(file: &Path, labels: &[&str], take: usize, out: &Path) {
    let body = std::fs::read_to_string(file).expect("read the dataset");
    let mut rows = String::new();
    for label in labels {
        let mut n = 0;
        for line in body.lines().filter(|l| l.split('\t').next() == Some(label)) {
            if n == take {
                break;
            }
            rows.push_str(line);
            rows.push('\n');
            n += 1;
        }
        assert_eq!(n, take, "fewer than {take} `{label}` rows in {}", file.display());
    }
    std::fs::write(out, rows).expect("write the slice");
}

// ---------------------------------------------------------------------------------------------
// Learning on the real datasets
// ---------------------------------------------------------------------------------------------

/// Trains `bert_mini` by masked-token prediction on the first 100,000 bytes of tiny Shakespeare.
fn train_mlm(tmp: &Path, out: &Path, steps: usize) -> Output {
    let text = std::fs::read(data("tinyshakespeare.txt")).expect("read tiny Shakespeare");
    let slice = tmp.join("shakespeare.txt");
    std::fs::write(&slice, &text[..100_000]).expect("write the slice");
    let mut c = tfm();
    c.args(["train", "examples/bert_sms.tfm", "--model", "bert_mini", "--config", "examples/bert_mlm.yaml", "--data"]).arg(&slice);
    c.arg("--out").arg(out).args(TINY_BERT).args(["--set", "context=32", "--cfg", "context=32"]);
    c.args(["--steps", &steps.to_string(), "--batch", "16", "--lr", "3e-3", "--no-progress"]);
    c.args(["--cfg", "schedule.warmup=5", "--cfg", "eval.every=20", "--cfg", "eval.batches=2", "--cfg", "logging.every=1"]);
    run(&mut c)
}

#[test]
fn masked_lm_learns_and_eval_reports_masked_accuracy() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("mlm");
    let stdout = ok(&train_mlm(tmp.path(), &out, 60));
    // The loss starts near ln 261 = 5.56 (uniform over the byte vocabulary). Over 60 steps the
    // mean of the last 5 losses was measured at x0.61 of the first 5 (the run configuration's
    // seed, 1337); asserted: at most x0.8 (falls by at least 20%).
    assert_learns(&out, 60, 5, 0.8);
    assert!(stdout.contains("masked accuracy"), "{stdout}");
    let o = run(tfm().args(["eval", "examples/bert_sms.tfm", "--model", "bert_mini", "--checkpoint"]).arg(&out));
    let report = ok(&o);
    let loss = figure(&report, "masked loss");
    assert!(loss.is_finite() && loss > 0.0 && loss < 261f64.ln(), "{report}");
    let acc = figure(&report, "masked accuracy");
    let line = report.lines().find(|l| l.starts_with("masked accuracy")).expect("line");
    let count: usize = line.split('(').nth(1).and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok()).expect("masked count");
    // 15% of the bytes of the evaluated windows (at least 2 of 32 bytes each) are masked.
    assert!(count >= 100, "{report}");
    // Guessing uniformly scores 1/261 = 0.4%; measured 17.2% (the frequent bytes are learned).
    assert!(acc > 8.0 && acc <= 100.0, "{report}");
}

#[test]
fn fine_tuning_from_a_masked_lm_run_reports_what_was_loaded() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mlm = tmp.path().join("mlm");
    ok(&train_mlm(tmp.path(), &mlm, 4));
    let slice = tmp.path().join("sms.tsv");
    balanced_slice(&data("sms_spam_collection.tsv"), &["ham", "spam"], 50, &slice);
    let mut c = tfm();
    c.args(["train", "examples/bert_sms.tfm", "--model", "bert_sms", "--config", "examples/bert_sms.yaml", "--data"]).arg(&slice);
    c.arg("--out").arg(tmp.path().join("ft")).args(TINY_BERT).args(["--set", "context=32", "--cfg", "context=32"]);
    c.arg("--cfg").arg(format!("init_from={}", mlm.display()));
    c.args(["--steps", "2", "--batch", "8", "--no-progress"]);
    let o = run(&mut c);
    ok(&o);
    let err = text(&o.stderr);
    assert!(err.contains("initialised from"), "{err}");
    assert!(err.contains("mlm/checkpoints/best/model.safetensors (step 4)"), "{err}");
    // `loaded N tensors`, then `new (kept as initialised) M tensors` and their names indented.
    let lines: Vec<&str> = err.lines().collect();
    let loaded = lines.iter().find(|l| l.starts_with("loaded ")).unwrap_or_else(|| panic!("no loaded line:\n{err}"));
    let n_loaded: usize = loaded.split_whitespace().nth(1).and_then(|x| x.parse().ok()).expect("a count");
    let at = lines.iter().position(|l| l.starts_with("new ")).unwrap_or_else(|| panic!("no new line:\n{err}"));
    let new: Vec<&str> = lines[at + 1..].iter().take_while(|l| l.starts_with("  ")).map(|l| l.trim()).collect();
    assert_eq!(new, ["head.weight", "head.bias"], "only the classifier head is new:\n{err}");
    assert!(lines[at].contains(" 2 tensors"), "{}", lines[at]);
    // The encoder of one layer, the embeddings and the pooler all come from the checkpoint.
    assert!(n_loaded >= 20, "{err}");
    assert!(err.contains("shape mismatches 0"), "{err}");
}

#[test]
fn classify_learns_on_sms_and_eval_and_predict_work() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // The first 200 spam and 200 ham messages: balanced, so predicting the majority class gives
    // no loss reduction and no accuracy above 50%.
    let slice = tmp.path().join("sms.tsv");
    balanced_slice(&data("sms_spam_collection.tsv"), &["ham", "spam"], 200, &slice);
    let out = tmp.path().join("sms");
    let mut c = tfm();
    c.args(["train", "examples/bert_sms.tfm", "--model", "bert_sms", "--config", "examples/bert_sms.yaml", "--data"]).arg(&slice);
    c.arg("--out").arg(&out).args(TINY_BERT).args(["--set", "context=64", "--cfg", "context=64", "--cfg", "init_from=null"]);
    c.args(["--steps", "120", "--batch", "32", "--lr", "5e-3", "--no-progress"]);
    c.args(["--cfg", "schedule.warmup=10", "--cfg", "eval.every=0", "--cfg", "logging.every=1"]);
    let stdout = ok(&run(&mut c));
    // Starts at ln 2 = 0.69. Mean of the last 10 losses over the first 10: measured x0.50 (seed
    // 1337), and x0.39 to x0.68 over seeds 1-3 at 100 steps; asserted: at most x0.8 (falls by
    // at least 20%).
    assert_learns(&out, 120, 10, 0.8);
    check_classification(&stdout);
    let o = run(tfm().args(["eval", "examples/bert_sms.tfm", "--model", "bert_sms", "--checkpoint"]).arg(&out));
    let report = ok(&o);
    let (names, m) = check_classification(&report);
    assert_eq!(names, ["ham", "spam"]);
    // 20% of each class is held out: 40 and 40.
    assert_eq!(m.iter().map(|r| r.iter().sum::<usize>()).collect::<Vec<_>>(), [40, 40]);
    // Chance is 50%; measured 87.5% (seed 1337), 82-89% over seeds 1-3 at 100 steps.
    assert!(figure(&report, "test accuracy") >= 65.0, "{report}");
    let o = run(tfm().args(["predict", "examples/bert_sms.tfm", "--model", "bert_sms", "--checkpoint"]).arg(&out).arg(
        "WINNER!! You have won a 1000 cash prize. Call 09061701461 now to claim",
    ));
    let said = ok(&o);
    assert!(["ham\n", "spam\n"].contains(&said.as_str()), "{said:?}");
    // The probabilities go to stderr, one per class, summing to 1.
    let probs: Vec<f64> = text(&o.stderr)
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() == 2 && (w[0] == "ham" || w[0] == "spam")).then(|| w[1].parse().expect("a probability"))
        })
        .collect();
    assert_eq!(probs.len(), 2, "{}", text(&o.stderr));
    assert!(close(probs.iter().sum(), 1.0, 2e-4), "{probs:?}");
}

/// The English sentences of the first `limit` pairs of `file` that are held out: the rounded 5%
/// of the distinct ones.
fn held_out_sentences(file: &Path, limit: usize) -> usize {
    let body = std::fs::read_to_string(file).expect("read eng-fra");
    let mut english: Vec<&str> = body.lines().take(limit).map(|l| l.split('\t').next().expect("a field")).collect();
    english.sort_unstable();
    english.dedup();
    (english.len() as f64 * 0.05).round() as usize
}

/// Trains a translation example on the first 300 pairs of eng-fra (one to four words each).
fn train_translation(name: &str, out: &Path, steps: usize, extra: &[&str]) -> String {
    let mut c = tfm();
    c.arg("train").arg(format!("examples/{name}.tfm")).arg("--config").arg(format!("examples/{name}.yaml"));
    c.arg("--data").arg(data("eng-fra.tsv")).arg("--out").arg(out);
    c.args(["--set", "layers=1", "--set", "d_model=32", "--set", "heads=2", "--set", "ffn=64", "--set", "vocab=512"]).args(extra);
    c.args(["--cfg", "data.max_vocab=512", "--cfg", "data.limit=300", "--cfg", "context=16"]);
    c.args(["--steps", &steps.to_string(), "--batch", "32", "--lr", "5e-3", "--no-progress"]);
    c.args(["--cfg", "schedule.warmup=10", "--cfg", "eval.every=0", "--cfg", "logging.every=1"]);
    ok(&run(&mut c))
}

/// `tfm eval` with beam search on a translation run: test loss, BLEU greedy and beam 3, and the
/// samples.
fn eval_translation(name: &str, out: &Path) -> String {
    let report = ok(&run(tfm().arg("eval").arg(format!("examples/{name}.tfm")).arg("--checkpoint").arg(out).args(["--beam", "3"])));
    let loss = figure(&report, "test loss");
    assert!(loss.is_finite() && loss > 0.0 && loss < 512f64.ln(), "{report}");
    let held = held_out_sentences(&data("eng-fra.tsv"), 300);
    assert!(held > 0);
    for label in ["BLEU greedy", "BLEU beam 3"] {
        let (score, sentences) = check_bleu_line(&report, label);
        assert_eq!(sentences, held, "{report}");
        assert!((0.0..=100.0).contains(&score));
    }
    assert!(report.contains("    -> "), "samples are shown:\n{report}");
    report
}

#[test]
fn translate_transformer_learns_evaluates_bleu_and_translates_a_prompt() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("tr");
    let stdout = train_translation("translate_transformer", &out, 150, &[]);
    assert!(stdout.contains("BLEU greedy"), "{stdout}");
    // Starts near ln 512 = 6.2. Mean of the last 10 losses over the first 10: measured x0.44
    // (seed 1337), x0.42 to x0.45 over seeds 1-2; asserted: at most x0.7 (falls by at least 30%).
    assert_learns(&out, 150, 10, 0.7);
    eval_translation("translate_transformer", &out);
    let o = run(tfm().args(["generate", "examples/translate_transformer.tfm", "--checkpoint"]).arg(&out).args(["--prompt", "I am sad."]));
    let said = ok(&o);
    assert_eq!(said.lines().count(), 1, "{said:?}");
    assert!(said.ends_with('\n') && !said.trim().is_empty(), "{said:?}");
}

#[test]
fn translate_t5_learns_and_evaluates_bleu() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("t5");
    train_translation("translate_t5", &out, 200, &["--set", "head_dim=16"]);
    // T5 learns more slowly here: mean of the last 10 losses over the first 10 measured at x0.58
    // after 200 steps (seed 1337), x0.64-x0.66 after 150 (seeds 1-2); asserted: at most x0.85
    // (falls by at least 15%).
    assert_learns(&out, 200, 10, 0.85);
    eval_translation("translate_t5", &out);
}

/// Mixed precision beyond the GPT: the Transformer (an encoder and a decoder with padding masks,
/// cross-attention, sinusoidal positions) and a Llama-style decoder (RMS norms, rotary positions,
/// SwiGLU, grouped-query attention) run in half precision. Same weights and batch, so the first
/// step's loss must be the f32 one to within half precision's rounding, and the run learns.
#[test]
fn mixed_precision_runs_the_transformer_and_llama_close_to_f32() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let first_loss = |dir: &Path| losses(dir)[0];
    let transformer = |p: &str| {
        let out = tmp.path().join(format!("tr-{p}"));
        train_translation("translate_transformer", &out, 20, &["--cfg", &format!("precision={p}")]);
        out
    };
    let (tr32, tr16) = (transformer("f32"), transformer("f16"));
    let (a, b) = (first_loss(&tr32), first_loss(&tr16));
    eprintln!("Transformer first loss: f32 {a}, f16 {b}");
    assert!((a - b).abs() < 0.01 * a, "Transformer first loss: f32 {a}, f16 {b}");
    assert_learns(&tr16, 20, 5, 0.9);
    let llama = |p: &str| {
        let out = tmp.path().join(format!("llama-{p}"));
        let mut c = tfm();
        c.args(["train", "examples/llama_shakespeare.tfm", "--data"]).arg(data("tinyshakespeare.txt")).arg("--out").arg(&out);
        c.args(["--set", "layers=1", "--set", "d_model=32", "--set", "heads=4", "--set", "kv_heads=2", "--set", "ffn=64", "--set", "context=32"]);
        c.args(["--steps", "20", "--batch", "8", "--lr", "1e-2", "--no-progress", "--cfg", "schedule.warmup=2", "--cfg", "eval.every=0"]);
        c.args(["--cfg", "logging.every=1", "--cfg", &format!("precision={p}")]);
        ok(&run(&mut c));
        out
    };
    let (l32, l16) = (llama("f32"), llama("f16"));
    let (a, b) = (first_loss(&l32), first_loss(&l16));
    eprintln!("Llama first loss: f32 {a}, f16 {b}");
    assert!((a - b).abs() < 0.01 * a, "Llama first loss: f32 {a}, f16 {b}");
    assert_learns(&l16, 20, 5, 0.9);
}

#[test]
fn vit_learns_mnist_and_eval_reports_accuracy() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("vit");
    let mut c = tfm();
    c.args(["train", "examples/vit_mnist.tfm", "--config", "examples/vit_mnist.yaml", "--data"]).arg(data("mnist")).arg("--out").arg(&out);
    c.args(TINY_BERT).args(["--cfg", "data.limit=1000", "--steps", "200", "--batch", "32", "--lr", "3e-3", "--no-progress"]);
    c.args(["--cfg", "schedule.warmup=10", "--cfg", "eval.every=0", "--cfg", "logging.every=1"]);
    ok(&run(&mut c));
    // Starts at ln 10 = 2.30. Mean of the last 10 losses over the first 10 measured at x0.57
    // (seed 1337), x0.55-x0.56 (seeds 1-2); asserted: at most x0.75 (falls by at least 25%).
    assert_learns(&out, 200, 10, 0.75);
    let report = ok(&run(tfm().args(["eval", "examples/vit_mnist.tfm", "--checkpoint"]).arg(&out).args(["--limit", "500"])));
    let (names, m) = check_classification(&report);
    assert_eq!(names, ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]);
    assert_eq!(m.iter().flatten().sum::<usize>(), 500, "`--limit 500` evaluates 500 test images");
    // Chance is 10%; measured 48.6% (seed 1337).
    assert!(figure(&report, "test accuracy") >= 25.0, "{report}");
}

#[test]
fn clip_learns_mnist_captions_and_eval_reports_zero_shot_accuracy() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("clip");
    let mut c = tfm();
    c.args(["train", "examples/clip_mnist.tfm", "--config", "examples/clip_mnist.yaml", "--data"]).arg(data("mnist")).arg("--out").arg(&out);
    for s in ["vision_layers=1", "text_layers=1", "vision_width=32", "text_width=32", "embed_dim=32", "vision_heads=2", "text_heads=2"] {
        c.args(["--set", s]);
    }
    c.args(["--cfg", "data.limit=1000", "--steps", "200", "--batch", "32", "--lr", "5e-3", "--no-progress"]);
    c.args(["--cfg", "schedule.warmup=10", "--cfg", "eval.every=0", "--cfg", "logging.every=1"]);
    ok(&run(&mut c));
    // The contrastive loss starts at ln 32 = 3.47 and cannot reach 0 (a batch holds several
    // images of each digit). Mean of the last 10 losses over the first 10 measured at x0.84
    // (seed 1337), x0.82-x0.85 (seeds 1-2); asserted: at most x0.93 (falls by at least 7%).
    assert_learns(&out, 200, 10, 0.93);
    let report = ok(&run(tfm().args(["eval", "examples/clip_mnist.tfm", "--checkpoint"]).arg(&out).args(["--limit", "500"])));
    let acc = figure(&report, "zero-shot");
    let (correct, total) = fraction(&report, "zero-shot");
    assert_eq!(total, 500);
    assert!(close(acc, 100.0 * correct as f64 / total as f64, 0.005 + 1e-9), "{report}");
    assert!(report.contains("against 10 captions"), "{report}");
    assert!(report.contains("captions        \"a photo of the digit zero\""), "{report}");
    // Chance is 10% (about 1.3% standard deviation on 500 images); measured 26.2% (seed
    // 1337), 22-30% over other seeds.
    assert!(acc >= 13.0, "{report}");
}

// ---------------------------------------------------------------------------------------------
// Metrics on a hand-made case
// ---------------------------------------------------------------------------------------------

/// 20 `alpha`, 10 `beta` and 10 `gamma` lines, each class written with its own 8 letters, so a
/// trained classifier separates them perfectly.
fn hand_made(path: &Path) {
    let letters = [("alpha", "abcdefgh", 20), ("beta", "ijklmnop", 10), ("gamma", "qrstuvwx", 10)];
    let mut rows = String::from("label\ttext\n");
    for (label, set, n) in letters {
        let set: Vec<char> = set.chars().collect();
        for i in 0..n {
            let word: String = (0..4 + i % 4).map(|j| set[(i * 3 + j * 5) % 8]).collect();
            rows.push_str(&format!("{label}\t{word}\n"));
        }
    }
    std::fs::write(path, rows).expect("write");
}

#[test]
fn classify_metrics_on_a_hand_made_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("letters.tsv");
    hand_made(&file);
    let out = tmp.path().join("run");
    let mut c = tfm();
    c.args(["train", "examples/bert_sms.tfm", "--model", "bert_sms", "--task", "classify", "--data"]).arg(&file).arg("--out").arg(&out);
    c.args(TINY_BERT).args(["--set", "context=16", "--set", "classes=3", "--steps", "500", "--batch", "16", "--lr", "3e-3"]);
    c.args(["--cfg", "schedule.warmup=5", "--cfg", "eval.every=0", "--no-progress"]);
    ok(&run(&mut c));
    let report = ok(&run(tfm().args(["eval", "examples/bert_sms.tfm", "--model", "bert_sms", "--checkpoint"]).arg(&out)));
    check_classification(&report);
    // Worked by hand: the header line is skipped; 20% of each class is held out (stratified),
    // round(20 x 0.2) = 4, round(10 x 0.2) = 2 and 2; every test example is classified
    // correctly, so precision, recall and F1 are 1 for each class and accuracy is 8 / 8. (The
    // training loss reaches below 0.06 by step 300 for seeds 1-5 and 1337; trained for 500.)
    let expected = "\
test accuracy   100.00% (8 / 8)
gold\\pred  alpha   beta  gamma
alpha          4      0      0
beta           0      2      0
gamma          0      0      2

class      precision  recall      f1  support
alpha         1.0000  1.0000  1.0000        4
beta          1.0000  1.0000  1.0000        2
gamma         1.0000  1.0000  1.0000        2
macro f1                      1.0000        8
accuracy                      1.0000        8
";
    let from = report.find("test accuracy").expect("a test accuracy line");
    assert_eq!(&report[from..], expected);
    // Unseen words of each class's letters.
    for (words, class) in [("hgfe", "alpha"), ("ponm lk", "beta"), ("xqxq", "gamma")] {
        let said = ok(&run(tfm().args(["predict", "examples/bert_sms.tfm", "--model", "bert_sms", "--checkpoint"]).arg(&out).arg(words)));
        assert_eq!(said, format!("{class}\n"), "`{words}`");
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// A TSV whose third line has no tab.
fn malformed_tsv(tmp: &Path) -> PathBuf {
    let file = tmp.join("bad.tsv");
    std::fs::write(&file, "ham\thello there\nspam\tWIN cash now\nham no tab on this line\nspam\tfree\n").expect("write");
    file
}

#[test]
fn error_malformed_tsv_line_for_classify_names_file_and_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = malformed_tsv(tmp.path());
    let o = run(tfm().args(["train", "examples/bert_sms.tfm", "--model", "bert_sms", "--task", "classify", "--data"]).arg(&file).arg("--out").arg(tmp.path().join("o")));
    let err = failure(&o, 1, tmp.path());
    assert!(err.contains("[TMP]/bad.tsv:3:"), "{err}");
    insta::assert_snapshot!("malformed_tsv_classify", err);
}

#[test]
fn error_malformed_tsv_line_for_translate_names_file_and_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = malformed_tsv(tmp.path());
    let o = run(tfm().args(["train", "examples/translate_transformer.tfm", "--config", "examples/translate_transformer.yaml", "--data"]).arg(&file).arg("--out").arg(tmp.path().join("o")));
    let err = failure(&o, 1, tmp.path());
    assert!(err.contains("[TMP]/bad.tsv:3:"), "{err}");
    insta::assert_snapshot!("malformed_tsv_translate", err);
}

#[test]
fn error_more_labels_than_classes_names_the_spec_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("three.tsv");
    std::fs::write(&file, "a\tone\nb\ttwo\nc\tthree\na\tfour\nb\tfive\nc\tsix\n").expect("write");
    let o = run(tfm().args(["train", "examples/bert_sms.tfm", "--model", "bert_sms", "--task", "classify", "--data"]).arg(&file).arg("--out").arg(tmp.path().join("o")));
    let err = failure(&o, 1, tmp.path());
    assert!(err.contains("examples/bert_sms.tfm:54:"), "{err}");
    insta::assert_snapshot!("more_labels_than_classes", err);
}

#[test]
fn error_image_size_that_is_not_mnist_names_the_input_and_hints() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // 32 x 32 in patches of 8 is a valid ViT, but MNIST's images are 28 x 28.
    let o = run(tfm()
        .args(["train", "examples/vit_mnist.tfm", "--config", "examples/vit_mnist.yaml", "--set", "image=32", "--set", "patch=8", "--data"])
        .arg(data("mnist"))
        .arg("--out")
        .arg(tmp.path().join("o")));
    let err = failure(&o, 1, tmp.path());
    assert!(err.contains("input images: f32[B, channels, image, image]"), "{err}");
    assert!(err.contains("--set image=28"), "{err}");
    insta::assert_snapshot!("image_size_not_mnist", err);
}

#[test]
fn error_predict_on_a_checkpoint_that_is_not_a_classifier() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("mlm");
    ok(&train_mlm(tmp.path(), &out, 2));
    let o = run(tfm().args(["predict", "examples/bert_sms.tfm", "--model", "bert_mini", "--checkpoint"]).arg(&out).arg("hello"));
    let err = failure(&o, 1, tmp.path());
    assert!(err.contains("masked_lm"), "{err}");
    insta::assert_snapshot!("predict_not_a_classifier", err);
}

#[test]
fn error_task_without_data_path() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = tmp.path().join("run.yaml");
    std::fs::write(&cfg, "spec: bert_sms.tfm\ndata:\n  task: classify\n  tokenizer: byte\nsteps: 10\n").expect("write");
    let o = run(tfm().args(["train", "examples/bert_sms.tfm", "--model", "bert_sms", "--config"]).arg(&cfg));
    let err = failure(&o, 1, tmp.path());
    insta::assert_snapshot!("task_without_data_path", err);
    // The same on the command line is a usage error.
    let o = run(tfm().args(["train", "examples/bert_sms.tfm", "--task", "masked-lm"]));
    let err = failure(&o, 2, tmp.path());
    assert!(err.contains("this task reads a data file: expected `--data PATH`"), "{err}");
}

#[test]
fn error_translate_with_the_tokens_tokenizer() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let o = run(tfm()
        .args(["train", "examples/translate_transformer.tfm", "--config", "examples/translate_transformer.yaml", "--cfg", "data.tokenizer=tokens", "--data"])
        .arg(data("eng-fra.tsv"))
        .arg("--out")
        .arg(tmp.path().join("o")));
    let err = failure(&o, 1, tmp.path());
    insta::assert_snapshot!("translate_with_tokens_tokenizer", err);
}
