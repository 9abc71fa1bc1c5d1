//! End-to-end tests of `tfm summary`: the table, JSON and YAML outputs, `--set`, a 7B model, and
//! usage errors.

use insta_cmd::assert_cmd_snapshot;
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `tfm` without colours, run from the workspace root so that spec paths are relative.
fn tfm() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tfm"));
    c.env("NO_COLOR", "1").current_dir(workspace_root());
    c
}

fn json_summary(args: &[&str]) -> serde_json::Value {
    let o = tfm().args(args).output().expect("the tfm binary runs");
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("the JSON summary parses")
}

#[test]
fn gpt2_table() {
    assert_cmd_snapshot!("gpt2_table", tfm().args(["summary", "specs/gpt2.tfm"]));
}

#[test]
fn gpt2_json_total_is_the_published_count() {
    let s = json_summary(&["summary", "specs/gpt2.tfm", "--format", "json"]);
    assert_eq!(s["model"], "gpt2");
    // GPT-2 small as published (Hugging Face `GPT2LMHeadModel`, head tied): 124,439,808.
    assert_eq!(s["totals"]["trainable"], 124_439_808u64);
    assert_eq!(s["totals"]["fixed"], 0u64);
    // The tied head is the token embedding, 50,257 x 768, counted once.
    let tied = s["tied"].as_array().expect("a list of tied weights");
    assert!(tied.iter().any(|t| t["name"] == "tok.weight" && t["numel"] == 38_597_376u64), "{tied:?}");
    // The sequence length defaults to the model's context.
    assert_eq!(s["seq"], 1024u64);
    assert_eq!(s["batch"], 1u64);
    // The per-row trainable counts add up to the total (a row's count covers all its copies;
    // the tied head is counted in the embedding's row only).
    let rows = s["rows"].as_array().expect("rows");
    let sum: u64 = rows.iter().map(|r| r["trainable"].as_u64().expect("a count")).sum();
    assert_eq!(sum, 124_439_808);
    let blocks = rows.iter().find(|r| r["name"] == "blocks").expect("a `blocks` row");
    assert_eq!(blocks["copies"], 12u64);
    assert_eq!(blocks["trainable"], 12 * 7_087_872u64);
}

#[test]
fn gpt2_json_snapshot() {
    assert_cmd_snapshot!("gpt2_json", tfm().args(["summary", "specs/gpt2.tfm", "--format", "json", "--seq", "128", "--batch", "2"]));
}

#[test]
fn gpt2_yaml() {
    assert_cmd_snapshot!("gpt2_yaml", tfm().args(["summary", "specs/gpt2.tfm", "--format", "yaml", "--seq", "128"]));
    let o = tfm().args(["summary", "specs/gpt2.tfm", "--format", "yaml"]).output().expect("runs");
    assert_eq!(o.status.code(), Some(0));
    let v: serde_yaml::Value = serde_yaml::from_slice(&o.stdout).expect("the YAML summary parses");
    assert_eq!(v["totals"]["trainable"].as_u64(), Some(124_439_808));
}

#[test]
fn gpt2_with_two_layers() {
    assert_cmd_snapshot!("gpt2_layers_2", tfm().args(["summary", "specs/gpt2.tfm", "--set", "layers=2"]));
    // Ten fewer layers of 7,087,872 parameters each (see the spec's header).
    let s = json_summary(&["summary", "specs/gpt2.tfm", "--set", "layers=2", "--format", "json"]);
    assert_eq!(s["totals"]["trainable"], 124_439_808u64 - 10 * 7_087_872);
}

#[test]
fn gpt2_medium_variant() {
    // GPT-2 medium as published: 354,823,168 parameters.
    let s = json_summary(&["summary", "specs/gpt2.tfm", "--model", "gpt2_medium", "--format", "json"]);
    assert_eq!(s["model"], "gpt2_medium");
    assert_eq!(s["totals"]["trainable"], 354_823_168u64);
}

#[test]
fn llama2_7b_table() {
    assert_cmd_snapshot!("llama2_7b_table", tfm().args(["summary", "specs/llama2_7b.tfm", "--seq", "4096"]));
    let s = json_summary(&["summary", "specs/llama2_7b.tfm", "--format", "json"]);
    assert_eq!(s["totals"]["trainable"], 6_738_415_616u64);
}

#[test]
fn summary_usage_errors() {
    assert_cmd_snapshot!("summary_missing_file", tfm().args(["summary", "specs/no_such.tfm"]));
    assert_cmd_snapshot!("summary_bad_set", tfm().args(["summary", "specs/gpt2.tfm", "--set", "layers"]));
    let o = tfm().args(["summary", "specs/gpt2.tfm", "--set", "heads=7"]).output().expect("runs");
    assert_eq!(o.status.code(), Some(1), "7 heads do not divide 768");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("heads must divide d_model"), "{err}");
}
