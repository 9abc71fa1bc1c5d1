//! Tests of the public API on inline sources: options, codes, and guards against blow-ups.

use tfm_diag::SourceMap;
use tfm_elab::{check_source, CheckOptions, Checked};

fn check(src: &str, opts: &CheckOptions) -> Checked {
    let mut sources = SourceMap::new();
    check_source("inline.tfm", src, opts, &mut sources)
}

fn codes(c: &Checked) -> Vec<&'static str> {
    c.diagnostics.iter().filter(|d| d.is_error()).map(|d| d.code).collect()
}

const TWO: &str = "
model a { n: int = 2; input x: f32[B, n]; output y = x }
model b { d: int; input x: f32[B, d]; layer l = linear(d, 3); output y = l(x) }
";

#[test]
fn every_model_or_the_selected_one() {
    let all = check(TWO, &CheckOptions::default());
    // `b.d` has no value: `b` fails, `a` is clean.
    assert_eq!(codes(&all), ["E0303"]);
    assert_eq!(all.models.iter().map(|m| m.model.name.as_str()).collect::<Vec<_>>(), ["a"]);

    let opts = CheckOptions { overrides: vec![("d".into(), "5".into())], model: Some("b".into()) };
    let b = check(TWO, &opts);
    assert!(codes(&b).is_empty(), "{:?}", b.diagnostics);
    let m = &b.models[0].model;
    assert_eq!(m.name, "b");
    assert_eq!(m.params, vec![("d".to_string(), tfm_ir::ConstValue::Int(5))]);
    assert_eq!(m.graph.params[0].shape, vec![3, 5]);
    assert_eq!(m.outputs[0].name, "y");
    assert_eq!(m.graph.values[m.outputs[0].value].ty.to_string(), "f32[B, 3]");
}

#[test]
fn unknown_model_and_override() {
    let c = check(TWO, &CheckOptions { overrides: vec![], model: Some("bb".into()) });
    assert_eq!(codes(&c), ["E0106"]);
    assert!(c.models.is_empty());
    let c = check(TWO, &CheckOptions { overrides: vec![("nn".into(), "1".into())], model: Some("a".into()) });
    assert_eq!(codes(&c), ["E0107"]);
    assert_eq!(c.diagnostics[0].hints, ["did you mean `n`?"]);
}

#[test]
fn missing_import_is_reported() {
    let c = check("import \"no/such/file.tfm\" as lib\nmodel m { input x: f32[B]; output y = x }", &CheckOptions::default());
    assert_eq!(codes(&c), ["E0401"]);
}

#[test]
fn weights_that_overflow_are_errors() {
    let c = check("model m { n: int = 10 ** 15; input x: f32[B, n]; layer l = linear(n, n); output y = l(x) }", &CheckOptions::default());
    assert_eq!(codes(&c), ["E0205"]);
}

#[test]
fn direct_self_instance_is_recursion() {
    let c = check("block r { input x: f32[N]; layer me = r(); output y = me(x) }\nmodel m { input x: f32[N]; layer a = r(); output y = a(x) }", &CheckOptions::default());
    assert_eq!(codes(&c), ["E0109"]);
}

#[test]
fn exponential_nesting_stops() {
    // b0 has two instances of b1, which has two of b2, ...: 2^40 bodies if expanded.
    let mut src = String::new();
    for i in 0..40 {
        src.push_str(&format!("block b{i} {{ input x: f32[N]; layer p = b{}(); layer q = b{}(); output y = q(p(x)) }}\n", i + 1, i + 1));
    }
    src.push_str("block b40 { input x: f32[N]; output y = x }\nmodel m { input x: f32[N]; layer a = b0(); output y = a(x) }\n");
    let t = std::time::Instant::now();
    let c = check(&src, &CheckOptions::default());
    assert!(t.elapsed().as_secs() < 20, "took {:?}", t.elapsed());
    assert!(codes(&c).contains(&"E0109"), "{:?}", codes(&c));
}

#[test]
fn tied_weights_count_once_and_shared_repeats_once() {
    let src = "
block l { input x: f32[B, 4]; layer p = linear(4, 4); output y = p(x) }
model m {
    input t: i64[B]
    layer emb = embedding(10, 4)
    layer s = repeat 1_000_000 shared { l() }
    layer r = repeat 3 { l() }
    output y = r(s(emb(t))) @ emb.weight^T
    expect params == 40 + 20 + 3 * 20
}";
    let c = check(src, &CheckOptions::default());
    assert!(codes(&c).is_empty(), "{:?}", c.diagnostics);
    assert!(c.models[0].expectations.iter().all(|e| e.passed));
    assert_eq!(c.models[0].model.graph.values[c.models[0].model.outputs[0].value].ty.to_string(), "f32[B, 10]");
}

#[test]
fn attention_without_a_key_bias() {
    let src = "model m { input x: f32[B, T, 8]; layer a = attention(8, 2, k_bias: false); output y = a(x) }";
    let c = check(src, &CheckOptions::default());
    assert!(codes(&c).is_empty(), "{:?}", c.diagnostics);
    let g = &c.models[0].model.graph;
    let names: Vec<&str> = g.params.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["a.q.weight", "a.k.weight", "a.v.weight", "a.o.weight", "a.q.bias", "a.v.bias", "a.o.bias"]);
    let sizes: Vec<Vec<u64>> = g.params.iter().map(|p| p.shape.clone()).collect();
    assert_eq!(sizes[4..], [vec![8], vec![8], vec![8]]);

    // The default keeps the key bias.
    let c = check("model m { input x: f32[B, T, 8]; layer a = attention(8, 2); output y = a(x) }", &CheckOptions::default());
    let names: Vec<&str> = c.models[0].model.graph.params.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names[4..], ["a.q.bias", "a.k.bias", "a.v.bias", "a.o.bias"]);

    // A fused projection has one bias for q, k and v; a key bias needs the others.
    let fused = check("model m { input x: f32[B, T, 8]; layer a = attention(8, 2, fused_qkv: true, k_bias: false); output y = a(x) }", &CheckOptions::default());
    assert_eq!(codes(&fused), [tfm_elab::codes::CONSTRAINT]);
    assert!(fused.diagnostics[0].message.contains("`k_bias: false` needs `fused_qkv: false`"), "{:?}", fused.diagnostics);
    let lone = check("model m { input x: f32[B, T, 8]; layer a = attention(8, 2, bias: false, k_bias: true); output y = a(x) }", &CheckOptions::default());
    assert_eq!(codes(&lone), [tfm_elab::codes::CONSTRAINT]);
    assert!(lone.diagnostics[0].message.contains("found `k_bias: true`"), "{:?}", lone.diagnostics);
}
