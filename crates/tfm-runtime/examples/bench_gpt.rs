//! Times training steps (forward, backward, plain SGD) of nanoGPT's CPU configuration:
//! vocab 65, 4 layers, 4 heads, 128 wide, context 64, batch 12.
//!
//! `cargo run --release -p tfm-runtime --example bench_gpt [steps] [generic]`

use dfdx::prelude::*;
use std::time::Instant;
use tfm_runtime::fixtures::{gpt, GptSize};
use tfm_runtime::{Batch, HostTensor, Runtime};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let steps: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let generic = args.iter().any(|a| a == "generic");
    let size = GptSize { vocab: 65, context: 64, layers: 4, heads: 4, d_model: 128, dropout: 0.0 };
    let (b, t) = (12usize, 64usize);
    let mut rt = Runtime::new(gpt(size), Cpu::default())?;
    rt.set_fused(!generic);
    let mut store = rt.init_params(0);
    let tokens: Vec<i64> = (0..b * t).map(|i| ((i * 7 + i / 13) % 65) as i64).collect();
    let batch = Batch { inputs: vec![HostTensor::I64 { shape: vec![b, t], data: tokens }], targets: None };
    let mut times = vec![];
    for step in 0..steps + 3 {
        let t0 = Instant::now();
        let (loss, grads) = rt.loss_and_grads(&store, &batch, step as u64)?;
        for p in &mut store.params {
            let g = grads.get(&p.value);
            p.value = p.value.clone() - g * 0.1;
        }
        let dt = t0.elapsed().as_secs_f64() * 1e3;
        if step >= 3 {
            times.push(dt);
        }
        if step % 5 == 0 {
            eprintln!("step {step}: loss {loss:.4}, {dt:.1} ms");
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    println!(
        "{} path: {:.1} ms/step mean, {:.1} ms median over {} steps",
        if generic { "generic" } else { "fused" },
        mean,
        times[times.len() / 2],
        times.len()
    );
    Ok(())
}
