//! Checkpoints: one `model.safetensors` file per checkpoint directory holding the weights by their
//! stable names, the optimizer moments (`optim.m.<name>`, `optim.v.<name>`) and, in the
//! safetensors metadata, everything needed to resume (step, data RNG state, run config, spec hash,
//! tokenizer, best validation loss) plus a SHA-256 of the tensor bytes. Files are written
//! atomically: a temporary file in the same directory, fsync, rename, fsync of the directory.
//! A run keeps `<dir>/last/` and `<dir>/best/`.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use dfdx::prelude::*;
use safetensors::tensor::{Dtype as StDtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tfm_runtime::ParamStore;

use crate::data::Tokenizer;
use crate::error::TrainError;
use crate::optim::Optimizer;

pub const FILE_NAME: &str = "model.safetensors";
pub const FORMAT: &str = "tfm-checkpoint/1";

/// Everything besides tensors that a checkpoint records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// Optimizer steps completed.
    pub step: u64,
    /// State of the training data generator after `step` steps.
    pub rng_state: u64,
    /// The run configuration, as YAML.
    pub config_yaml: String,
    /// SHA-256 of the elaborated model (see [`spec_hash`]).
    pub spec_hash: String,
    pub tokenizer: Tokenizer,
    /// Lowest validation loss seen so far.
    pub best_val_loss: Option<f32>,
    /// Validation loss of these weights, if measured.
    pub val_loss: Option<f32>,
    /// Optimiser kind (`adamw`, `sgd`) and its update count.
    pub optimizer: String,
    pub optimizer_step: u64,
    /// Class names by label id, for classifiers (`tfm predict` prints them).
    #[serde(default)]
    pub classes: Vec<String>,
    /// Mixed precision: the dynamic loss scale and the steps taken since it last changed.
    #[serde(default)]
    pub loss_scale: Option<LossScaleState>,
}

/// The state of dynamic loss scaling (saved so that a resumed mixed-precision run goes on
/// exactly as an uninterrupted one).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LossScaleState {
    pub scale: f32,
    pub good_steps: u64,
}

/// Hex SHA-256 of a text (the elaborated IR's serialised form, say).
pub fn spec_hash(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn ck_err(path: &Path, message: impl Into<String>, hint: Option<&str>) -> TrainError {
    TrainError::Checkpoint {
        path: path.to_path_buf(),
        message: message.into(),
        hint: hint.map(String::from),
    }
}

/// Named host tensors, sorted by name.
type HostTensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

fn checksum(tensors: &HostTensors) -> String {
    let mut h = Sha256::new();
    for (name, (shape, data)) in tensors {
        h.update(name.as_bytes());
        h.update([0u8]);
        for d in shape {
            h.update((*d as u64).to_le_bytes());
        }
        for x in data {
            h.update(x.to_le_bytes());
        }
    }
    hex(&h.finalize())
}

/// Serialises the weights, the optimizer state and `meta` into safetensors bytes.
pub fn to_bytes<D: Device<f32>>(
    store: &ParamStore<D>,
    optimizer: Option<&Optimizer<D>>,
    meta: &CheckpointMeta,
) -> Result<Vec<u8>, TrainError> {
    let mut tensors: HostTensors = BTreeMap::new();
    for p in &store.params {
        tensors.insert(p.name.clone(), (p.shape.clone(), p.value.as_vec()));
    }
    if let Some(opt) = optimizer {
        for (name, shape, data) in opt.state_tensors(store) {
            tensors.insert(name, (shape, data));
        }
    }
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, (s, d))| {
            (
                n.clone(),
                s.clone(),
                d.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let mut views = Vec::with_capacity(bytes.len());
    for (n, s, b) in &bytes {
        let v = TensorView::new(StDtype::F32, s.clone(), b).map_err(|e| {
            TrainError::Model(format!(
                "weight `{n}` does not match its shape {s:?}: {e:?}"
            ))
        })?;
        views.push((n.clone(), v));
    }
    let mut info = HashMap::new();
    info.insert("format".to_string(), FORMAT.to_string());
    info.insert(
        "meta".to_string(),
        serde_json::to_string(meta).unwrap_or_default(),
    );
    info.insert("sha256".to_string(), checksum(&tensors));
    safetensors::tensor::serialize(views, &Some(info))
        .map_err(|e| TrainError::Model(format!("cannot serialise the checkpoint: {e:?}")))
}

/// Writes a checkpoint into directory `dir` (created if needed), atomically replacing any
/// previous one there. Returns the file written.
pub fn save<D: Device<f32>>(
    dir: &Path,
    store: &ParamStore<D>,
    optimizer: Option<&Optimizer<D>>,
    meta: &CheckpointMeta,
) -> Result<PathBuf, TrainError> {
    let bytes = to_bytes(store, optimizer, meta)?;
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, "created", e))?;
    let path = dir.join(FILE_NAME);
    write_atomic(&path, &bytes, None)?;
    Ok(path)
}

