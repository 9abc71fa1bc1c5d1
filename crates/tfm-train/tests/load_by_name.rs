//! Loading a checkpoint of one spec into a model of another by parameter names: renamed
//! prefixes, shape mismatches, new and unused weights, optimizer state left out, and the error
//! when nothing matches.

use dfdx::prelude::*;
use tfm_diag::SourceMap;
use tfm_elab::{check_source, CheckOptions};
use tfm_runtime::Runtime;
use tfm_train::checkpoint::{self, load_by_name, Checkpoint, CheckpointMeta};
use tfm_train::optim::{GradSet, OptimSettings, Optimizer};
use tfm_train::{ParamStore, Tokenizer};

/// The checkpoint's spec: embedding 11 x 8, a linear body, a final LayerNorm.
const BASE: &str = "
model base {
    vocab: int = 11
    d: int = 8
    input tokens: i64[B, T]
    layer tok = embedding(vocab, d)
    layer body = linear(d, d)
    layer ln = layer_norm(d)
    output logits = ln(body(tok(tokens))) @ tok.weight^T
    objective next_token(logits, tokens)
}
";

/// The receiving spec: a larger vocabulary (13), the body renamed `trunk`, no LayerNorm, and a
/// new bias-free `extra` layer.
const TUNED: &str = "
model tuned {
    vocab: int = 13
    d: int = 8
    input tokens: i64[B, T]
    layer tok = embedding(vocab, d)
    layer trunk = linear(d, d)
    layer extra = linear(d, d, bias: false)
    output logits = extra(trunk(tok(tokens))) @ tok.weight^T
    objective next_token(logits, tokens)
}
";

/// Shares no parameter name with `base`.
const OTHER: &str = "
model other {
    input tokens: i64[B, T]
    layer emb = embedding(11, 8)
    output logits = emb(tokens) @ emb.weight^T
    objective next_token(logits, tokens)
}
";

fn store(name: &str, text: &str, seed: u64) -> ParamStore<Cpu> {
    let mut sources = SourceMap::new();
    let checked = check_source(name, text, &CheckOptions::default(), &mut sources);
    assert!(
        checked.diagnostics.iter().all(|d| !d.is_error()),
        "{name}: {:?}",
        checked.diagnostics
    );
    let model = checked.models.into_iter().next().expect("one model").model;
    Runtime::new(model, Cpu::default())
        .expect("runtime")
        .init_params(seed)
}

fn meta() -> CheckpointMeta {
    CheckpointMeta {
        step: 3,
        rng_state: 1,
        config_yaml: "spec: base.tfm\n".into(),
        spec_hash: checkpoint::spec_hash(BASE),
        tokenizer: Tokenizer::char_from_corpus("hello"),
        best_val_loss: None,
        val_loss: None,
        optimizer: "adamw".into(),
        optimizer_step: 0,
        classes: Vec::new(),
        loss_scale: None,
    }
}

/// Saves `base` (seed 1) with its optimizer state and reads it back.
fn base_checkpoint(dir: &std::path::Path) -> (ParamStore<Cpu>, Checkpoint) {
    let mut base = store("base.tfm", BASE, 1);
    let mut opt = Optimizer::new(OptimSettings::default(), &base);
    // One update with the gradient of sum(w * 0.1) so the optimizer has moments to save.
    let mut grads = Gradients::leaky();
    for p in &base.params {
        grads = p
            .value
            .clone()
            .traced(grads)
            .try_mul(0.1f32)
            .expect("mul")
            .try_sum::<(), _>()
            .expect("sum")
            .backward();
    }
    let g = GradSet::from_gradients(&base, grads).expect("grads");
    opt.update(&mut base, &g, 1e-2).expect("update");
    checkpoint::save(dir, &base, Some(&opt), &meta()).expect("save");
    let ck = Checkpoint::read(dir).expect("read");
    assert!(
        ck.tensors.keys().any(|k| k.starts_with("optim.")),
        "the checkpoint holds optimizer state"
    );
    (base, ck)
}

