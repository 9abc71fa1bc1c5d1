//! Bounds-checked wrappers over two matrix libraries, `matrixmultiply` and `gemm` (both with
//! runtime-dispatched AVX2/FMA kernels), threaded for large products.

/// A strided matrix view into a slice: element (i, j) is `data[off + i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub off: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major `[rows, cols]` matrix starting at `off` with row stride `rs`.
    pub fn rows(data: &'a [f32], off: usize, rs: usize) -> Self {
        MatRef { data, off, rs, cs: 1 }
    }
    /// The transpose of a row-major matrix with row stride `rs`.
    pub fn trans(data: &'a [f32], off: usize, rs: usize) -> Self {
        MatRef { data, off, rs: 1, cs: rs }
    }
    pub fn fits(&self, r: usize, c: usize) -> bool {
        r == 0 || c == 0 || self.off + (r - 1) * self.rs + (c - 1) * self.cs < self.data.len()
    }
}

/// Checks that the views fit their slices (panics on a bug, never on user input) and handles the
/// empty products; `false` when nothing is left for the kernel to compute.
#[allow(clippy::too_many_arguments)]
fn checked_nonempty(m: usize, k: usize, n: usize, a: &MatRef, b: &MatRef, beta: f32, c: &mut [f32], c_off: usize, rsc: usize) -> bool {
    if m == 0 || n == 0 {
        return false;
    }
    assert!(a.fits(m, k) && b.fits(k, n), "sgemm operand out of bounds");
    assert!(c_off + (m - 1) * rsc + n <= c.len(), "sgemm output out of bounds");
    if k == 0 {
        for i in 0..m {
            for v in &mut c[c_off + i * rsc..c_off + i * rsc + n] {
                *v *= beta;
            }
        }
        return false;
    }
    true
}

/// `C = alpha * A @ B + beta * C` with `A [m, k]`, `B [k, n]`, `C [m, n]` row-major at `c_off`
/// with row stride `rsc`. Panics (a bug, never user input) if a view does not fit its slice.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: MatRef,
    b: MatRef,
    beta: f32,
    c: &mut [f32],
    c_off: usize,
    rsc: usize,
) {
    if !checked_nonempty(m, k, n, &a, &b, beta, c, c_off, rsc) {
        return;
    }
    let a_ptr = a.data[a.off..].as_ptr();
    let b_ptr = b.data[b.off..].as_ptr();
    let c_ptr = c[c_off..].as_mut_ptr();
    // SAFETY: the asserts above check that every element the product reads lies inside `a.data`
    // and `b.data` and every element it writes lies inside `c`; strides are non-negative and fit
    // in isize because they index existing slices; `c` is a unique borrow, so it does not alias
    // `a` or `b`.
    #[allow(unsafe_code)]
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a_ptr,
            a.rs as isize,
            a.cs as isize,
            b_ptr,
            b.rs as isize,
            b.cs as isize,
            beta,
            c_ptr,
            rsc as isize,
            1,
        );
    }
}

/// Like [`sgemm`], computed by the `gemm` crate (rayon-parallel when the product is large).
#[allow(clippy::too_many_arguments)]
pub fn sgemm_g(m: usize, k: usize, n: usize, alpha: f32, a: MatRef, b: MatRef, beta: f32, c: &mut [f32], c_off: usize, rsc: usize) {
    let par = if m * k * n >= (1 << 18) {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    gemm_crate(m, k, n, alpha, a, b, beta, c, c_off, rsc, par);
}

/// Like [`sgemm`], by the `gemm` crate on the calling thread: faster than `matrixmultiply` for
/// the small per-head products of attention over short sequences, which it does not pack.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_small(m: usize, k: usize, n: usize, alpha: f32, a: MatRef, b: MatRef, beta: f32, c: &mut [f32], c_off: usize, rsc: usize) {
    gemm_crate(m, k, n, alpha, a, b, beta, c, c_off, rsc, gemm::Parallelism::None);
}

#[allow(clippy::too_many_arguments)]
fn gemm_crate(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: MatRef,
    b: MatRef,
    beta: f32,
    c: &mut [f32],
    c_off: usize,
    rsc: usize,
    par: gemm::Parallelism,
) {
    if !checked_nonempty(m, k, n, &a, &b, beta, c, c_off, rsc) {
        return;
    }
    let a_ptr = a.data[a.off..].as_ptr();
    let b_ptr = b.data[b.off..].as_ptr();
    let c_ptr = c[c_off..].as_mut_ptr();
    // SAFETY: as in `sgemm`: every element read or written lies inside its slice (checked
    // above), strides are non-negative and `c` does not alias `a` or `b`. `gemm` computes
    // dst = alpha_g * dst + beta_g * lhs @ rhs, reading dst only when `read_dst`.
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c_ptr,
            1,
            rsc as isize,
            beta != 0.0,
            a_ptr,
            a.cs as isize,
            a.rs as isize,
            b_ptr,
            b.cs as isize,
            b.rs as isize,
            beta,
            alpha,
            false,
            false,
            false,
            par,
        );
    }
}