/// The temporary file a write of `path` goes through.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("checkpoint");
    path.with_file_name(format!(".{name}.tmp"))
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it over `path`; on any
/// failure the temporary file is removed and `path` is untouched. `fail_after` makes the write
/// fail after that many bytes (fault injection for tests).
pub(crate) fn write_atomic(
    path: &Path,
    bytes: &[u8],
    fail_after: Option<usize>,
) -> Result<(), TrainError> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| TrainError::io(&tmp, "created", e))?;
        match fail_after {
            Some(n) if n < bytes.len() => {
                f.write_all(&bytes[..n])
                    .map_err(|e| TrainError::io(&tmp, "written", e))?;
                return Err(TrainError::io(
                    &tmp,
                    "written",
                    std::io::Error::other("simulated write failure"),
                ));
            }
            _ => f
                .write_all(bytes)
                .map_err(|e| TrainError::io(&tmp, "written", e))?,
        }
        f.sync_all()
            .map_err(|e| TrainError::io(&tmp, "written", e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, "renamed", e))?;
        if let Some(dir) = path.parent() {
            // Make the rename durable; not all file systems allow syncing a directory.
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })();
    if result.is_err() && tmp.is_file() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A checkpoint read from disk and checked for integrity.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub path: PathBuf,
    pub meta: CheckpointMeta,
    pub tensors: HostTensors,
}

impl Checkpoint {
    /// Reads `path`: a checkpoint directory or its `model.safetensors`. Truncated or corrupted
    /// files are errors.
    pub fn read(path: &Path) -> Result<Self, TrainError> {
        let file = if path.is_dir() {
            path.join(FILE_NAME)
        } else {
            path.to_path_buf()
        };
        let bytes = std::fs::read(&file).map_err(|e| TrainError::io(&file, "read", e))?;
        Self::from_bytes(&file, &bytes)
    }

