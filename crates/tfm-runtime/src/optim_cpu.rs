//! A fused, rayon-parallel AdamW update for weights on the CPU: one pass over each weight instead
//! of a chain of elementwise tensor ops, with exactly the same f32 arithmetic (so results agree
//! bit for bit with the device-generic version built from dfdx ops).

use crate::value::Flat;
use dfdx::prelude::*;
use rayon::prelude::*;

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// The f32 constants of one AdamW step, computed as the generic version computes them.
#[derive(Clone, Copy, Debug)]
pub struct AdamwConsts {
    /// `b1`
    pub b1: f32,
    /// `1 - b1`
    pub one_minus_b1: f32,
    /// `b2`
    pub b2: f32,
    /// `1 - b2`
    pub one_minus_b2: f32,
    /// `1 / sqrt(1 - b2^t)`
    pub inv_sqrt_bc2: f32,
    /// `eps`
    pub eps: f32,
    /// `lr / (1 - b1^t)`
    pub step: f32,
    /// `1 - lr * wd` where the weight decays.
    pub decay: Option<f32>,
}

/// One element: returns (weight, m, v). `keep` is `1 - lr * wd`, or 1 where the weight does not
/// decay (`p * 1.0 == p` exactly, so the loop has no branch and vectorises).
#[inline(always)]
fn adamw_one(c: &AdamwConsts, keep: f32, p: f32, g: f32, m: f32, v: f32) -> (f32, f32, f32) {
    let m = m * c.b1 + g * c.one_minus_b1;
    let v = v * c.b2 + (g * g) * c.one_minus_b2;
    let denom = v.sqrt() * c.inv_sqrt_bc2 + c.eps;
    let upd = (m / denom) * c.step;
    (p * keep - upd, m, v)
}

/// Applies AdamW to host buffers in place (`m` and `v` hold the previous moments).
pub fn adamw_slices(c: &AdamwConsts, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    assert!(g.len() == p.len() && m.len() == p.len() && v.len() == p.len(), "adamw: buffer lengths differ");
    let keep = c.decay.unwrap_or(1.0);
    p.par_chunks_mut(CHUNK)
        .zip(g.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .for_each(|(((p, g), m), v)| {
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                let (w, m2, v2) = adamw_one(c, keep, *p, g, *m, *v);
                *p = w;
                *m = m2;
                *v = v2;
            }
        });
}

/// Host buffers an optimiser keeps between steps for [`adamw_cpu`]: the weight and gradient are
/// copied into them (dfdx gives no mutable access to a tensor's storage), so no step allocates.
#[derive(Clone, Debug, Default)]
pub struct AdamwScratch {
    p: Vec<f32>,
    g: Vec<f32>,
}

