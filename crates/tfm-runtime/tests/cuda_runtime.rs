//! CUDA against CPU for whole models: a small GPT's loss and every weight's gradient, and a few
//! SGD steps, computed by the runtime on both devices from the same initial weights.
//!
//! The CPU runs its fused kernels, CUDA the device-generic dfdx path, so this also checks that the
//! two implementations agree. Needs a CUDA device:
//! `cargo test -p tfm-runtime --features cuda --test cuda_runtime`.
#![cfg(feature = "cuda")]

use dfdx::prelude::*;
use tfm_runtime::fixtures::{gpt, GptSize};
use tfm_runtime::{Backend, Batch, HostTensor, ParamStore, Runtime};

fn gpu() -> Cuda {
    match Cuda::try_build(0, 0) {
        Ok(dev) => dev,
        Err(e) => panic!("expected a usable CUDA device 0, found an error: {e}"),
    }
}

fn size() -> GptSize {
    GptSize {
        vocab: 13,
        context: 16,
        layers: 2,
        heads: 4,
        d_model: 32,
        dropout: 0.0,
    }
}

/// Token windows with a learnable pattern: each row counts up by 1 or 2 from its own start.
fn batch(seed: usize) -> Batch {
    let (b, t, vocab) = (4usize, 16usize, 13usize);
    let data = (0..b)
        .flat_map(|r| {
            let start = (r * 5 + seed * 3) % vocab;
            let step = 1 + (r + seed) % 2;
            (0..t).map(move |i| ((start + step * i) % vocab) as i64)
        })
        .collect();
    Batch {
        inputs: vec![HostTensor::I64 {
            shape: vec![b, t],
            data,
        }],
        targets: None,
    }
}

fn runtime<D: Backend>(dev: D) -> Runtime<D> {
    match Runtime::new(gpt(size()), dev) {
        Ok(rt) => rt,
        Err(e) => panic!("expected the gpt fixture to load, found: {e}"),
    }
}

/// Plain SGD on every trainable weight.
fn sgd<D: Backend>(store: &mut ParamStore<D>, grads: &Gradients<f32, D>, lr: f32) {
    for p in &mut store.params {
        if p.trainable {
            p.value = p.value.clone() - grads.get(&p.value) * lr;
        }
    }
}

#[test]
fn gpt_loss_and_every_gradient_match_the_cpu() {
    let cpu = runtime(Cpu::default());
    let cuda = runtime(gpu());
    let (cs, gs) = (cpu.init_params(7), cuda.init_params(7));
    for (c, g) in cs.params.iter().zip(&gs.params) {
        assert_eq!(
            c.value.as_vec(),
            g.value.as_vec(),
            "{}: initial weights differ between devices",
            c.name
        );
    }
    let b = batch(0);
    let (cl, cg) = cpu
        .loss_and_grads(&cs, &b, 0)
        .expect("cpu loss and gradients");
    let (gl, gg) = cuda
        .loss_and_grads(&gs, &b, 0)
        .expect("cuda loss and gradients");
    println!("loss cpu={cl:.7} cuda={gl:.7}");
    assert!(
        (cl - gl).abs() <= 1e-5 + 1e-5 * cl.abs(),
        "loss: cpu {cl}, cuda {gl}"
    );
    let mut compared = 0;
    for (c, g) in cs.params.iter().zip(&gs.params) {
        let (x, y) = (cg.get(&c.value).as_vec(), gg.get(&g.value).as_vec());
        assert_eq!(x.len(), y.len(), "{}: gradient lengths differ", c.name);
        let scale = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (i, (u, v)) in x.iter().zip(&y).enumerate() {
            assert!(
                (u - v).abs() <= 1e-6 + 1e-3 * scale,
                "{}[{i}]: expected cpu {u} and cuda {v} to agree within 1e-6 + 1e-3 * max|grad| ({scale})",
                c.name
            );
        }
        compared += x.len();
    }
    println!(
        "{compared} gradient values across {} weights agree",
        cs.params.len()
    );
}

#[test]
fn gpt_sgd_steps_follow_the_same_losses_as_the_cpu() {
    let cpu = runtime(Cpu::default());
    let cuda = runtime(gpu());
    let (mut cs, mut gs) = (cpu.init_params(3), cuda.init_params(3));
    let eval = batch(99);
    let mut losses = vec![];
    for step in 0..8 {
        let b = batch(step);
        let (cl, cg) = cpu.loss_and_grads(&cs, &b, step as u64).expect("cpu step");
        let (gl, gg) = cuda
            .loss_and_grads(&gs, &b, step as u64)
            .expect("cuda step");
        assert!(
            (cl - gl).abs() <= 1e-4 * cl.abs(),
            "step {step}: cpu loss {cl}, cuda loss {gl}"
        );
        sgd(&mut cs, &cg, 0.5);
        sgd(&mut gs, &gg, 0.5);
        losses.push((cl, gl));
    }
    let (ce, ge) = (
        cpu.loss(&cs, &eval).expect("cpu eval"),
        cuda.loss(&gs, &eval).expect("cuda eval"),
    );
    println!("train losses (cpu, cuda): {losses:?}");
    println!("eval loss after 8 steps: cpu={ce:.6} cuda={ge:.6}");
    assert!(
        (ce - ge).abs() <= 1e-3 * ce.abs(),
        "eval loss after training: cpu {ce}, cuda {ge}"
    );
    assert!(
        ge < losses[0].1,
        "expected training to lower the loss on cuda: {} -> {ge}",
        losses[0].1
    );
}
