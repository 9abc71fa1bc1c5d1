//! Benchmark configurations, the FLOP and parameter formulas, timing statistics and peak memory,
//! shared by the `tfm-bench` binary and the PyTorch references (`bench/torch_gpt.py`,
//! `bench/torch_models.py`).
//!
//! FLOPs per training step use the standard estimate (Kaplan et al. 2020; PaLM appendix B;
//! nanoGPT's `estimate_mfu`): a parameter in a matrix product costs 6 FLOPs per token it is
//! applied to (2 forward, 4 backward), and attention's `Q K^T` and `A V` cost `12 * q * k * d`
//! per layer for `q` query and `k` key positions (forward and backward, the full square, not
//! halved for a causal mask). For the GPT:
//!
//! ```text
//! flops_per_token = 6 * N + 12 * L * T * d
//! flops_per_step  = flops_per_token * B * T
//! ```
//!
//! `N` counts the parameters that take part in matrix products: every parameter except the
//! position table (the token table counts once, as the tied LM head). Norm weights are counted
//! in `N` too, as nanoGPT does (a fraction of a percent). The ViT and the encoder-decoder apply
//! each group of parameters to the positions it actually sees, see [`VitConfig::flops_per_step`]
//! and [`Seq2seqConfig::flops_per_step`].

use serde::Serialize;

/// The shape of one GPT benchmark (GPT-2 style, pre-LN, learned positions, tied head).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct GptConfig {
    pub vocab: usize,
    pub layers: usize,
    pub heads: usize,
    pub d_model: usize,
    pub context: usize,
    pub batch: usize,
}

/// The named configurations; the same names as `bench/torch_gpt.py --config`.
pub const CONFIGS: &[(&str, GptConfig)] = &[
    (
        "nanogpt-cpu",
        GptConfig { vocab: 65, layers: 4, heads: 4, d_model: 128, context: 64, batch: 12 },
    ),
    (
        "medium-cpu",
        GptConfig { vocab: 65, layers: 6, heads: 6, d_model: 384, context: 256, batch: 8 },
    ),
    (
        "gpt2",
        GptConfig { vocab: 50257, layers: 12, heads: 12, d_model: 768, context: 1024, batch: 8 },
    ),
];

/// Looks up a named configuration.
pub fn config(name: &str) -> Option<GptConfig> {
    CONFIGS.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
}

/// Parameter counts of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ParamCount {
    /// Every parameter (the tied head counted once).
    pub total: u64,
    /// Parameters in matrix products: `total` less the position table.
    pub matmul: u64,
}

impl GptConfig {
    /// Parameters per transformer layer: two layer norms, fused QKV, output projection, MLP.
    fn per_layer(&self) -> u64 {
        let d = self.d_model as u64;
        let ln = 2 * d;
        let qkv = d * 3 * d + 3 * d;
        let proj = d * d + d;
        let fc = d * 4 * d + 4 * d;
        let fc_proj = 4 * d * d + d;
        2 * ln + qkv + proj + fc + fc_proj
    }

    pub fn params(&self) -> ParamCount {
        let d = self.d_model as u64;
        let wte = self.vocab as u64 * d;
        let wpe = self.context as u64 * d;
        let total = wte + wpe + self.layers as u64 * self.per_layer() + 2 * d;
        ParamCount { total, matmul: total - wpe }
    }

    /// Tokens in one training step.
    pub fn tokens_per_step(&self) -> u64 {
        (self.batch * self.context) as u64
    }

    /// Estimated FLOPs of one training step (forward, backward), see the crate docs.
    pub fn flops_per_step(&self) -> f64 {
        let n = self.params().matmul as f64;
        let attn = 12.0 * (self.layers * self.context * self.d_model) as f64;
        (6.0 * n + attn) * self.tokens_per_step() as f64
    }
}

/// Median, mean and minimum of a set of step times, seconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Stats {
    pub median: f64,
    pub mean: f64,
    pub min: f64,
}

/// Summarises step times; `None` for an empty slice.
pub fn stats(times: &[f64]) -> Option<Stats> {
    if times.is_empty() {
        return None;
    }
    let mut sorted = times.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let n = sorted.len();
    let median = if n % 2 == 1 { sorted[n / 2] } else { 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]) };
    let mean = sorted.iter().sum::<f64>() / n as f64;
    Some(Stats { median, mean, min: sorted[0] })
}