    pub fn from_bytes(file: &Path, bytes: &[u8]) -> Result<Self, TrainError> {
        let damaged = Some("the file is truncated or damaged; use the other checkpoint (`best/` or `last/`) or retrain");
        let st = SafeTensors::deserialize(bytes).map_err(|e| {
            ck_err(
                file,
                format!("not a readable safetensors file ({e:?})"),
                damaged,
            )
        })?;
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| {
            ck_err(
                file,
                format!("not a readable safetensors file ({e:?})"),
                damaged,
            )
        })?;
        let info = header.metadata().clone().unwrap_or_default();
        match info.get("format") {
            Some(f) if f == FORMAT => {}
            Some(f) => {
                return Err(ck_err(
                    file,
                    format!("expected format `{FORMAT}`, found `{f}`"),
                    None,
                ))
            }
            None => {
                return Err(ck_err(
                    file,
                    format!("expected format `{FORMAT}`, found a safetensors file without it"),
                    Some("this file was not written by tfm"),
                ))
            }
        }
        let meta: CheckpointMeta = info
            .get("meta")
            .ok_or_else(|| ck_err(file, "the metadata entry `meta` is missing", damaged))
            .and_then(|m| {
                serde_json::from_str(m)
                    .map_err(|e| ck_err(file, format!("invalid metadata: {e}"), damaged))
            })?;
        let mut tensors: HostTensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            if view.dtype() != StDtype::F32 {
                return Err(ck_err(
                    file,
                    format!("expected f32 for `{name}`, found {:?}", view.dtype()),
                    None,
                ));
            }
            let data: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            tensors.insert(name, (view.shape().to_vec(), data));
        }
        let want = info.get("sha256").cloned().unwrap_or_default();
        let got = checksum(&tensors);
        if want != got {
            return Err(ck_err(
                file,
                format!(
                    "the tensor data does not match its checksum (expected {want}, found {got})"
                ),
                damaged,
            ));
        }
        Ok(Checkpoint {
            path: file.to_path_buf(),
            meta,
            tensors,
        })
    }

    /// Errors unless the checkpoint was trained with the spec whose hash is `expected`.
    pub fn check_spec_hash(&self, expected: &str) -> Result<(), TrainError> {
        if self.meta.spec_hash == expected {
            return Ok(());
        }
        Err(ck_err(
            &self.path,
            format!(
                "spec hash mismatch: expected {expected} (the current spec), found {} (the spec the checkpoint was trained with)",
                self.meta.spec_hash
            ),
            Some("load the checkpoint with the spec and `set` overrides it was trained with"),
        ))
    }

    /// Copies the weights into `store` (and the moments into `optimizer`), after checking that the
    /// names and shapes match; every mismatch is listed.
    pub fn restore<D: Device<f32>>(
        &self,
        store: &mut ParamStore<D>,
        optimizer: Option<&mut Optimizer<D>>,
    ) -> Result<(), TrainError> {
        let mut problems = Vec::new();
        for p in &store.params {
            match self.tensors.get(&p.name) {
                None => problems.push(format!("missing `{}` {:?}", p.name, p.shape)),
                Some((shape, _)) if *shape != p.shape => problems.push(format!(
                    "`{}`: expected shape {:?}, found {:?}",
                    p.name, p.shape, shape
                )),
                Some(_) => {}
            }
        }
        for name in self.tensors.keys() {
            if !name.starts_with("optim.") && store.get(name).is_none() {
                problems.push(format!("unexpected `{name}` (not a weight of this model)"));
            }
        }
        if !problems.is_empty() {
            return Err(ck_err(
                &self.path,
                format!(
                    "the checkpoint does not fit the model:\n  {}",
                    problems.join("\n  ")
                ),
                Some("load the checkpoint with the spec it was trained with"),
            ));
        }
        for p in store.params.iter_mut() {
            if let Some((_, data)) = self.tensors.get(&p.name) {
                let dev = p.value.device().clone();
                p.value = dev.tensor_from_vec(data.clone(), (data.len(),));
            }
        }
        if let Some(opt) = optimizer {
            if opt.settings.kind.name() != self.meta.optimizer {
                return Err(ck_err(
                    &self.path,
                    format!(
                        "expected optimizer `{}`, found `{}` in the checkpoint",
                        opt.settings.kind.name(),
                        self.meta.optimizer
                    ),
                    Some("resume with the optimizer the run started with"),
                ));
            }
            opt.load_state(store, self.meta.optimizer_step, |name| {
                self.tensors.get(name).map(|(_, d)| d.clone())
            })
            .map_err(|m| ck_err(&self.path, m, None))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_leaves_the_old_file_and_no_temp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        write_atomic(&path, b"old contents", None).expect("first write");
        let err = write_atomic(&path, b"new contents that fail halfway", Some(5));
        assert!(err.is_err());
        assert_eq!(std::fs::read(&path).expect("read"), b"old contents");
        assert!(!temp_path(&path).exists());
        write_atomic(&path, b"new", None).expect("second write");
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
    }

    #[test]
    fn spec_hash_is_sha256_hex() {
        // sha256("abc"), FIPS 180-2 test vector.
        assert_eq!(
            spec_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

/// What [`load_by_name`] did, parameter by parameter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Parameters of the model copied from the checkpoint (model names).
    pub loaded: Vec<String>,
    /// Parameters of the model the checkpoint does not have; they keep their current values.
    pub new: Vec<String>,
    /// Weights of the checkpoint nothing was loaded into (checkpoint names; optimizer state is
    /// never listed).
    pub left: Vec<String>,
    /// Model name, shape in the model, shape in the checkpoint: same name, different shape, not
    /// loaded.
    pub mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// Elements copied.
    pub loaded_numel: usize,
    /// Elements of the `new` parameters.
    pub new_numel: usize,
    /// Elements of the `left` weights.
    pub left_numel: usize,
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn names(f: &mut std::fmt::Formatter<'_>, list: &[String]) -> std::fmt::Result {
            for n in list {
                writeln!(f, "  {n}")?;
            }
            Ok(())
        }
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        writeln!(
            f,
            "loaded {} tensor{} ({} parameters)",
            self.loaded.len(),
            plural(self.loaded.len()),
            self.loaded_numel
        )?;
        writeln!(
            f,
            "new (kept as initialised) {} tensor{} ({} parameters)",
            self.new.len(),
            plural(self.new.len()),
            self.new_numel
        )?;
        names(f, &self.new)?;
        writeln!(
            f,
            "left unused in the checkpoint {} tensor{} ({} parameters)",
            self.left.len(),
            plural(self.left.len()),
            self.left_numel
        )?;
        names(f, &self.left)?;
        writeln!(
            f,
            "shape mismatches {} (not loaded)",
            self.mismatched.len()
        )?;
        for (n, model, ck) in &self.mismatched {
            writeln!(f, "  {n}: model {model:?}, checkpoint {ck:?}")?;
        }
        Ok(())
    }
}

/// The model name a checkpoint weight is loaded into: the first `(from, to)` whose `from` starts
/// the name has that prefix replaced by `to`; names no prefix matches are kept.
fn renamed(name: &str, prefix_map: &[(String, String)]) -> String {
    for (from, to) in prefix_map {
        if let Some(rest) = name.strip_prefix(from.as_str()) {
            return format!("{to}{rest}");
        }
    }
    name.to_string()
}

/// Loads the weights of a checkpoint trained with another spec into `store`, by name: each
/// checkpoint weight is renamed by `prefix_map` (see [`renamed`]: `("body.", "trunk.")` loads
/// `body.weight` into `trunk.weight`) and copied when the model has a parameter of that name and
/// shape. Shape mismatches, parameters the checkpoint lacks and checkpoint weights the model
/// lacks are reported, not errors; loading nothing at all is an error. Optimizer state is not
/// loaded, and the spec hash is not checked. When two checkpoint weights rename to the same
/// model name, the first by name is used and the other is left.
pub fn load_by_name<D: Device<f32>>(
    store: &mut ParamStore<D>,
    ck: &Checkpoint,
    prefix_map: &[(String, String)],
) -> Result<LoadReport, TrainError> {
    // Model name -> checkpoint name.
    let mut source: BTreeMap<String, &str> = BTreeMap::new();
    let mut report = LoadReport::default();
    let mut used: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    for name in ck.tensors.keys() {
        if name.starts_with("optim.") {
            continue;
        }
        source.entry(renamed(name, prefix_map)).or_insert(name.as_str());
    }
    let mut copies: Vec<(usize, &Vec<f32>)> = Vec::new();
    for (i, p) in store.params.iter().enumerate() {
        let Some(&from) = source.get(&p.name) else {
            report.new.push(p.name.clone());
            report.new_numel += p.numel();
            continue;
        };
        used.insert(from);
        let Some((shape, data)) = ck.tensors.get(from) else {
            continue;
        };
        if *shape != p.shape || data.len() != p.numel() {
            report
                .mismatched
                .push((p.name.clone(), p.shape.clone(), shape.clone()));
            continue;
        }
        copies.push((i, data));
        report.loaded.push(p.name.clone());
        report.loaded_numel += p.numel();
    }
    for (name, (shape, _)) in &ck.tensors {
        if !name.starts_with("optim.") && !used.contains(name.as_str()) {
            report.left.push(name.clone());
            report.left_numel += shape.iter().product::<usize>();
        }
    }
    if copies.is_empty() && !store.params.is_empty() {
        let model_first = store.params.first().map(|p| p.name.as_str()).unwrap_or("");
        let ck_first = ck
            .tensors
            .keys()
            .find(|n| !n.starts_with("optim."))
            .map(String::as_str)
            .unwrap_or("");
        let mut hint = format!(
            "names must match after renaming: the model has e.g. `{model_first}`, the checkpoint `{ck_first}`; map the checkpoint's prefixes to the model's"
        );
        if !report.mismatched.is_empty() {
            hint.push_str(
                "; the shared names differ in shape, so check that both specs have the same sizes (`d_model`, `vocab`, ...)",
            );
        }
        return Err(ck_err(
            &ck.path,
            format!(
                "expected at least one weight matching the model by name and shape, found none ({} model parameters, {} checkpoint weights, {} shape mismatches)",
                store.params.len(),
                ck.tensors.keys().filter(|n| !n.starts_with("optim.")).count(),
                report.mismatched.len()
            ),
            Some(&hint),
        ));
    }
    for (i, data) in copies {
        let p = &mut store.params[i];
        let dev = p.value.device().clone();
        p.value = dev.tensor_from_vec(data.clone(), (data.len(),));
    }
    Ok(report)
}

/// What an earlier run left in a fresh run's output folders: its checkpoints (`last/`, `best/`),
/// its `metrics.jsonl` and its TensorBoard event files.
pub fn earlier_run(log_dir: &Path, ck_dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = ["last", "best"]
        .iter()
        .map(|k| ck_dir.join(k))
        .filter(|d| d.join(FILE_NAME).is_file())
        .collect();
    let metrics = log_dir.join("metrics.jsonl");
    if metrics.is_file() {
        found.push(metrics);
    }
    if let Ok(entries) = std::fs::read_dir(log_dir) {
        let mut events: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with("events.out.tfevents.")))
            .map(|e| e.path())
            .collect();
        events.sort();
        found.extend(events);
    }
    found
}

