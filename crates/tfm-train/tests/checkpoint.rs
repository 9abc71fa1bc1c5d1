//! Checkpoints: bit-exact round trip, truncation, corruption, spec hash and shape mismatches,
//! and a failed write that leaves the previous checkpoint intact.

use dfdx::prelude::*;
use tfm_train::checkpoint::{self, Checkpoint, CheckpointMeta};
use tfm_train::optim::{GradSet, OptimSettings, Optimizer};
use tfm_train::{Param, ParamStore, Tokenizer};

fn param(dev: &Cpu, name: &str, shape: Vec<usize>, seed: f32, decay: bool) -> Param<Cpu> {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|i| ((i as f32 + seed) * 0.37).sin() * 1e-2 + seed * 1e-7)
        .collect();
    Param {
        name: name.into(),
        shape,
        value: dev.tensor_from_vec(data, (n,)),
        trainable: true,
        decay,
    }
}

fn model(dev: &Cpu, wide: usize) -> ParamStore<Cpu> {
    ParamStore {
        params: vec![
            param(dev, "tok.weight", vec![5, wide], 1.0, false),
            param(
                dev,
                "blocks.0.attn.qkv.weight",
                vec![3 * wide, wide],
                2.0,
                true,
            ),
            param(dev, "ln_f.bias", vec![wide], 3.0, false),
        ],
    }
}

fn meta(hash: &str) -> CheckpointMeta {
    CheckpointMeta {
        step: 7,
        rng_state: 0xDEAD_BEEF_1234,
        config_yaml: "spec: m.tfm\n".into(),
        spec_hash: hash.into(),
        tokenizer: Tokenizer::char_from_corpus("hello"),
        best_val_loss: Some(1.25),
        val_loss: None,
        optimizer: "adamw".into(),
        optimizer_step: 2,
        classes: Vec::new(),
        loss_scale: None,
    }
}

/// Two optimizer steps so the moments are non-trivial.
fn trained(dev: &Cpu) -> (ParamStore<Cpu>, Optimizer<Cpu>) {
    let mut s = model(dev, 4);
    let mut opt = Optimizer::new(OptimSettings::default(), &s);
    for k in 0..2 {
        let mut all = Gradients::leaky();
        for p in &s.params {
            let n = p.numel();
            let c =
                dev.tensor_from_vec((0..n).map(|i| (i as f32 - k as f32) * 0.1).collect(), (n,));
            all = p
                .value
                .clone()
                .traced(all)
                .try_mul(c)
                .expect("mul")
                .try_sum::<(), _>()
                .expect("sum")
                .backward();
        }
        let g = GradSet::from_gradients(&s, all).expect("grads");
        opt.update(&mut s, &g, 1e-2).expect("update");
    }
    (s, opt)
}

fn bits(s: &ParamStore<Cpu>) -> Vec<Vec<u32>> {
    s.params
        .iter()
        .map(|p| p.value.as_vec().iter().map(|x| x.to_bits()).collect())
        .collect()
}

#[test]
fn round_trip_is_bit_exact() {
    let dev = Cpu::default();
    let (s, opt) = trained(&dev);
    let dir = tempfile::tempdir().expect("tempdir");
    let path =
        checkpoint::save(&dir.path().join("last"), &s, Some(&opt), &meta("abc")).expect("save");
    assert_eq!(path, dir.path().join("last").join("model.safetensors"));
    let ck = Checkpoint::read(&dir.path().join("last")).expect("read");
    assert_eq!(ck.meta, meta("abc"));
    assert_eq!(
        ck.tensors["blocks.0.attn.qkv.weight"].0,
        vec![12, 4],
        "weights keep their shapes"
    );
    assert!(
        ck.tensors.contains_key("optim.m.tok.weight")
            && ck.tensors.contains_key("optim.v.ln_f.bias")
    );
    let mut fresh = model(&dev, 4);
    let mut opt2 = Optimizer::new(OptimSettings::default(), &fresh);
    ck.restore(&mut fresh, Some(&mut opt2)).expect("restore");
    assert_eq!(bits(&fresh), bits(&s));
    assert_eq!(opt2.step, 2);
    let a: Vec<_> = opt
        .state_tensors(&s)
        .into_iter()
        .map(|(n, sh, d)| (n, sh, d.iter().map(|x| x.to_bits()).collect::<Vec<_>>()))
        .collect();
    let b: Vec<_> = opt2
        .state_tensors(&fresh)
        .into_iter()
        .map(|(n, sh, d)| (n, sh, d.iter().map(|x| x.to_bits()).collect::<Vec<_>>()))
        .collect();
    assert_eq!(a.len(), 6);
    assert_eq!(a, b);
}

