//! End-to-end tests of `tfm check`: snapshots of its output in every format for the common
//! mistakes (fixtures in `tests/fixtures`), exit codes, and the model-snapshot workflow.

use insta_cmd::assert_cmd_snapshot;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// `tfm` without colours, run from `dir` so that paths in its output are relative and stable.
fn tfm_in(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tfm"));
    c.env("NO_COLOR", "1").current_dir(dir);
    c
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the tfm binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The error fixtures: every one must fail `tfm check` with exit code 1.
const ERROR_FIXTURES: &[&str] = &["misspelt", "shape_mismatch", "constraint", "syntax_error", "import_cycle", "expect_params"];

#[test]
fn reference_specs_and_examples_are_clean() {
    assert_cmd_snapshot!("check_specs_examples", tfm_in(&workspace_root()).args(["check", "specs", "examples"]));
    let o = run(tfm_in(&workspace_root()).args(["check", "specs", "examples", "--format", "json"]));
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let parsed: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json output parses");
    assert_eq!(parsed, serde_json::json!([]), "no diagnostics expected");
}

#[test]
fn error_fixtures_human() {
    for name in ERROR_FIXTURES {
        let file = format!("{name}.tfm");
        assert_cmd_snapshot!(format!("{name}_human"), tfm_in(&fixtures()).args(["check", &file]));
    }
}

#[test]
fn error_fixtures_machine_formats() {
    for name in ["misspelt", "shape_mismatch", "constraint", "expect_params"] {
        let file = format!("{name}.tfm");
        for format in ["short", "json", "github"] {
            assert_cmd_snapshot!(format!("{name}_{format}"), tfm_in(&fixtures()).args(["check", &file, "--format", format]));
        }
    }
}

/// Exit code 1 and the key facts of each diagnostic, independent of the exact rendering.
#[test]
fn error_fixtures_report_the_right_place() {
    // (fixture, code, line of the primary label, text that must appear in message or hints)
    let cases: &[(&str, &str, u64, &str)] = &[
        ("misspelt", "E0101", 10, "did you mean `d_model`?"),
        ("shape_mismatch", "E0202", 13, "f32[B, T, 64]"),
        ("constraint", "E0301", 5, "heads must divide d_model"),
        ("syntax_error", "E0001", 9, "this `(` is not closed"),
        ("import_cycle", "E0402", 1, "a.tfm"),
        ("expect_params", "E0302", 15, "found 12_900"),
    ];
    for (name, code, line, text) in cases {
        let o = run(tfm_in(&fixtures()).args(["check", &format!("{name}.tfm"), "--format", "json"]));
        assert_eq!(o.status.code(), Some(1), "{name}: {}{}", stdout(&o), stderr(&o));
        let diags: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("json output parses");
        let diags = diags.as_array().expect("a JSON array");
        let first = diags.iter().find(|d| d["severity"] == "error").unwrap_or_else(|| panic!("{name}: no error in {diags:?}"));
        if !code.starts_with("E000") {
            assert_eq!(first["code"], *code, "{name}: {first}");
        } else {
            assert!(first["code"].as_str().is_some_and(|c| c.starts_with("E00")), "{name}: a syntax error code, found {first}");
        }
        if *name != "import_cycle" {
            assert_eq!(first["line"], *line, "{name}: {first}");
        }
        let all = first.to_string();
        assert!(all.contains(text), "{name}: `{text}` not in {all}");
    }
}

/// The shape mismatch names both types and where each came from.
#[test]
fn shape_mismatch_names_both_types_and_origins() {
    let o = run(tfm_in(&fixtures()).args(["check", "shape_mismatch.tfm"]));
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(out.contains("f32[*, 128]") && out.contains("f32[B, T, 64]"), "{out}");
    assert!(out.contains("12 │     h = x * 2.0"), "the origin of `h` is shown:\n{out}");
    assert!(out.contains("10 │     layer proj = linear(d_out, d_out)"), "the layer's declaration is shown:\n{out}");
}

#[test]
fn exit_codes() {
    let ok = run(tfm_in(&fixtures()).args(["check", "tiny.tfm", "--set", "d_model=8"]));
    assert_eq!(ok.status.code(), Some(0), "{}{}", stdout(&ok), stderr(&ok));
    assert_cmd_snapshot!("missing_path", tfm_in(&fixtures()).args(["check", "no_such_spec.tfm"]));
    assert_cmd_snapshot!("bad_set", tfm_in(&fixtures()).args(["check", "tiny.tfm", "--set", "d_model"]));
    assert_cmd_snapshot!("bad_set_value", tfm_in(&fixtures()).args(["check", "tiny.tfm", "--set", "d_model=wide"]));
    assert_cmd_snapshot!("unknown_set", tfm_in(&fixtures()).args(["check", "tiny.tfm", "--set", "d_modle=8"]));
    assert_cmd_snapshot!("unknown_model", tfm_in(&fixtures()).args(["check", "tiny.tfm", "--model", "tine"]));
    let empty = tempfile::tempdir().expect("a temporary folder");
    let o = run(tfm_in(empty.path()).args(["check", "."]));
    assert_eq!(o.status.code(), Some(2), "a folder without specs is a usage error: {}", stderr(&o));
}

/// A spec changed after its snapshot was recorded: `check` fails with a diff, `--update` records
/// the new snapshot, and `check` passes again.
#[test]
fn snapshot_drift_and_update() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let root = workspace_root();
    let spec = std::fs::read_to_string(root.join("examples/addition.tfm")).expect("addition.tfm");
    let snap = std::fs::read_to_string(root.join("examples/addition.snap")).expect("addition.snap");
    std::fs::write(dir.path().join("addition.snap"), &snap).expect("write");

    // Unchanged: clean.
    std::fs::write(dir.path().join("addition.tfm"), &spec).expect("write");
    let o = run(tfm_in(dir.path()).args(["check", "addition.tfm"]));
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));

    // Twice the context: the position table grows by 32 x 128 weights.
    let changed = spec.replace("context: int = 32", "context: int = 64");
    assert_ne!(changed, spec, "the spec still declares `context: int = 32`");
    std::fs::write(dir.path().join("addition.tfm"), &changed).expect("write");
    assert_cmd_snapshot!("drift", tfm_in(dir.path()).args(["check", "addition.tfm"]));
    let o = run(tfm_in(dir.path()).args(["check", "addition.tfm"]));
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("E0501") && out.contains("-  pos.weight                     [32, 128]   4,096"), "{out}");
    assert!(out.contains("+  pos.weight                     [64, 128]   8,192"), "{out}");

    // `--set` skips the snapshot comparison.
    let o = run(tfm_in(dir.path()).args(["check", "addition.tfm", "--set", "context=32"]));
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));

    assert_cmd_snapshot!("update", tfm_in(dir.path()).args(["check", "--update", "addition.tfm"]));
    let updated = std::fs::read_to_string(dir.path().join("addition.snap")).expect("the snapshot is still there");
    assert!(updated.contains("pos.weight                     [64, 128]   8,192"), "{updated}");
    assert!(updated.contains("trainable: 605,312"), "601,216 + 4,096:\n{updated}");
    assert!(!dir.path().join("addition.snap.tmp").exists());

    let o = run(tfm_in(dir.path()).args(["check", "addition.tfm"]));
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
}

/// A spec with no snapshot yet: a note says how to record one, and the check passes.
#[test]
fn missing_snapshot_is_a_note() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    std::fs::copy(fixtures().join("tiny.tfm"), dir.path().join("tiny.tfm")).expect("copy");
    assert_cmd_snapshot!("no_snapshot_yet", tfm_in(dir.path()).args(["check", "tiny.tfm"]));
    let o = run(tfm_in(dir.path()).args(["check", "--update", "tiny.tfm"]));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let snap = std::fs::read_to_string(dir.path().join("tiny.snap")).expect("written");
    assert!(snap.contains("== model tiny ==") && snap.contains("trainable: 3,200"), "{snap}");
    // A model removed from the spec is reported against its stale section.
    let renamed = std::fs::read_to_string(dir.path().join("tiny.tfm")).expect("read").replace("model tiny", "model small");
    std::fs::write(dir.path().join("tiny.tfm"), renamed).expect("write");
    let o = run(tfm_in(dir.path()).args(["check", "tiny.tfm", "--format", "short"]));
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("model `small` has no section"), "{out}");
    assert!(out.contains("records model `tiny`, which the spec no longer defines"), "{out}");
}