/// Refuses to start a fresh run where an earlier one would be overwritten (its checkpoints
/// replaced, its logs mixed with the new run's), unless `overwrite` is set.
pub fn check_fresh_run(log_dir: &Path, ck_dir: &Path, overwrite: bool) -> Result<(), TrainError> {
    let found = earlier_run(log_dir, ck_dir);
    if found.is_empty() || overwrite {
        return Ok(());
    }
    match found.iter().find(|p| p.join(FILE_NAME).is_file()) {
        Some(dir) => {
            let meta = Checkpoint::read(dir).ok().map(|c| c.meta);
            let step = meta.as_ref().map(|m| format!(", at step {}", m.step)).unwrap_or_default();
            // a run that ran all its steps goes on only with more of them
            let planned = meta.as_ref().and_then(|m| crate::config::RunConfig::from_yaml_str(&m.config_yaml).ok().map(|c| (m.step, c.steps)));
            let resume = match planned {
                Some((done, total)) if done >= total => {
                    format!("`--resume {} --steps N` (N above the {total} steps it finished)", log_dir.display())
                }
                _ => format!("`--resume {}`", log_dir.display()),
            };
            Err(TrainError::Checkpoint {
                path: dir.clone(),
                message: format!("an earlier run's{step}; a new run in `{}` would overwrite it", log_dir.display()),
                hint: Some(format!(
                    "continue that run with {resume}, write the new one elsewhere with `--out DIR`, or replace it with `--overwrite`"
                )),
            })
        }
        None => Err(TrainError::data_hint(
            format!(
                "the output folder `{}` holds an earlier run's logs ({} file{}); a new run would mix its own into them",
                log_dir.display(),
                found.len(),
                if found.len() == 1 { "" } else { "s" }
            ),
            "write the new run elsewhere with `--out DIR`, or replace those logs with `--overwrite`",
        )),
    }
}

/// Removes what [`earlier_run`] finds (a fresh run with `--overwrite`).
pub fn clear_earlier_run(log_dir: &Path, ck_dir: &Path) -> Result<(), TrainError> {
    for p in earlier_run(log_dir, ck_dir) {
        let r = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        r.map_err(|e| TrainError::io(&p, "removed", e))?;
    }
    Ok(())
}