/// Reads `VmHWM` (peak resident set size) in KiB from the text of `/proc/self/status`.
pub fn parse_vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Peak resident set size of this process in MiB, where the platform reports it.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm_kib(&status).map(|kib| kib as f64 / 1024.0)
}

/// The spec overrides (`--set`) that give a model this configuration, for a spec whose
/// parameters are named as in `examples/shakespeare_char.tfm`.
pub fn overrides(cfg: &GptConfig) -> Vec<(String, String)> {
    vec![
        ("vocab".into(), cfg.vocab.to_string()),
        ("layers".into(), cfg.layers.to_string()),
        ("heads".into(), cfg.heads.to_string()),
        ("d_model".into(), cfg.d_model.to_string()),
        ("context".into(), cfg.context.to_string()),
        ("dropout".into(), "0.0".into()),
    ]
}

/// A ViT image classifier (pre-LN encoder, class token, learned positions, linear head on the
/// class token), as `bench/specs/vit_mnist.tfm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct VitConfig {
    pub image: usize,
    pub patch: usize,
    pub channels: usize,
    pub layers: usize,
    pub heads: usize,
    pub d_model: usize,
    pub ffn: usize,
    pub classes: usize,
    pub batch: usize,
}

/// The named ViT configurations; the same names as `bench/torch_models.py --config`.
pub const VIT_CONFIGS: &[(&str, VitConfig)] = &[(
    "vit-mnist",
    VitConfig {
        image: 28,
        patch: 4,
        channels: 1,
        layers: 6,
        heads: 4,
        d_model: 128,
        ffn: 512,
        classes: 10,
        batch: 128,
    },
)];

impl VitConfig {
    /// Patches per image.
    pub fn patches(&self) -> usize {
        (self.image / self.patch).pow(2)
    }

    /// Positions the encoder sees per image: the patches and the class token.
    pub fn seq_len(&self) -> usize {
        self.patches() + 1
    }

    fn patch_params(&self) -> u64 {
        let (c, p, d) = (self.channels as u64, self.patch as u64, self.d_model as u64);
        d * c * p * p + d
    }

    /// One pre-LN encoder layer: two layer norms, q, k, v, o with biases, the feed-forward network.
    fn per_layer(&self) -> u64 {
        let (d, f) = (self.d_model as u64, self.ffn as u64);
        2 * (2 * d) + 4 * (d * d + d) + (d * f + f) + (f * d + d)
    }

    fn head_params(&self) -> u64 {
        let d = self.d_model as u64;
        d * self.classes as u64 + self.classes as u64
    }

    /// `matmul` leaves out the class token and the position table (they are only added).
    pub fn params(&self) -> ParamCount {
        let d = self.d_model as u64;
        let extra = d + self.seq_len() as u64 * d;
        let matmul = self.patch_params() + self.layers as u64 * self.per_layer() + 2 * d + self.head_params();
        ParamCount { total: matmul + extra, matmul }
    }

    /// Images in one training step.
    pub fn items_per_step(&self) -> u64 {
        self.batch as u64
    }

    /// Estimated FLOPs of one training step: the patch embedding over the patches, the encoder
    /// and final norm over every position, the head over the class token, and attention over the
    /// full `T x T` square:
    ///
    /// ```text
    /// B * (6 * (N_patch * P + (N_layers + N_norm) * T + N_head) + 12 * L * T^2 * d)
    /// ```
    pub fn flops_per_step(&self) -> f64 {
        let (p, t) = (self.patches() as f64, self.seq_len() as f64);
        let enc = (self.layers as u64 * self.per_layer() + 2 * self.d_model as u64) as f64;
        let lin = self.patch_params() as f64 * p + enc * t + self.head_params() as f64;
        let attn = 12.0 * self.layers as f64 * t * t * self.d_model as f64;
        (6.0 * lin + attn) * self.batch as f64
    }

    /// The spec overrides (`--set`) for `bench/specs/vit_mnist.tfm`.
    pub fn overrides(&self) -> Vec<(String, String)> {
        vec![
            ("image".into(), self.image.to_string()),
            ("patch".into(), self.patch.to_string()),
            ("channels".into(), self.channels.to_string()),
            ("layers".into(), self.layers.to_string()),
            ("heads".into(), self.heads.to_string()),
            ("d_model".into(), self.d_model.to_string()),
            ("ffn".into(), self.ffn.to_string()),
            ("classes".into(), self.classes.to_string()),
        ]
    }
}

