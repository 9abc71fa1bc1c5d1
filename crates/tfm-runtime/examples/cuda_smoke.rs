//! CUDA smoke test: a matmul, a softmax and a backward pass on the GPU, compared with the CPU.
//!
//! Build with `cargo build --release -p tfm-runtime --features cuda --example cuda_smoke`.
//! Exits 0 when every GPU result matches the CPU within tolerance, 1 on a mismatch and 2 when no
//! usable CUDA device is found (the error is printed, not a panic backtrace).

#[cfg(feature = "cuda")]
fn main() {
    std::process::exit(smoke::run());
}

#[cfg(not(feature = "cuda"))]
fn main() {
    eprintln!("error: cuda_smoke was built without the `cuda` feature");
    eprintln!("hint: rebuild with `--features cuda`");
    std::process::exit(2);
}

#[cfg(feature = "cuda")]
mod smoke {
    use dfdx::prelude::*;

    /// Results of one forward and backward pass, copied back to the host.
    struct Pass {
        product: Vec<f32>,
        probs: Vec<f32>,
        loss: f32,
        grad_a: Vec<f32>,
        grad_b: Vec<f32>,
        /// A permuted (non-contiguous) tensor made contiguous: dfdx compiles this kernel at run time.
        permuted: Vec<f32>,
        /// Concatenation along an axis: also compiled at run time, and includes a header of dfdx's.
        concat: Vec<f32>,
    }

    /// Deterministic inputs with mixed signs, so softmax is not uniform.
    fn inputs(m: usize, k: usize, n: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let a = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) * 0.1)
            .collect();
        let b = (0..k * n)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) * 0.07)
            .collect();
        let w = (0..m * n)
            .map(|i| ((i * 3 % 7) as f32 - 3.0) * 0.5)
            .collect();
        (a, b, w)
    }

    fn pass<D: Device<f32>>(dev: &D) -> Pass {
        let (m, k, n) = (8usize, 16usize, 12usize);
        let (a, b, w) = inputs(m, k, n);
        let a: Tensor<(usize, usize), f32, D> = dev.tensor_from_vec(a, (m, k));
        let b: Tensor<(usize, usize), f32, D> = dev.tensor_from_vec(b, (k, n));
        let w: Tensor<(usize, usize), f32, D> = dev.tensor_from_vec(w, (m, n));

        let product = a.clone().matmul(b.clone()).as_vec();

        let at = a.clone().traced(Gradients::leaky());
        let bt = b.retaped::<OwnedTape<f32, D>>();
        let probs_t = at.matmul(bt).softmax::<Axis<1>>();
        let probs = probs_t.with_empty_tape().as_vec();
        let loss_t = (probs_t * w).sum::<(), _>();
        let loss = loss_t.with_empty_tape().as_vec()[0];
        // Both inputs take part in the loss, so both have a gradient entry.
        let grads = loss_t.backward();
        let grad_a = grads.get(&a).as_vec();
        let grad_b = grads.get(&b).as_vec();

        let permuted = a
            .clone()
            .permute::<_, Axes2<1, 0>>()
            .reshape_like(&(k * m,))
            .as_vec();
        let concat = (
            a.clone(),
            b.clone().permute::<_, Axes2<1, 0>>().reshape_like(&(n, k)),
        )
            .concat_along(Axis::<0>)
            .as_vec();

        Pass {
            product,
            probs,
            loss,
            grad_a,
            grad_b,
            permuted,
            concat,
        }
    }

    /// Largest absolute difference, or None when the lengths differ.
    fn max_diff(x: &[f32], y: &[f32]) -> Option<f32> {
        (x.len() == y.len()).then(|| {
            x.iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0, f32::max)
        })
    }

    pub fn run() -> i32 {
        // `Cuda::try_build` unwraps inside cudarc when there is no driver or no device: catch it
        // quietly and report the message instead of a backtrace.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let built = std::panic::catch_unwind(|| Cuda::try_build(0, 0));
        std::panic::set_hook(hook);
        let gpu = match built {
            Ok(Ok(dev)) => dev,
            Ok(Err(e)) => {
                eprintln!("error: could not start CUDA device 0: {e}");
                return 2;
            }
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".to_string());
                eprintln!("error: could not start CUDA device 0 (panicked inside cudarc): {msg}");
                return 2;
            }
        };
        let cpu = Cpu::default();
        let c = pass(&cpu);
        let g = pass(&gpu);

        let checks: [(&str, &[f32], &[f32], f32); 7] = [
            ("matmul", &c.product, &g.product, 1e-4),
            ("softmax", &c.probs, &g.probs, 1e-5),
            ("loss", &[c.loss], &[g.loss], 1e-4),
            ("grad a", &c.grad_a, &g.grad_a, 1e-4),
            ("grad b", &c.grad_b, &g.grad_b, 1e-4),
            ("permute+reshape (nvrtc)", &c.permuted, &g.permuted, 0.0),
            ("concat_along (nvrtc)", &c.concat, &g.concat, 0.0),
        ];
        let mut failed = 0;
        for (name, cv, gv, tol) in checks {
            match max_diff(cv, gv) {
                Some(d) if d <= tol => println!(
                    "ok   {name:<24} n={:<4} max|cpu-gpu|={d:.3e} (tol {tol:.0e})",
                    cv.len()
                ),
                Some(d) => {
                    failed += 1;
                    println!(
                        "FAIL {name:<24} n={:<4} max|cpu-gpu|={d:.3e} (tol {tol:.0e})",
                        cv.len()
                    );
                }
                None => {
                    failed += 1;
                    println!(
                        "FAIL {name:<24} lengths differ: cpu {} gpu {}",
                        cv.len(),
                        gv.len()
                    );
                }
            }
        }
        println!("loss cpu={:.6} gpu={:.6}", c.loss, g.loss);
        println!(
            "probs[0..4] cpu={:?} gpu={:?}",
            &c.probs[..4],
            &g.probs[..4]
        );
        if failed == 0 {
            println!("cuda smoke: all {} checks passed", checks.len());
            0
        } else {
            println!("cuda smoke: {failed} of {} checks failed", checks.len());
            1
        }
    }
}
