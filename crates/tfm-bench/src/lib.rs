//! Benchmark configurations, the FLOP and parameter formulas, timing statistics and peak memory,
//! shared by the `tfm-bench` binary and the PyTorch reference (`bench/torch_gpt.py`).
//!
//! FLOPs per training step use the standard estimate (Kaplan et al. 2020; PaLM appendix B;
//! nanoGPT's `estimate_mfu`):
//!
//! ```text
//! flops_per_token = 6 * N + 12 * L * T * d
//! flops_per_step  = flops_per_token * B * T
//! ```
//!
//! `N` counts the parameters that take part in matrix products: every parameter except the
//! position table (the token table counts once, as the tied LM head). `6N` is the forward pass
//! (`2N`) plus the backward pass (`4N`); `12 L T d` is attention's `Q K^T` and `A V`, forward and
//! backward, over the full `T x T` square (not halved for the causal mask).

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
}
