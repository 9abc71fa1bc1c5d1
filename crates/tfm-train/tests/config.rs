//! Run configuration: every fixture under `tests/config/` parsed, errors rendered with location
//! and hints, snapshots beside them; plus the CLI override API.

use tfm_train::config::{RunConfig, SetValue};
use tfm_train::optim::OptimKind;
use tfm_train::schedule::ScheduleKind;

fn render(text: &str) -> String {
    match RunConfig::from_yaml_str(text) {
        Ok(cfg) => format!("ok\n{}", cfg.to_yaml()),
        Err(e) => {
            let mut s = format!("error: {}\n", e.message);
            if let Some(k) = &e.key {
                s += &format!("key: {k}\n");
            }
            if let Some(l) = e.location {
                let line = text.lines().nth(l.line - 1).unwrap_or("");
                s += &format!(
                    "at {}:{}\n  | {line}\n  | {}^\n",
                    l.line,
                    l.column,
                    " ".repeat(l.column - 1)
                );
            }
            for h in &e.hints {
                s += &format!("hint: {h}\n");
            }
            s
        }
    }
}

#[test]
fn config_fixtures() {
    insta::glob!("config/*.yaml", |path| {
        let text = std::fs::read_to_string(path).expect("fixture");
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let out = render(&text);
        assert_eq!(
            out.starts_with("ok"),
            name.starts_with("ok_"),
            "{name}: {out}"
        );
        insta::assert_snapshot!(out);
    });
}

#[test]
fn defaults_need_only_spec_and_data() {
    let cfg = RunConfig::from_yaml_str("spec: m.tfm\ndata: { path: t.txt }\n").expect("minimal");
    assert_eq!(cfg, RunConfig::new("m.tfm", "t.txt"));
    assert_eq!(cfg.batch_size, 12);
    assert_eq!(cfg.optimizer.kind, OptimKind::Adamw);
    assert_eq!(cfg.schedule().kind, ScheduleKind::Cosine);
    assert_eq!(cfg.schedule().min_lr, 1e-4);
    assert_eq!(cfg.schedule().decay_steps, 1000);
    assert_eq!(cfg.grad_clip(), Some(1.0));
    assert_eq!(cfg.log_dir(), std::path::PathBuf::from("runs/m"));
    assert_eq!(
        cfg.checkpoint_dir(),
        std::path::PathBuf::from("runs/m/checkpoints")
    );
}

#[test]
fn overrides_replace_file_values() {
    let mut cfg = RunConfig::new("m.tfm", "t.txt");
    cfg.merge(&[
        ("optimizer.lr".into(), "3e-4".into()),
        ("steps".into(), "50".into()),
        ("set.n_layer".into(), "6".into()),
        ("grad_clip".into(), "null".into()),
        ("schedule.kind".into(), "linear".into()),
    ])
    .expect("overrides");
    assert_eq!(cfg.optimizer.lr, 3e-4);
    assert_eq!(cfg.steps, 50);
    assert_eq!(cfg.set.get("n_layer"), Some(&SetValue::Int(6)));
    assert_eq!(cfg.grad_clip(), None);
    assert_eq!(cfg.schedule.kind, ScheduleKind::Linear);
    assert_eq!(
        cfg.set_strings(),
        vec![("n_layer".to_string(), "6".to_string())]
    );
}

#[test]
fn override_errors_name_the_key_and_suggest() {
    let mut cfg = RunConfig::new("m.tfm", "t.txt");
    let before = cfg.clone();
    let e = cfg.set_key("optimizer.lrr", "0.1").expect_err("unknown");
    assert_eq!(e.message, "unknown key `optimizer.lrr`");
    assert_eq!(e.hints[0], "did you mean `optimizer.lr`?");
    let e = cfg.set_key("optimizer.lr", "fast").expect_err("type");
    assert_eq!(
        e.message,
        "invalid value `fast`: expected f64 for `optimizer.lr`, found string \"fast\""
    );
    let e = cfg.set_key("batch_size", "0").expect_err("range");
    assert_eq!(e.message, "`batch_size` must be at least 1, found 0");
    assert_eq!(cfg, before, "a failed override leaves the config unchanged");
}

#[test]
fn config_file_paths_are_relative_to_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("run.yaml");
    std::fs::write(
        &path,
        "spec: m.tfm\ndata: { path: t.txt }\nlogging: { dir: out }\n",
    )
    .expect("write");
    let cfg = RunConfig::from_file(&path).expect("load");
    assert_eq!(cfg.spec, dir.path().join("m.tfm"));
    assert_eq!(cfg.data.path, Some(dir.path().join("t.txt")));
    assert_eq!(
        cfg.checkpoint_dir(),
        dir.path().join("out").join("checkpoints")
    );
    let e = RunConfig::from_file(&dir.path().join("nope.yaml")).expect_err("missing");
    assert!(e.message.contains("nope.yaml"), "{}", e.message);
}

#[test]
fn the_yaml_written_to_checkpoints_reads_back() {
    let mut cfg = RunConfig::new("m.tfm", "t.txt");
    cfg.set_key("set.dropout", "0.1").expect("set");
    let back = RunConfig::from_yaml_str(&cfg.to_yaml()).expect("round trip");
    assert_eq!(back, cfg);
}

#[test]
fn every_example_run_config_loads_and_names_an_existing_spec() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&examples).expect("examples/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let cfg = RunConfig::from_file(&path).unwrap_or_else(|e| panic!("{}: {}", path.display(), e.message));
        assert!(cfg.spec.is_file(), "{}: spec {} does not exist", path.display(), cfg.spec.display());
        seen += 1;
    }
    assert!(seen >= 9, "expected the example run configs, found {seen}");
}

#[test]
fn the_gpu_shakespeare_config_is_nanogpts_gpu_run() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/shakespeare_char_gpu.yaml");
    let cfg = RunConfig::from_file(&path).expect("loads");
    assert_eq!((cfg.batch_size, cfg.context, cfg.steps), (64, 256, 5000));
    for (k, v) in [("layers", 6.0), ("heads", 6.0), ("d_model", 384.0), ("context", 256.0), ("dropout", 0.2)] {
        let got = match cfg.set.get(k) {
            Some(SetValue::Int(i)) => *i as f64,
            Some(SetValue::Float(f)) => *f,
            other => panic!("set.{k}: expected a number, found {other:?}"),
        };
        assert_eq!(got, v, "set.{k}");
    }
}
