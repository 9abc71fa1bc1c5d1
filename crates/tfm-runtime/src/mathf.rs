//! Branch-free `f32` versions of the transcendental functions the CPU kernels call per element
//! (exp, erf, exact GELU, SiLU) and lane-wise reductions, written so that the loops calling them
//! vectorise: no libm calls, no branches (selects only), no serial floating-point chains.

/// Independent accumulators per reduction: enough to fill a 512-bit register and hide the add
/// latency.
const LANES: usize = 16;

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in a part exact in `f32` and the rest (Cody-Waite range reduction).
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// 1.5 * 2^23: adding and subtracting it rounds an `f32` of magnitude below 2^22 to an integer.
const ROUND: f32 = 12_582_912.0;

/// `a * b + c`, fused where the target has FMA (one instruction), else two operations (never a
/// call into libm's software `fmaf`).
#[inline(always)]
pub fn madd(a: f32, b: f32, c: f32) -> f32 {
    if cfg!(any(target_feature = "fma", target_arch = "aarch64")) {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `e^x` within 2 ulp for `x` in [-87, 88]; 0 below (where the true value is subnormal), `e^88`
/// between 88 and 88.72 and infinity above; NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let xc = x.clamp(-87.0, 88.0);
    // x = n ln2 + r with |r| <= ln2 / 2, then e^x = 2^n e^r
    let k = madd(xc, LOG2_E, ROUND);
    let n = k - ROUND;
    // the integer n, from k's low mantissa bits (integer ops only, so the loop stays vectorised)
    let ni = k.to_bits().wrapping_sub(ROUND.to_bits());
    let r = madd(-n, LN2_LO, madd(-n, LN2_HI, xc));
    // Taylor series of e^r to degree 7: truncation below 5e-9 relative on |r| <= 0.347
    let mut p = 1.0 / 5040.0;
    p = madd(p, r, 1.0 / 720.0);
    p = madd(p, r, 1.0 / 120.0);
    p = madd(p, r, 1.0 / 24.0);
    p = madd(p, r, 1.0 / 6.0);
    p = madd(p, r, 0.5);
    p = madd(p, r, 1.0);
    p = madd(p, r, 1.0);
    let scale = f32::from_bits(ni.wrapping_add(127) << 23);
    let y = p * scale;
    let y = if x < -87.0 { 0.0 } else { y };
    let y = if x > 88.72 { f32::INFINITY } else { y };
    if x.is_nan() {
        x
    } else {
        y
    }
}

/// erf and `e^(-x^2)` (its by-product, which the normal density reuses), by Abramowitz and
/// Stegun 7.1.26: absolute error below 1.5e-7 plus `f32` rounding.
#[inline(always)]
fn erf_and_gauss(x: f32) -> (f32, f32) {
    let a = x.abs();
    let t = 1.0 / madd(0.327_591_1, a, 1.0);
    let poly = t * madd(t, madd(t, madd(t, madd(t, 1.061_405_4, -1.453_152), 1.421_413_7), -0.284_496_74), 0.254_829_6);
    let g = exp(-a * a);
    (madd(-poly, g, 1.0).copysign(x), g)
}

/// The exact GELU `x Phi(x)` and its derivative `Phi(x) + x phi(x)`.
#[inline(always)]
pub fn gelu_erf(x: f32) -> (f32, f32) {
    const INV_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    let (e, g) = erf_and_gauss(x * INV_SQRT_2);
    let cdf = 0.5 * (1.0 + e);
    // g = e^(-x^2 / 2)
    (x * cdf, cdf + x * g * INV_SQRT_2PI)
}

/// SiLU `x sigmoid(x)` and its derivative.
#[inline(always)]
pub fn silu(x: f32) -> (f32, f32) {
    let s = 1.0 / (1.0 + exp(-x));
    (x * s, s * (1.0 + x * (1.0 - s)))
}

/// `y += a * x` over two equally long slices.
#[inline]
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    debug_assert_eq!(y.len(), x.len());
    for (u, &v) in y.iter_mut().zip(x) {
        *u = madd(a, v, *u);
    }
}

/// Sum of a slice with [`LANES`] independent accumulators.
#[inline]
pub fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// `sum((x - mean)^2)` with [`LANES`] independent accumulators.
#[inline]
pub fn sum_sq_dev(xs: &[f32], mean: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += (x - mean) * (x - mean);
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().map(|&x| (x - mean) * (x - mean)).sum::<f32>()
}

/// Dot product of two equally long slices with [`LANES`] independent accumulators.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for ((s, &p), &q) in acc.iter_mut().zip(x).zip(y) {
            *s += p * q;
        }
    }
    acc.iter().sum::<f32>() + ca.remainder().iter().zip(cb.remainder()).map(|(p, q)| p * q).sum::<f32>()
}

/// `sum(a * b * c)` over three equally long slices with [`LANES`] independent accumulators.
#[inline]
pub fn dot3(a: &[f32], b: &[f32], c: &[f32]) -> f32 {
    debug_assert!(a.len() == b.len() && b.len() == c.len());
    let mut acc = [0.0f32; LANES];
    let (mut ca, mut cb, mut cc) = (a.chunks_exact(LANES), b.chunks_exact(LANES), c.chunks_exact(LANES));
    for ((x, y), z) in (&mut ca).zip(&mut cb).zip(&mut cc) {
        for (((s, &p), &q), &r) in acc.iter_mut().zip(x).zip(y).zip(z) {
            *s += p * q * r;
        }
    }
    let rest: f32 = ca.remainder().iter().zip(cb.remainder()).zip(cc.remainder()).map(|((p, q), r)| p * q * r).sum();
    acc.iter().sum::<f32>() + rest
}

