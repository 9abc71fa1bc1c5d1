//! Temporary: matrix-product kernels at the medium GPT's shapes.
use std::time::Instant;
use tfm_runtime::gemm::{sgemm, sgemm_g, sgemm_par, single_threaded_kernels, MatRef};

fn main() {
    single_threaded_kernels();
    // (m, k, n, a transposed, b transposed)
    let shapes = [
        (2048, 384, 1152, false, true),
        (2048, 384, 1536, false, true),
        (2048, 1536, 384, false, true),
        (2048, 1152, 384, false, false),
        (1152, 2048, 384, true, false),
        (384, 2048, 1536, true, false),
        (768, 128, 384, false, true),
        (384, 768, 128, true, false),
        (256, 64, 256, false, true),
        (256, 256, 64, false, false),
        (64, 32, 64, false, true),
    ];
    for (m, k, n, at, bt) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 17) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 13) as f32 * 0.1).collect();
        let mut c = vec![0.0f32; m * n];
        let av = if at { MatRef::trans(&a, 0, m) } else { MatRef::rows(&a, 0, k) };
        let bv = if bt { MatRef::trans(&b, 0, k) } else { MatRef::rows(&b, 0, n) };
        let reps = (2e9 / (2.0 * (m * k * n) as f64)).max(3.0) as usize;
        let mut line = format!("{m}x{k}x{n} at{} bt{}:", at as u8, bt as u8);
        for (name, f) in [
            ("mm-rows", sgemm_par as fn(usize, usize, usize, f32, MatRef, MatRef, f32, &mut [f32], usize, usize)),
            ("mm-1t", sgemm),
            ("gemm", sgemm_g),
        ] {
            for _ in 0..2 {
                f(m, k, n, 1.0, av, bv, 0.0, &mut c, 0, n);
            }
            let t = Instant::now();
            for _ in 0..reps {
                f(m, k, n, 1.0, av, bv, 1.0, &mut c, 0, n);
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            line += &format!("  {name} {:.0}", 2.0 * (m * k * n) as f64 / s / 1e9);
        }
        println!("{line}");
    }
}