/// An encoder-decoder translation model in the original Transformer's structure (post-LN,
/// sinusoidal positions, one embedding shared by both inputs and the output projection, ReLU),
/// as `bench/specs/seq2seq_small.tfm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Seq2seqConfig {
    pub vocab: usize,
    /// Layers in the encoder and in the decoder.
    pub layers: usize,
    pub heads: usize,
    pub d_model: usize,
    pub ffn: usize,
    /// Source tokens per example.
    pub src_len: usize,
    /// Target tokens per example.
    pub tgt_len: usize,
    pub batch: usize,
}

/// The named encoder-decoder configurations; the same names as `bench/torch_models.py --config`.
pub const SEQ2SEQ_CONFIGS: &[(&str, Seq2seqConfig)] = &[(
    "seq2seq-small",
    Seq2seqConfig { vocab: 8000, layers: 3, heads: 4, d_model: 256, ffn: 1024, src_len: 16, tgt_len: 16, batch: 64 },
)];

impl Seq2seqConfig {
    fn attn_params(&self) -> u64 {
        let d = self.d_model as u64;
        4 * (d * d + d)
    }

    fn ffn_params(&self) -> u64 {
        let (d, f) = (self.d_model as u64, self.ffn as u64);
        (d * f + f) + (f * d + d)
    }

    /// Self-attention, feed-forward network, two layer norms.
    fn enc_layer(&self) -> u64 {
        self.attn_params() + self.ffn_params() + 2 * (2 * self.d_model as u64)
    }

    /// Self-attention, cross-attention, feed-forward network, three layer norms.
    fn dec_layer(&self) -> u64 {
        2 * self.attn_params() + self.ffn_params() + 3 * (2 * self.d_model as u64)
    }

    /// Trainable parameters (the sinusoidal table is fixed and not counted); every one of them
    /// is in a matrix product (the shared embedding as the output projection).
    pub fn params(&self) -> ParamCount {
        let emb = (self.vocab * self.d_model) as u64;
        let total = emb + self.layers as u64 * (self.enc_layer() + self.dec_layer());
        ParamCount { total, matmul: total }
    }

    /// Target tokens in one training step.
    pub fn items_per_step(&self) -> u64 {
        (self.batch * self.tgt_len) as u64
    }

    /// Estimated FLOPs of one training step. With `S` source and `T` target positions, `d` width,
    /// `L` layers on each side, `V` vocabulary:
    ///
    /// ```text
    /// B * ( 6 * N_enc * S + 12 * L * S^2 * d                    encoder
    ///     + 6 * (N_dec - N_cross_kv) * T + 6 * N_cross_kv * S   decoder (cross k, v on the memory)
    ///     + 12 * L * (T^2 + T * S) * d                          self- and cross-attention
    ///     + 6 * V * d * T )                                     shared output projection
    /// ```
    ///
    /// The embedding lookups are not matrix products and are not counted.
    pub fn flops_per_step(&self) -> f64 {
        let (s, t, d, l) = (self.src_len as f64, self.tgt_len as f64, self.d_model as f64, self.layers as f64);
        let dm = self.d_model as u64;
        let cross_kv = (l as u64 * 2 * (dm * dm + dm)) as f64;
        let enc = (self.layers as u64 * self.enc_layer()) as f64;
        let dec = (self.layers as u64 * self.dec_layer()) as f64;
        let lin = enc * s + (dec - cross_kv) * t + cross_kv * s + (self.vocab * self.d_model) as f64 * t;
        let attn = 12.0 * l * (s * s + t * t + t * s) * d;
        (6.0 * lin + attn) * self.batch as f64
    }

    /// The spec overrides (`--set`) for `bench/specs/seq2seq_small.tfm`.
    pub fn overrides(&self) -> Vec<(String, String)> {
        vec![
            ("vocab".into(), self.vocab.to_string()),
            ("layers".into(), self.layers.to_string()),
            ("heads".into(), self.heads.to_string()),
            ("d_model".into(), self.d_model.to_string()),
            ("ffn".into(), self.ffn.to_string()),
        ]
    }
}

/// Any benchmark configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bench {
    Gpt(GptConfig),
    Vit(VitConfig),
    Seq2seq(Seq2seqConfig),
}

/// Every configuration name, GPTs first.
pub fn all_names() -> Vec<&'static str> {
    let gpt = CONFIGS.iter().map(|(n, _)| *n);
    let vit = VIT_CONFIGS.iter().map(|(n, _)| *n);
    gpt.chain(vit).chain(SEQ2SEQ_CONFIGS.iter().map(|(n, _)| *n)).collect()
}