/// Leaves threading to rayon: matrixmultiply's own pool would compete with rayon's workers
/// (which spin before sleeping) for the same cores. Honours a `MATMUL_NUM_THREADS` the user set.
pub fn single_threaded_kernels() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("MATMUL_NUM_THREADS").is_none() {
            std::env::set_var("MATMUL_NUM_THREADS", "1");
        }
    });
}

/// [`sgemm`] for the products of linear layers and batched matmuls, threaded when large. A
/// product that reads `A` by rows (forward passes, input gradients) runs on the `gemm` crate;
/// one that reads `A` transposed (weight gradients) on `matrixmultiply`, the rows of `C` split
/// across rayon's threads. Each library is the faster one for that layout at transformer shapes
/// (`examples/gemm_probe.rs`: 1.2 to 1.9x apart on an AVX-512 EPYC); the choice
/// depends only on the layout, so results stay bit-for-bit reproducible.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_par(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: MatRef,
    b: MatRef,
    beta: f32,
    c: &mut [f32],
    c_off: usize,
    rsc: usize,
) {
    use rayon::prelude::*;
    if a.cs == 1 {
        return sgemm_g(m, k, n, alpha, a, b, beta, c, c_off, rsc);
    }
    let threads = rayon::current_num_threads();
    if threads <= 1 || m * k * n < (1 << 18) || m < 32 {
        return sgemm(m, k, n, alpha, a, b, beta, c, c_off, rsc);
    }
    let parts = threads.min(m / 16).max(1);
    let rows_per = m.div_ceil(parts);
    let mut pieces = Vec::with_capacity(parts);
    let mut rest = &mut c[c_off..];
    let mut r0 = 0;
    while r0 < m {
        let r1 = (r0 + rows_per).min(m);
        let len = if r1 == m { rest.len() } else { (r1 - r0) * rsc };
        let (head, tail) = rest.split_at_mut(len);
        pieces.push((r0, r1, head));
        rest = tail;
        r0 = r1;
    }
    pieces.into_par_iter().for_each(|(r0, r1, cs)| {
        let a = MatRef { off: a.off + r0 * a.rs, ..a };
        sgemm(r1 - r0, k, n, alpha, a, b, beta, cs, 0, rsc);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_product_and_transpose() {
        // A = [[1, 2], [3, 4]], B = [[5, 6], [7, 8]]
        let a = [1.0, 2.0, 3.0, 4.0];
        let b = [5.0, 6.0, 7.0, 8.0];
        let mut c = [0.0; 4];
        sgemm(2, 2, 2, 1.0, MatRef::rows(&a, 0, 2), MatRef::rows(&b, 0, 2), 0.0, &mut c, 0, 2);
        assert_eq!(c, [19.0, 22.0, 43.0, 50.0]);
        // A @ B^T = [[17, 23], [39, 53]], accumulated onto C
        sgemm(2, 2, 2, 1.0, MatRef::rows(&a, 0, 2), MatRef::trans(&b, 0, 2), 1.0, &mut c, 0, 2);
        assert_eq!(c, [36.0, 45.0, 82.0, 103.0]);
    }

    #[test]
    fn parallel_rows_match_one_call() {
        let (m, k, n) = (70, 64, 66);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 5) % 11) as f32 - 5.0).collect();
        let mut c1 = vec![1.0; m * n + 3];
        let mut c2 = c1.clone();
        sgemm(m, k, n, 0.5, MatRef::rows(&a, 0, k), MatRef::rows(&b, 0, n), 1.0, &mut c1, 3, n);
        sgemm_par(m, k, n, 0.5, MatRef::rows(&a, 0, k), MatRef::rows(&b, 0, n), 1.0, &mut c2, 3, n);
        assert_eq!(c1, c2);
        // `A` read transposed: the rows of `C` split across threads
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let mut c6 = vec![1.0; m * n + 3];
        sgemm_par(m, k, n, 0.5, MatRef::trans(&at, 0, m), MatRef::rows(&b, 0, n), 1.0, &mut c6, 3, n);
        assert_eq!(c1, c6);
        // against a plain triple loop
        let mut naive = 1.0f32;
        for j in 0..k {
            naive += 0.5 * a[5 * k + j] * b[j * n + 7];
        }
        assert_eq!(c2[3 + 5 * n + 7], naive);
        let mut c3 = vec![1.0; m * n + 3];
        sgemm_g(m, k, n, 0.5, MatRef::rows(&a, 0, k), MatRef::trans(&b, 0, k), 1.0, &mut c3, 3, n);
        let mut c4 = vec![1.0; m * n + 3];
        sgemm(m, k, n, 0.5, MatRef::rows(&a, 0, k), MatRef::trans(&b, 0, k), 1.0, &mut c4, 3, n);
        let mut c5 = vec![1.0; m * n + 3];
        sgemm_small(m, k, n, 0.5, MatRef::rows(&a, 0, k), MatRef::trans(&b, 0, k), 1.0, &mut c5, 3, n);
        for ((x, y), z) in c3.iter().zip(&c4).zip(&c5) {
            assert!((x - y).abs() <= 1e-4 * y.abs().max(1.0), "{x} vs {y}");
            assert!((z - y).abs() <= 1e-4 * y.abs().max(1.0), "{z} vs {y}");
        }
    }
}
