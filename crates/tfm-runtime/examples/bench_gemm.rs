//! Compares the two matrix-product kernels on the shapes of a small GPT's linear layers.
//!
//! `cargo run --release -p tfm-runtime --example bench_gemm`

use std::time::Instant;
use tfm_runtime::gemm::{sgemm, sgemm_g, sgemm_par, single_threaded_kernels, MatRef};

fn main() {
    single_threaded_kernels();
    // (m, k, n, b transposed): forward x @ W^T, backward dX = dY @ W, dW = dY^T @ X
    let shapes = [(768, 128, 384, true), (768, 128, 512, true), (768, 512, 128, true), (768, 384, 128, false), (384, 768, 128, false)];
    for (m, k, n, bt) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 17) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 13) as f32 * 0.1).collect();
        let mut c = vec![0.0f32; m * n];
        let bv = if bt { MatRef::trans(&b, 0, k) } else { MatRef::rows(&b, 0, n) };
        let reps = 200;
        let mut line = format!("{m}x{k}x{n}:");
        for (name, f) in [
            ("matrixmultiply rayon-rows", sgemm_par as fn(usize, usize, usize, f32, MatRef, MatRef, f32, &mut [f32], usize, usize)),
            ("matrixmultiply 1 thread", sgemm),
            ("gemm crate rayon", sgemm_g),
        ] {
            for _ in 0..5 {
                f(m, k, n, 1.0, MatRef::rows(&a, 0, k), bv, 0.0, &mut c, 0, n);
            }
            let t = Instant::now();
            for _ in 0..reps {
                f(m, k, n, 1.0, MatRef::rows(&a, 0, k), bv, 1.0, &mut c, 0, n);
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            line += &format!("  {name} {:.0} GFLOP/s", 2.0 * (m * k * n) as f64 / s / 1e9);
        }
        println!("{line}");
    }
}