/// Looks up a named configuration of any kind.
pub fn bench(name: &str) -> Option<Bench> {
    if let Some(c) = config(name) {
        return Some(Bench::Gpt(c));
    }
    if let Some((_, c)) = VIT_CONFIGS.iter().find(|(n, _)| *n == name) {
        return Some(Bench::Vit(*c));
    }
    SEQ2SEQ_CONFIGS.iter().find(|(n, _)| *n == name).map(|(_, c)| Bench::Seq2seq(*c))
}

impl Bench {
    /// `gpt`, `vit` or `seq2seq`.
    pub fn kind(&self) -> &'static str {
        match self {
            Bench::Gpt(_) => "gpt",
            Bench::Vit(_) => "vit",
            Bench::Seq2seq(_) => "seq2seq",
        }
    }

    /// What the throughput counts: `tokens`, `images` or `target tokens`.
    pub fn unit(&self) -> &'static str {
        match self {
            Bench::Gpt(_) => "tokens",
            Bench::Vit(_) => "images",
            Bench::Seq2seq(_) => "target tokens",
        }
    }

    /// The spec the configuration is built from, relative to the repository root.
    pub fn default_spec(&self) -> &'static str {
        match self {
            Bench::Gpt(_) => "examples/shakespeare_char.tfm",
            Bench::Vit(_) => "bench/specs/vit_mnist.tfm",
            Bench::Seq2seq(_) => "bench/specs/seq2seq_small.tfm",
        }
    }

    pub fn batch(&self) -> usize {
        match self {
            Bench::Gpt(c) => c.batch,
            Bench::Vit(c) => c.batch,
            Bench::Seq2seq(c) => c.batch,
        }
    }

    pub fn set_batch(&mut self, b: usize) {
        match self {
            Bench::Gpt(c) => c.batch = b,
            Bench::Vit(c) => c.batch = b,
            Bench::Seq2seq(c) => c.batch = b,
        }
    }

    pub fn params(&self) -> ParamCount {
        match self {
            Bench::Gpt(c) => c.params(),
            Bench::Vit(c) => c.params(),
            Bench::Seq2seq(c) => c.params(),
        }
    }

    /// Units of throughput (see [`Bench::unit`]) in one training step.
    pub fn items_per_step(&self) -> u64 {
        match self {
            Bench::Gpt(c) => c.tokens_per_step(),
            Bench::Vit(c) => c.items_per_step(),
            Bench::Seq2seq(c) => c.items_per_step(),
        }
    }

    pub fn flops_per_step(&self) -> f64 {
        match self {
            Bench::Gpt(c) => c.flops_per_step(),
            Bench::Vit(c) => c.flops_per_step(),
            Bench::Seq2seq(c) => c.flops_per_step(),
        }
    }

    /// The spec overrides (`--set`) that give the model this configuration.
    pub fn overrides(&self) -> Vec<(String, String)> {
        let mut o = match self {
            Bench::Gpt(c) => return overrides(c),
            Bench::Vit(c) => c.overrides(),
            Bench::Seq2seq(c) => c.overrides(),
        };
        o.push(("dropout".into(), "0.0".into()));
        o
    }

    /// The configuration's fields as JSON (`vocab`, `layers`, ...).
    pub fn fields(&self) -> serde_json::Value {
        let v = match self {
            Bench::Gpt(c) => serde_json::to_value(c),
            Bench::Vit(c) => serde_json::to_value(c),
            Bench::Seq2seq(c) => serde_json::to_value(c),
        };
        v.unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanogpt_cpu_has_nanogpts_parameter_count() {
        // nanoGPT prints "number of parameters: 0.80M" for this configuration (it leaves out the
        // position table); worked by hand: wte 8320, per layer 198272, final norm 256, wpe 8192.
        let cfg = config("nanogpt-cpu").expect("preset exists");
        let p = cfg.params();
        assert_eq!(p.matmul, 8320 + 4 * 198_272 + 256);
        assert_eq!(p.total, p.matmul + 8192);
    }

    #[test]
    fn gpt2_small_has_the_reference_parameter_count() {
        // Hugging Face GPT2LMHeadModel, tied head: 124,439,808.
        let cfg = config("gpt2").expect("preset exists");
        assert_eq!(cfg.params().total, 124_439_808);
    }

    #[test]
    fn flops_per_step_follows_the_formula() {
        let cfg = config("nanogpt-cpu").expect("preset exists");
        let n = 801_664.0_f64;
        let expected = (6.0 * n + 12.0 * 4.0 * 64.0 * 128.0) * 768.0;
        assert!((cfg.flops_per_step() - expected).abs() < 1.0);
    }

    #[test]
    fn stats_of_odd_and_even_counts() {
        let s = stats(&[3.0, 1.0, 2.0]).expect("non-empty");
        assert_eq!((s.median, s.mean, s.min), (2.0, 2.0, 1.0));
        let s = stats(&[4.0, 1.0, 2.0, 3.0]).expect("non-empty");
        assert_eq!((s.median, s.min), (2.5, 1.0));
        assert!(stats(&[]).is_none());
    }

    #[test]
    fn reads_vm_hwm() {
        let text = "Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t   4096 kB\nVmRSS:\t 100 kB\n";
        assert_eq!(parse_vm_hwm_kib(text), Some(4096));
        assert_eq!(parse_vm_hwm_kib("Name:\tx\n"), None);
    }

    #[test]
    fn peak_rss_is_positive_here() {
        if cfg!(target_os = "linux") {
            let mib = peak_rss_mib().expect("linux reports VmHWM");
            assert!(mib > 0.1);
        }
    }

    #[test]
    fn vit_mnist_parameter_count_by_hand() {
        // patch 128 x 1 x 4 x 4 + 128 = 2,176; class token 128; positions 50 x 128 = 6,400;
        // per layer 2 x 256 + 4 x (128 x 128 + 128) + (128 x 512 + 512) + (512 x 128 + 128)
        // = 512 + 66,048 + 66,048 + 65,664 = 198,272, six of them 1,189,632; final norm 256;
        // head 128 x 10 + 10 = 1,290.
        let Some(Bench::Vit(cfg)) = bench("vit-mnist") else { panic!("vit-mnist is a ViT") };
        let p = cfg.params();
        assert_eq!(p.total, 2_176 + 128 + 6_400 + 1_189_632 + 256 + 1_290);
        assert_eq!(p.matmul, p.total - 128 - 6_400);
        assert_eq!(cfg.seq_len(), 50);
    }

    #[test]
    fn vit_flops_by_hand() {
        let Some(Bench::Vit(cfg)) = bench("vit-mnist") else { panic!("vit-mnist is a ViT") };
        let lin = 2_176.0 * 49.0 + (1_189_632.0 + 256.0) * 50.0 + 1_290.0;
        let attn = 12.0 * 6.0 * 50.0 * 50.0 * 128.0;
        let expected = (6.0 * lin + attn) * 128.0;
        assert!((cfg.flops_per_step() - expected).abs() < 1.0);
    }

    #[test]
    fn seq2seq_small_parameter_count_by_hand() {
        // embedding 8,000 x 256 = 2,048,000; attention 4 x (256 x 256 + 256) = 263,168;
        // feed-forward 256 x 1,024 + 1,024 + 1,024 x 256 + 256 = 525,568; encoder layer
        // 263,168 + 525,568 + 1,024 = 789,760; decoder layer 789,760 + 263,168 + 512 = 1,053,440.
        let Some(Bench::Seq2seq(cfg)) = bench("seq2seq-small") else { panic!("a seq2seq config") };
        assert_eq!(cfg.params().total, 2_048_000 + 3 * 789_760 + 3 * 1_053_440);
        assert_eq!(cfg.params().total, 7_577_600);
    }

    #[test]
    fn seq2seq_flops_by_hand() {
        let Some(Bench::Seq2seq(cfg)) = bench("seq2seq-small") else { panic!("a seq2seq config") };
        // S = T = 16: every parameter sees 16 positions per example.
        let lin = 7_577_600.0 * 16.0;
        let attn = 12.0 * 3.0 * (3.0 * 256.0) * 256.0;
        let expected = (6.0 * lin + attn) * 64.0;
        assert!((cfg.flops_per_step() - expected).abs() < 1.0);
        assert_eq!(cfg.items_per_step(), 64 * 16);
    }

    #[test]
    fn every_name_resolves_once() {
        let names = all_names();
        assert_eq!(names, ["nanogpt-cpu", "medium-cpu", "gpt2", "vit-mnist", "seq2seq-small"]);
        for n in names {
            assert!(bench(n).is_some(), "{n}");
        }
        assert!(bench("vit").is_none());
    }
}
