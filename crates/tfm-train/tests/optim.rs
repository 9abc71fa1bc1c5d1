//! Optimiser math against hand-computed steps, clipping, accumulation and state round trips.

use dfdx::prelude::*;
use tfm_train::optim::{GradSet, OptimKind, OptimSettings, Optimizer};
use tfm_train::{Param, ParamStore};

fn store(dev: &Cpu, params: &[(&str, Vec<f32>, bool, bool)]) -> ParamStore<Cpu> {
    ParamStore {
        params: params
            .iter()
            .map(|(name, v, trainable, decay)| Param {
                name: name.to_string(),
                shape: vec![v.len()],
                value: dev.tensor_from_vec(v.clone(), (v.len(),)),
                trainable: *trainable,
                decay: *decay,
            })
            .collect(),
    }
}

/// Real dfdx gradients equal to `g[i]` for parameter `i`: the gradient of `sum(p * g)`.
fn grads(store: &ParamStore<Cpu>, g: &[Vec<f32>]) -> GradSet<Cpu> {
    let dev = Cpu::default();
    let mut all = Gradients::leaky();
    for (p, gi) in store.params.iter().zip(g) {
        let c = dev.tensor_from_vec(gi.clone(), (gi.len(),));
        let loss = p
            .value
            .clone()
            .traced(all)
            .try_mul(c)
            .expect("mul")
            .try_sum::<(), _>()
            .expect("sum");
        all = loss.backward();
    }
    GradSet::from_gradients(store, all).expect("grads")
}

fn values(s: &ParamStore<Cpu>, i: usize) -> Vec<f32> {
    s.params[i].value.as_vec()
}

fn adamw(wd: f64) -> OptimSettings {
    OptimSettings {
        kind: OptimKind::Adamw,
        betas: [0.9, 0.999],
        eps: 1e-8,
        weight_decay: wd,
        momentum: 0.0,
        decay_all: false,
        decay_matrices: false,
    }
}

/// Both AdamW paths: the fused host kernel, and the dfdx ops a GPU runs.
const PATHS: [bool; 2] = [true, false];

#[test]
fn adamw_first_step_by_hand() {
    for host in PATHS {
        adamw_first_step(host);
    }
}

fn adamw_first_step(host: bool) {
    // p = 1, g = 0.5, lr = 0.1, wd = 0.1:
    // m = 0.05, v = 0.00025, m_hat = 0.5, v_hat = 0.25, update = 0.1 * 0.5 / (0.5 + 1e-8) ~= 0.1,
    // decayed: p = 1 * (1 - 0.01) - 0.1 = 0.89; not decayed: p = 0.9.
    let dev = Cpu::default();
    let mut s = store(
        &dev,
        &[("w", vec![1.0], true, true), ("b", vec![1.0], true, false)],
    );
    let mut opt = Optimizer::new(adamw(0.1), &s);
    opt.host_kernels = host;
    let g = grads(&s, &[vec![0.5], vec![0.5]]);
    opt.update(&mut s, &g, 0.1).expect("update");
    assert!(
        (values(&s, 0)[0] - 0.89).abs() < 1e-6,
        "{:?}",
        values(&s, 0)
    );
    assert!((values(&s, 1)[0] - 0.9).abs() < 1e-6, "{:?}", values(&s, 1));
    assert_eq!(opt.step, 1);
}

#[test]
fn adamw_second_step_by_hand() {
    for host in PATHS {
        adamw_second_step(host);
    }
}

fn adamw_second_step(host: bool) {
    // Continuing from p = 0.89 (decayed) with g = -1:
    // m = 0.9 * 0.05 - 0.1 = -0.055, v = 0.999 * 0.00025 + 0.001 = 0.00124975
    // m_hat = -0.055 / 0.19 = -0.28947368, v_hat = 0.00124975 / 0.001999 = 0.62518759
    // update = 0.1 * -0.28947368 / (0.79068805 + 1e-8) = -0.03661014
    // p = 0.89 * 0.99 + 0.03661014 = 0.91771014
    let dev = Cpu::default();
    let mut s = store(&dev, &[("w", vec![1.0], true, true)]);
    let mut opt = Optimizer::new(adamw(0.1), &s);
    opt.host_kernels = host;
    {
        let g = grads(&s, &[vec![0.5]]);
        opt.update(&mut s, &g, 0.1)
    }
    .expect("update");
    {
        let g = grads(&s, &[vec![-1.0]]);
        opt.update(&mut s, &g, 0.1)
    }
    .expect("update");
    assert!(
        (values(&s, 0)[0] - 0.917_710_1).abs() < 2e-6,
        "{:?}",
        values(&s, 0)
    );
}