/// AdamW for one CPU weight: updates `p` (written back in place when no other clone of it is
/// alive) and the moments `m`, `v` (host vectors, empty = zeros).
pub fn adamw_cpu(c: &AdamwConsts, p: &mut Flat<Cpu>, g: &Flat<Cpu>, m: &mut Vec<f32>, v: &mut Vec<f32>, scratch: &mut AdamwScratch) {
    let n = p.shape().0;
    for buf in [&mut scratch.p, &mut scratch.g] {
        if buf.len() < n {
            buf.resize(n, 0.0);
        }
    }
    for mom in [&mut *m, &mut *v] {
        if mom.len() != n {
            *mom = vec![0.0; n];
        }
    }
    let (ph, gh) = (&mut scratch.p[..n], &mut scratch.g[..n]);
    p.copy_into(ph);
    g.copy_into(gh);
    adamw_slices(c, ph, gh, m, v);
    p.copy_from(ph);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_matches_dfdx_ops_bit_for_bit() {
        let dev = Cpu::default();
        let n = 40_000;
        let p: Vec<f32> = (0..n).map(|i| ((i * 37) % 101) as f32 * 0.01 - 0.5).collect();
        let g: Vec<f32> = (0..n).map(|i| ((i * 53) % 97) as f32 * 0.002 - 0.1).collect();
        let m0: Vec<f32> = (0..n).map(|i| ((i * 11) % 89) as f32 * 0.001 - 0.04).collect();
        let v0: Vec<f32> = (0..n).map(|i| ((i * 7) % 83) as f32 * 1e-5).collect();
        let (b1, b2, eps, lr, wd, t) = (0.9f64, 0.99f64, 1e-8f64, 1e-3f64, 0.1f64, 3i32);
        let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        let c = AdamwConsts {
            b1: b1 as f32,
            one_minus_b1: (1.0 - b1) as f32,
            b2: b2 as f32,
            one_minus_b2: (1.0 - b2) as f32,
            inv_sqrt_bc2: (1.0 / bc2.sqrt()) as f32,
            eps: eps as f32,
            step: (lr / bc1) as f32,
            decay: Some((1.0 - lr * wd) as f32),
        };
        let pt = dev.tensor_from_vec(p.clone(), (n,));
        let gt = dev.tensor_from_vec(g.clone(), (n,));
        let mt = dev.tensor_from_vec(m0.clone(), (n,));
        let vt = dev.tensor_from_vec(v0.clone(), (n,));
        // the same chain of ops as the device-generic optimiser
        let m = mt.clone() * c.b1 + gt.clone() * c.one_minus_b1;
        let v = vt.clone() * c.b2 + gt.clone().square() * c.one_minus_b2;
        let denom = v.clone().sqrt() * c.inv_sqrt_bc2 + c.eps;
        let upd = (m.clone() / denom) * c.step;
        let w = pt.clone() * (1.0 - lr * wd) as f32 - upd;
        let (mut w2, mut m2, mut v2) = (pt.clone(), m0.clone(), v0.clone());
        let mut scratch = AdamwScratch::default();
        adamw_cpu(&c, &mut w2, &gt, &mut m2, &mut v2, &mut scratch);
        assert_eq!(w.as_vec(), w2.as_vec());
        assert_eq!(m.as_vec(), m2);
        assert_eq!(v.as_vec(), v2);
        // the weight's other clone keeps its old value (written in place only when unshared)
        assert_eq!(pt.as_vec(), p);
        // moments that start empty are zeros: the first step from zero moments
        let (mut w3, mut m3, mut v3) = (pt.clone(), Vec::new(), Vec::new());
        adamw_cpu(&c, &mut w3, &gt, &mut m3, &mut v3, &mut scratch);
        let mz = gt.clone() * c.one_minus_b1;
        let vz = gt.clone().square() * c.one_minus_b2;
        let wz = pt.clone() * (1.0 - lr * wd) as f32 - (mz.clone() / (vz.clone().sqrt() * c.inv_sqrt_bc2 + c.eps)) * c.step;
        assert_eq!(wz.as_vec(), w3.as_vec());
        assert_eq!(mz.as_vec(), m3);
        assert_eq!(vz.as_vec(), v3);
        // a weight that does not decay
        let nd = AdamwConsts { decay: None, ..c };
        let (mut w4, mut m4, mut v4) = (pt.clone(), m0.clone(), v0.clone());
        adamw_cpu(&nd, &mut w4, &gt, &mut m4, &mut v4, &mut scratch);
        let wn = pt.clone() - (m.clone() / (v.clone().sqrt() * c.inv_sqrt_bc2 + c.eps)) * c.step;
        assert_eq!(wn.as_vec(), w4.as_vec());
        assert_eq!(m.as_vec(), m4);
        // and against one element written out by hand
        let mm = m0[5] * 0.9 + g[5] * (1.0 - 0.9f64) as f32;
        let vv = v0[5] * 0.99 + g[5] * g[5] * (1.0 - 0.99f64) as f32;
        let ww = p[5] * (1.0 - lr * wd) as f32 - mm / (vv.sqrt() * c.inv_sqrt_bc2 + c.eps) * c.step;
        assert!((w2.as_vec()[5] - ww).abs() <= 1e-7, "{} vs {ww}", w2.as_vec()[5]);
    }
}
