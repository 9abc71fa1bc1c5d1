//! Instantiates every block of the standard library in a small model and compares its
//! parameter count with one worked out by hand (width 16, 4 heads, hidden 32 or 64).

use tfm_diag::{render, SourceMap};
use tfm_elab::{check_source, CheckOptions};
use tfm_summary::{summarize, SummaryOptions};

/// `(block call, extra inputs and arguments, expected trainable parameters)`.
/// Hand counts: a 16-wide attention with biases is 4 x (16 x 16 + 16) = 1,088; a LayerNorm 32;
/// a 16 -> 64 -> 16 mlp with biases 16 x 64 + 64 + 64 x 16 + 16 = 2,128.
const CASES: &[(&str, &str, &str, u128)] = &[
    // 16 x 32 + 32 + 32 x 16 + 16
    ("std.feed_forward(16, hidden: 32)", "", "", 1_072),
    ("std.quick_gelu_mlp(16, hidden: 32)", "", "", 1_072),
    // three bias-free 16 x 32 matrices
    ("std.swiglu_ffn(16, 32)", "", "", 1_536),
    // 2 LayerNorms + attention + mlp
    ("std.pre_ln_decoder_layer(16, 4)", "", "", 3_280),
    ("std.pre_ln_encoder_layer(16, 4)", "", "", 3_280),
    ("std.clip_encoder_layer(16, 4, causal: true)", "", "", 3_280),
    // Whisper: no key bias, 16 fewer per attention
    ("std.whisper_encoder_layer(16, 4)", "", "", 3_264),
    // 2 RMSNorms 32; q 256, k and v 2 x 8 x 16, o 256; SwiGLU 3 x 16 x 32
    ("std.llama_decoder_layer(16, 4, 32, kv_heads: 2, window: 8)", "", "", 2_336),
    ("std.post_ln_encoder_layer(16, 4)", "input mask: bool[B, T]", ", mask", 3_280),
    // plus cross-attention and a third LayerNorm
    ("std.post_ln_decoder_layer(16, 4)", "input memory: f32[B, S, 16]\n    input mask: bool[B, S]", ", memory, mask", 4_400),
    ("std.whisper_decoder_layer(16, 4)", "input memory: f32[B, S, 16]", ", memory", 4_368),
    // 2 RMSNorms 32, bias-free attention 4 x 256, bias-free 16 -> 32 -> 16 relu network 1,024
    ("std.t5_encoder_layer(16, 4, 32)", "input pos_bias: f32[4, T, T]\n    input mask: bool[B, T]", ", pos_bias, mask", 2_080),
    // plus bias-free cross-attention and its RMSNorm
    (
        "std.t5_decoder_layer(16, 4, 32)",
        "input memory: f32[B, S, 16]\n    input pos_bias: f32[4, T, T]\n    input mask: bool[B, S]",
        ", memory, pos_bias, mask",
        3_120,
    ),
];

#[test]
fn every_std_block_checks_with_its_hand_count() {
    for (call, inputs, args, want) in CASES {
        let src = format!(
            "import std\nmodel m {{\n    input x: f32[B, T, 16]\n    {inputs}\n    layer blk = repeat 2 {{ {call} }}\n    output y = blk(x{args})\n    expect y: f32[B, T, 16]\n}}\n"
        );
        let mut sources = SourceMap::new();
        let checked = check_source("blocks.tfm", &src, &CheckOptions::default(), &mut sources);
        let errors: Vec<_> = checked.diagnostics.iter().filter(|d| d.is_error()).cloned().collect();
        assert!(errors.is_empty(), "{call}:\n{}\n{src}", render::render(&errors, &sources, render::Format::Short, false));
        let m = checked.models.first().unwrap_or_else(|| panic!("{call}: no model"));
        assert!(m.expectations.iter().all(|e| e.passed), "{call}");
        let s = summarize(&m.model, &SummaryOptions { batch: 2, seq: 5 });
        assert_eq!(s.totals.trainable, 2 * want, "{call}");
        assert!(s.totals.flops_forward > 0, "{call}");
    }
}