#[test]
fn decay_all_decays_parameters_marked_no_decay() {
    let dev = Cpu::default();
    let mut s = store(&dev, &[("b", vec![1.0], true, false)]);
    let mut opt = Optimizer::new(
        OptimSettings {
            decay_all: true,
            ..adamw(0.1)
        },
        &s,
    );
    {
        let g = grads(&s, &[vec![0.5]]);
        opt.update(&mut s, &g, 0.1)
    }
    .expect("update");
    assert!((values(&s, 0)[0] - 0.89).abs() < 1e-6);
}

#[test]
fn decay_matrices_decays_every_weight_of_two_or_more_dims() {
    let dev = Cpu::default();
    let mut s = store(&dev, &[("emb", vec![1.0], true, false), ("b", vec![1.0], true, false)]);
    s.params[0].shape = vec![1, 1];
    let mut opt = Optimizer::new(OptimSettings { decay_matrices: true, ..adamw(0.1) }, &s);
    {
        let g = grads(&s, &[vec![0.5], vec![0.5]]);
        opt.update(&mut s, &g, 0.1)
    }
    .expect("update");
    // First AdamW step moves each weight by lr = 0.1; only the 2-D one is also scaled by 1 - lr * wd.
    assert!((values(&s, 0)[0] - 0.89).abs() < 1e-6);
    assert!((values(&s, 1)[0] - 0.90).abs() < 1e-6);
}

#[test]
fn fixed_parameters_are_never_updated() {
    let dev = Cpu::default();
    let mut s = store(
        &dev,
        &[
            ("table", vec![3.0, 4.0], false, false),
            ("w", vec![1.0], true, true),
        ],
    );
    let mut opt = Optimizer::new(adamw(0.1), &s);
    let g = grads(&s, &[vec![1.0, 1.0], vec![0.5]]);
    assert!(g.grads[0].is_none());
    opt.update(&mut s, &g, 0.1).expect("update");
    assert_eq!(values(&s, 0), vec![3.0, 4.0]);
    assert!(opt
        .state_tensors(&s)
        .iter()
        .all(|(n, _, _)| !n.ends_with("table")));
}

#[test]
fn sgd_momentum_by_hand() {
    // p = 1, g = 0.5, lr = 0.1, mu = 0.9: buf = 0.5, p = 0.95; again g = 0.5: buf = 0.95, p = 0.855.
    // With wd = 0.1 on a decaying weight, the first step uses g = 0.5 + 0.1 * 1 = 0.6: p = 0.94.
    let dev = Cpu::default();
    let set = OptimSettings {
        kind: OptimKind::Sgd,
        momentum: 0.9,
        weight_decay: 0.1,
        ..adamw(0.0)
    };
    let mut s = store(
        &dev,
        &[("b", vec![1.0], true, false), ("w", vec![1.0], true, true)],
    );
    let mut opt = Optimizer::new(set, &s);
    {
        let g = grads(&s, &[vec![0.5], vec![0.5]]);
        opt.update(&mut s, &g, 0.1)
    }
    .expect("update");
    assert!((values(&s, 0)[0] - 0.95).abs() < 1e-6);
    assert!((values(&s, 1)[0] - 0.94).abs() < 1e-6);
    {
        let g = grads(&s, &[vec![0.5], vec![0.0]]);
        opt.update(&mut s, &g, 0.1)
    }
    .expect("update");
    assert!(
        (values(&s, 0)[0] - 0.855).abs() < 1e-6,
        "{:?}",
        values(&s, 0)
    );
}

#[test]
fn plain_sgd_keeps_no_state() {
    let dev = Cpu::default();
    let set = OptimSettings {
        kind: OptimKind::Sgd,
        momentum: 0.0,
        weight_decay: 0.0,
        ..adamw(0.0)
    };
    let mut s = store(&dev, &[("w", vec![1.0, -2.0], true, true)]);
    let mut opt = Optimizer::new(set, &s);
    {
        let g = grads(&s, &[vec![1.0, -1.0]]);
        opt.update(&mut s, &g, 0.5)
    }
    .expect("update");
    assert_eq!(values(&s, 0), vec![0.5, -1.5]);
    assert!(opt.state_tensors(&s).is_empty());
}

#[test]
fn clipping_scales_to_the_max_norm_and_reports_the_norm() {
    let dev = Cpu::default();
    let s = store(
        &dev,
        &[("a", vec![0.0], true, true), ("b", vec![0.0], true, true)],
    );
    let mut g = grads(&s, &[vec![3.0], vec![4.0]]);
    let norm = g.clip(1.0).expect("clip");
    assert!((norm - 5.0).abs() < 1e-9);
    let h = g.to_host();
    let coef = 1.0 / (5.0 + 1e-6);
    assert!((h[0].as_ref().expect("a")[0] as f64 - 3.0 * coef).abs() < 1e-6);
    assert!((h[1].as_ref().expect("b")[0] as f64 - 4.0 * coef).abs() < 1e-6);
    // Below the limit nothing changes.
    let mut g = grads(&s, &[vec![0.3], vec![0.4]]);
    let norm = g.clip(1.0).expect("clip");
    assert!((norm - 0.5).abs() < 1e-6);
    assert_eq!(g.to_host()[0].as_ref().expect("a")[0], 0.3);
}