/// Largest element (negative infinity for an empty slice; NaNs are skipped).
#[inline]
pub fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = if x > *a { x } else { *a };
        }
    }
    chunks.remainder().iter().chain(acc.iter()).fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
}

/// Replaces each `x` by `e^(x - m)` and returns their sum.
#[inline]
pub fn exp_shifted_sum(xs: &mut [f32], m: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = xs.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (a, x) in acc.iter_mut().zip(c.iter_mut()) {
            *x = exp(*x - m);
            *a += *x;
        }
    }
    let mut rest = 0.0;
    for x in chunks.into_remainder() {
        *x = exp(*x - m);
        rest += *x;
    }
    acc.iter().sum::<f32>() + rest
}

/// Softmax of a row in place; entries of negative infinity get probability 0, and a row with
/// nothing but them becomes all zeros.
#[inline]
pub fn softmax_in_place(row: &mut [f32]) {
    let m = max(row);
    if m == f32::NEG_INFINITY {
        row.iter_mut().for_each(|x| *x = 0.0);
        return;
    }
    let inv = 1.0 / exp_shifted_sum(row, m);
    row.iter_mut().for_each(|x| *x *= inv);
}

/// `log(sum(e^x))` of a row, stable for large entries.
#[inline]
pub fn log_sum_exp(row: &[f32]) -> f32 {
    let m = max(row);
    if m == f32::NEG_INFINITY {
        return m;
    }
    let mut acc = [0.0f32; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += exp(x - m);
        }
    }
    let rest: f32 = chunks.remainder().iter().map(|&x| exp(x - m)).sum();
    m + (acc.iter().sum::<f32>() + rest).ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::erf_ref;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_matches_std_across_its_range() {
        let mut worst = 0;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let want = (x as f64).exp() as f32;
            worst = worst.max(ulps(exp(x), want));
            x += 0.000_93;
        }
        assert!(worst <= 2, "worst error {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
    }

    fn erf(x: f32) -> f32 {
        erf_and_gauss(x).0
    }

    #[test]
    fn erf_and_gelu_match_series() {
        for i in -300..=300 {
            let x = i as f64 / 100.0;
            let want = erf_ref(x);
            // Abramowitz-Stegun bound 1.5e-7, plus f32 rounding of the terms near 1
            assert!((erf(x as f32) as f64 - want).abs() < 4e-7, "erf({x}): {} vs {want}", erf(x as f32));
            let cdf = 0.5 * (1.0 + erf_ref(x * std::f64::consts::FRAC_1_SQRT_2));
            let pdf = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let (y, d) = gelu_erf(x as f32);
            assert!((y as f64 - x * cdf).abs() < 1e-6, "gelu({x})");
            assert!((d as f64 - (cdf + x * pdf)).abs() < 1e-6, "gelu'({x})");
        }
        assert!(erf(0.0).abs() < 2e-7);
        assert_eq!(erf(10.0), 1.0);
        assert_eq!(erf(-10.0), -1.0);
    }

    #[test]
    fn silu_matches_its_definition() {
        for i in -200..=200 {
            let x = i as f64 / 20.0;
            let s = 1.0 / (1.0 + (-x).exp());
            let (y, d) = silu(x as f32);
            assert!((y as f64 - x * s).abs() < 1e-6 * x.abs().max(1.0));
            assert!((d as f64 - s * (1.0 + x * (1.0 - s))).abs() < 1e-6);
        }
    }

    #[test]
    fn axpy_adds_a_scaled_slice() {
        let mut y = vec![1.0, 2.0, 3.0];
        axpy(&mut y, 0.5, &[2.0, -4.0, 6.0]);
        assert_eq!(y, [2.0, 0.0, 6.0]);
    }

    #[test]
    fn reductions_agree_with_plain_loops() {
        for n in [0, 1, 5, 16, 17, 40, 129] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 37) % 11) as f32 - 4.5).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 13) % 7) as f32 * 0.25).collect();
            let s: f64 = a.iter().map(|&x| x as f64).sum();
            assert!((sum(&a) as f64 - s).abs() < 1e-4);
            let d: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            assert!((dot(&a, &b) as f64 - d).abs() < 1e-4);
            let d3: f64 = a.iter().zip(&b).zip(&a).map(|((&x, &y), &z)| x as f64 * y as f64 * z as f64).sum();
            assert!((dot3(&a, &b, &a) as f64 - d3).abs() < 1e-3);
            let mean = if n > 0 { s / n as f64 } else { 0.0 };
            let v: f64 = a.iter().map(|&x| (x as f64 - mean).powi(2)).sum();
            assert!((sum_sq_dev(&a, mean as f32) as f64 - v).abs() < 1e-3);
            assert_eq!(max(&a), a.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)));
        }
    }

    #[test]
    fn softmax_handles_masked_entries() {
        let mut row = vec![1.0, f32::NEG_INFINITY, 3.0, 2.0];
        softmax_in_place(&mut row);
        let z = 1f64.exp() + 3f64.exp() + 2f64.exp();
        let want = [1f64.exp() / z, 0.0, 3f64.exp() / z, 2f64.exp() / z];
        for (p, w) in row.iter().zip(want) {
            assert!((*p as f64 - w).abs() < 1e-7);
        }
        let mut dead = vec![f32::NEG_INFINITY; 3];
        softmax_in_place(&mut dead);
        assert_eq!(dead, [0.0; 3]);
        let big: Vec<f32> = (0..37).map(|i| 500.0 + i as f32 * 0.1).collect();
        let want = big.iter().fold(0.0f64, |s, &x| s + ((x - 503.6) as f64).exp()).ln() + 503.6;
        assert!((log_sum_exp(&big) as f64 - want).abs() < 1e-4);
    }
}
