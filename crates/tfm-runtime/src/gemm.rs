//! A bounds-checked wrapper over `matrixmultiply::sgemm` (runtime-dispatched AVX2/FMA kernels,
//! threaded for large products).

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
    fn fits(&self, r: usize, c: usize) -> bool {
        r == 0 || c == 0 || self.off + (r - 1) * self.rs + (c - 1) * self.cs < self.data.len()
    }
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
    if m == 0 || n == 0 {
        return;
    }
    assert!(a.fits(m, k) && b.fits(k, n), "sgemm operand out of bounds");
    assert!(c_off + (m - 1) * rsc + n <= c.len(), "sgemm output out of bounds");
    if k == 0 {
        for i in 0..m {
            for v in &mut c[c_off + i * rsc..c_off + i * rsc + n] {
                *v *= beta;
            }
        }
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
}
