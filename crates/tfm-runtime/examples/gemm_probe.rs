use std::time::Instant;
use tfm_runtime::gemm::{sgemm_g, sgemm_par, MatRef};

fn main() {
    let shapes: &[(usize, usize, usize, &str)] = &[
        (1024, 256, 8000, "fwd"), (1024, 8000, 256, "gx"), (8000, 1024, 256, "gw(T)"), (1024, 256, 1024, "ff1"), (1024, 1024, 256, "ff2"), (256, 1024, 1024, "gw ff(T)"),
    ];
    for &(m, k, n, name) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut c = vec![0.0f32; m * n];
        let trans = name.contains("(T)");
        let am = if trans { MatRef::trans(&a, 0, m) } else { MatRef::rows(&a, 0, k) };
        let flops = 2.0 * (m * k * n) as f64;
        for (label, which) in [("mm_par", 0), ("gemm", 1)] {
            let reps = (2e10 / flops).max(5.0) as usize;
            let run = |c: &mut Vec<f32>| if which == 0 {
                sgemm_par(m, k, n, 1.0, am, MatRef::rows(&b, 0, n), 0.0, c, 0, n)
            } else {
                sgemm_g(m, k, n, 1.0, am, MatRef::rows(&b, 0, n), 0.0, c, 0, n)
            };
            run(&mut c);
            let t = Instant::now();
            for _ in 0..reps { run(&mut c); }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            println!("{name:12} {m}x{k}x{n} {label:7} {:.3} ms {:.1} GFLOP/s", s * 1e3, flops / s / 1e9);
        }
    }
}