#[test]
fn truncated_file_is_a_clear_error() {
    let dev = Cpu::default();
    let (s, opt) = trained(&dev);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = checkpoint::save(dir.path(), &s, Some(&opt), &meta("abc")).expect("save");
    let bytes = std::fs::read(&path).expect("read");
    for cut in [bytes.len() - 3, bytes.len() / 2, 20, 4] {
        std::fs::write(&path, &bytes[..cut]).expect("truncate");
        let e = Checkpoint::read(&path).expect_err("truncated");
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!(
                "checkpoint `{}`: not a readable safetensors file",
                path.display()
            )),
            "{msg}"
        );
        assert!(e.hint().expect("hint").contains("truncated or damaged"));
    }
}

#[test]
fn corrupted_data_fails_the_checksum() {
    let dev = Cpu::default();
    let (s, opt) = trained(&dev);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = checkpoint::save(dir.path(), &s, Some(&opt), &meta("abc")).expect("save");
    let mut bytes = std::fs::read(&path).expect("read");
    let n = bytes.len();
    bytes[n - 2] ^= 0x40;
    std::fs::write(&path, &bytes).expect("corrupt");
    let e = Checkpoint::read(&path).expect_err("corrupt");
    assert!(
        e.to_string()
            .contains("the tensor data does not match its checksum"),
        "{e}"
    );
}

#[test]
fn wrong_spec_hash_shows_both_hashes() {
    let dev = Cpu::default();
    let s = model(&dev, 4);
    let dir = tempfile::tempdir().expect("tempdir");
    checkpoint::save(dir.path(), &s, None, &meta("1111aaaa")).expect("save");
    let ck = Checkpoint::read(dir.path()).expect("read");
    assert!(ck.check_spec_hash("1111aaaa").is_ok());
    let e = ck.check_spec_hash("2222bbbb").expect_err("mismatch");
    assert_eq!(
        e.to_string(),
        format!(
            "checkpoint `{}`: spec hash mismatch: expected 2222bbbb (the current spec), found 1111aaaa (the spec the checkpoint was trained with)",
            dir.path().join("model.safetensors").display()
        )
    );
}

#[test]
fn shape_and_name_mismatches_are_listed() {
    let dev = Cpu::default();
    let s = model(&dev, 4);
    let dir = tempfile::tempdir().expect("tempdir");
    checkpoint::save(dir.path(), &s, None, &meta("h")).expect("save");
    let ck = Checkpoint::read(dir.path()).expect("read");
    let mut other = model(&dev, 6);
    other.params[2].name = "ln_f.weight".into();
    let before = bits(&other);
    let e = ck.restore(&mut other, None).expect_err("mismatch");
    let msg = e.to_string();
    assert!(
        msg.contains("`tok.weight`: expected shape [5, 6], found [5, 4]"),
        "{msg}"
    );
    assert!(
        msg.contains("`blocks.0.attn.qkv.weight`: expected shape [18, 6], found [12, 4]"),
        "{msg}"
    );
    assert!(msg.contains("missing `ln_f.weight` [6]"), "{msg}");
    assert!(
        msg.contains("unexpected `ln_f.bias` (not a weight of this model)"),
        "{msg}"
    );
    assert_eq!(
        bits(&other),
        before,
        "nothing is loaded when anything mismatches"
    );
}

#[test]
fn failed_write_leaves_the_previous_checkpoint() {
    let dev = Cpu::default();
    let (s, opt) = trained(&dev);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = checkpoint::save(dir.path(), &s, Some(&opt), &meta("old")).expect("save");
    let old = std::fs::read(&path).expect("read");
    // Block the temporary file: a directory where it would be created makes the write fail.
    std::fs::create_dir(checkpoint::temp_path(&path)).expect("blocker");
    let e = checkpoint::save(dir.path(), &s, Some(&opt), &meta("new")).expect_err("write fails");
    assert!(e.to_string().starts_with("cannot create"), "{e}");
    assert_eq!(std::fs::read(&path).expect("read"), old);
    assert_eq!(
        Checkpoint::read(dir.path())
            .expect("old is intact")
            .meta
            .spec_hash,
        "old"
    );
    std::fs::remove_dir(checkpoint::temp_path(&path)).expect("unblock");
    checkpoint::save(dir.path(), &s, Some(&opt), &meta("new")).expect("save");
    assert_eq!(
        Checkpoint::read(dir.path()).expect("new").meta.spec_hash,
        "new"
    );
}

#[test]
fn a_foreign_safetensors_file_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("model.safetensors");
    let data = [0u8; 8];
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2], &data)
        .expect("view");
    let bytes = safetensors::tensor::serialize(vec![("w", view)], &None).expect("serialize");
    std::fs::write(&path, bytes).expect("write");
    let e = Checkpoint::read(&path).expect_err("foreign");
    assert!(
        e.to_string()
            .contains("expected format `tfm-checkpoint/1`, found a safetensors file without it"),
        "{e}"
    );
}
