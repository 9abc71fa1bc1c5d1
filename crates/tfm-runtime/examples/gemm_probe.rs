//! Times the three matrix products of a linear layer's training step (forward `x W^T`, input
//! gradient `gy W`, weight gradient `gy^T x`) on both threads, for comparing kernels:
//! `cargo run --release -p tfm-runtime --example gemm_probe -- ROWS IN OUT`.
use std::time::Instant;
use tfm_runtime::gemm::{sgemm_g, sgemm_par, MatRef};

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (n, i, o) = match args[..] {
        [n, i, o] => (n, i, o),
        _ => (1024, 256, 8000),
    };
    let fill = |len: usize, m: usize| -> Vec<f32> { (0..len).map(|j| ((j * 7) % m) as f32 * 0.1 - 0.3).collect() };
    let (x, w, gy) = (fill(n * i, 7), fill(o * i, 5), fill(n * o, 11));
    let products: [(&str, usize, usize, usize, MatRef, MatRef); 3] = [
        ("forward x W^T", n, i, o, MatRef::rows(&x, 0, i), MatRef::trans(&w, 0, i)),
        ("input grad gy W", n, o, i, MatRef::rows(&gy, 0, o), MatRef::rows(&w, 0, i)),
        ("weight grad gy^T x", o, n, i, MatRef::trans(&gy, 0, o), MatRef::rows(&x, 0, i)),
    ];
    for (name, m, k, cols, a, b) in products {
        let mut c = vec![0.0f32; m * cols];
        let flops = 2.0 * (m * k * cols) as f64;
        for (label, kernel) in [("matrixmultiply", 0), ("gemm", 1), ("mm in pool", 2), ("gemm in pool", 3)] {
            let run = |c: &mut Vec<f32>| {
                match kernel {
                    0 => sgemm_par(m, k, cols, 1.0, a, b, 0.0, c, 0, cols),
                    1 => sgemm_g(m, k, cols, 1.0, a, b, 0.0, c, 0, cols),
                    2 => rayon::join(|| sgemm_par(m, k, cols, 1.0, a, b, 0.0, c, 0, cols), || ()).0,
                    _ => rayon::join(|| sgemm_g(m, k, cols, 1.0, a, b, 0.0, c, 0, cols), || ()).0,
                }
            };
            run(&mut c);
            let reps = (1e10 / flops).max(3.0) as usize;
            let t = Instant::now();
            for _ in 0..reps {
                run(&mut c);
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            println!("{name:20} {m}x{k}x{cols} {label:15} {:8.3} ms {:6.1} GFLOP/s", s * 1e3, flops / s / 1e9);
        }
    }
}