#[test]
fn accumulation_sums_and_scale_averages() {
    let dev = Cpu::default();
    let s = store(&dev, &[("a", vec![0.0, 0.0], true, true)]);
    let mut g = grads(&s, &[vec![1.0, 2.0]]);
    g.accumulate(grads(&s, &[vec![3.0, -4.0]])).expect("acc");
    g.scale(0.5).expect("scale");
    assert_eq!(g.to_host()[0].as_ref().expect("a"), &vec![2.0, -1.0]);
}

#[test]
fn missing_gradients_are_zeros() {
    let dev = Cpu::default();
    let s = store(&dev, &[("a", vec![1.0], true, true)]);
    let g = GradSet::from_gradients(&s, Gradients::leaky()).expect("grads");
    assert_eq!(g.to_host()[0].as_ref().expect("a"), &vec![0.0]);
}

#[test]
fn saved_state_continues_bit_for_bit() {
    let dev = Cpu::default();
    let mut a = store(
        &dev,
        &[
            ("w", vec![0.5, -1.0, 2.0], true, true),
            ("b", vec![0.1], true, false),
        ],
    );
    let mut opt_a = Optimizer::new(adamw(0.01), &a);
    let gs = [
        vec![vec![0.1, 0.2, -0.3], vec![1.0]],
        vec![vec![-0.5, 0.25, 0.125], vec![-2.0]],
        vec![vec![1.0, 1.0, 1.0], vec![0.5]],
    ];
    {
        let g = grads(&a, &gs[0]);
        opt_a.update(&mut a, &g, 0.1)
    }
    .expect("update");
    // Snapshot after one step, as a checkpoint would.
    let saved: Vec<_> = opt_a.state_tensors(&a);
    let mut b = store(
        &dev,
        &[
            ("w", values(&a, 0), true, true),
            ("b", values(&a, 1), true, false),
        ],
    );
    let mut opt_b = Optimizer::new(adamw(0.01), &b);
    opt_b
        .load_state(&b, opt_a.step, |n| {
            saved
                .iter()
                .find(|(k, _, _)| k == n)
                .map(|(_, _, d)| d.clone())
        })
        .expect("load");
    for g in &gs[1..] {
        {
            let g = grads(&a, g);
            opt_a.update(&mut a, &g, 0.1)
        }
        .expect("update");
        {
            let g = grads(&b, g);
            opt_b.update(&mut b, &g, 0.1)
        }
        .expect("update");
    }
    for i in 0..2 {
        let (x, y) = (values(&a, i), values(&b, i));
        assert_eq!(
            x.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            y.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }
}

#[test]
fn loading_state_without_moments_after_steps_is_an_error() {
    let dev = Cpu::default();
    let s = store(&dev, &[("w", vec![0.5], true, true)]);
    let mut opt = Optimizer::new(adamw(0.01), &s);
    let err = opt
        .load_state(&s, 3, |_| None)
        .expect_err("missing moments");
    assert_eq!(err, "optimizer state missing for: optim.m.w, optim.v.w");
}

#[test]
fn host_and_device_adamw_paths_agree_over_steps() {
    let dev = Cpu::default();
    let init = |k: usize| -> Vec<f32> { (0..37).map(|i| ((i * 7 + k * 3) % 11) as f32 * 0.1 - 0.5).collect() };
    let run = |host: bool| -> Vec<Vec<f32>> {
        let mut s = store(&dev, &[("w", init(0), true, true), ("b", init(1), true, false), ("e", init(2), true, true)]);
        let mut opt = Optimizer::new(adamw(0.1), &s);
        opt.host_kernels = host;
        for step in 0..6 {
            let g: Vec<Vec<f32>> = (0..3)
                .map(|k| (0..37).map(|i| (((i + step * 5 + k) % 13) as f32 - 6.0) * 0.03).collect())
                .collect();
            let g = grads(&s, &g);
            opt.update(&mut s, &g, 0.01).expect("update");
        }
        (0..3).map(|i| values(&s, i)).collect()
    };
    let (host, device) = (run(true), run(false));
    for (h, d) in host.iter().flatten().zip(device.iter().flatten()) {
        assert!((h - d).abs() <= 1e-6 * (1.0 + h.abs()), "host {h} against device path {d}");
    }
    assert_ne!(host[0], init(0), "the weights moved");
}