fn values(s: &ParamStore<Cpu>, name: &str) -> Vec<f32> {
    s.get(name).expect(name).value.as_vec()
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn loads_renamed_weights_and_reports_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, ck) = base_checkpoint(dir.path());
    let mut tuned = store("tuned.tfm", TUNED, 2);
    let before = tuned.clone();
    let map = vec![("body.".to_string(), "trunk.".to_string())];
    let report = load_by_name(&mut tuned, &ck, &map).expect("load");

    assert_eq!(report.loaded, names(&["trunk.weight", "trunk.bias"]));
    assert_eq!(report.new, names(&["extra.weight"]));
    assert_eq!(report.left, names(&["ln.bias", "ln.weight"]));
    assert_eq!(
        report.mismatched,
        vec![("tok.weight".to_string(), vec![13, 8], vec![11, 8])]
    );
    // trunk 8 x 8 + 8 loaded, extra 8 x 8 new, ln 8 + 8 left.
    assert_eq!(
        (report.loaded_numel, report.new_numel, report.left_numel),
        (72, 64, 16)
    );

    // The copied weights are the checkpoint's, bit for bit; the rest keep their values.
    assert_eq!(values(&tuned, "trunk.weight"), values(&base, "body.weight"));
    assert_eq!(values(&tuned, "trunk.bias"), values(&base, "body.bias"));
    assert_ne!(values(&before, "trunk.weight"), values(&base, "body.weight"));
    assert_eq!(values(&tuned, "tok.weight"), values(&before, "tok.weight"));
    assert_eq!(values(&tuned, "extra.weight"), values(&before, "extra.weight"));

    assert_eq!(
        report.to_string(),
        "\
loaded 2 tensors (72 parameters)
new (kept as initialised) 1 tensor (64 parameters)
  extra.weight
left unused in the checkpoint 2 tensors (16 parameters)
  ln.bias
  ln.weight
shape mismatches 1 (not loaded)
  tok.weight: model [13, 8], checkpoint [11, 8]
"
    );
}

#[test]
fn same_spec_loads_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (base, ck) = base_checkpoint(dir.path());
    let mut again = store("base.tfm", BASE, 7);
    let report = load_by_name(&mut again, &ck, &[]).expect("load");
    assert_eq!(
        report.loaded,
        names(&["tok.weight", "body.weight", "body.bias", "ln.weight", "ln.bias"])
    );
    assert!(report.new.is_empty() && report.left.is_empty() && report.mismatched.is_empty());
    for p in &base.params {
        assert_eq!(values(&again, &p.name), p.value.as_vec(), "{}", p.name);
    }
}

#[test]
fn loading_nothing_is_an_error_that_leaves_the_model_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, ck) = base_checkpoint(dir.path());

    let mut other = store("other.tfm", OTHER, 3);
    let before = values(&other, "emb.weight");
    let err = load_by_name(&mut other, &ck, &[]).expect_err("no shared names");
    let text = err.to_string();
    assert!(
        text.contains("expected at least one weight matching the model by name and shape, found none (1 model parameters, 5 checkpoint weights, 0 shape mismatches)"),
        "{text}"
    );
    let hint = err.hint().expect("hint");
    assert!(hint.contains("`emb.weight`") && hint.contains("`body.bias`"), "{hint}");
    assert!(!hint.contains("differ in shape"), "{hint}");
    assert_eq!(values(&other, "emb.weight"), before);

    // Without the prefix map, `tuned` shares only `tok.weight`, whose shape differs.
    let mut tuned = store("tuned.tfm", TUNED, 2);
    let err = load_by_name(&mut tuned, &ck, &[]).expect_err("only a mismatch");
    assert!(err.to_string().contains("1 shape mismatches"), "{err}");
    assert!(err.hint().expect("hint").contains("differ in shape"));

    // The same checkpoint with the map is accepted (see above); a map into the wrong names is not.
    let wrong = vec![("body.".to_string(), "nowhere.".to_string())];
    assert!(load_by_name(&mut tuned, &ck, &wrong).is_err());
}
