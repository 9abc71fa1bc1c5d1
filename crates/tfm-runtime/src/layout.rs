//! Index maps for layout changes (permute, broadcast, slice, concat, unfold, patches), computed on
//! the host and applied as one gather, whose backward accumulates.

pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Calls `f(flat_out_index, multi_index)` for every element of `shape`, in row-major order.
fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize])) {
    let n: usize = shape.iter().product();
    if n == 0 {
        return;
    }
    let mut ix = vec![0usize; shape.len()];
    for _ in 0..n {
        f(&ix);
        for d in (0..shape.len()).rev() {
            ix[d] += 1;
            if ix[d] < shape[d] {
                break;
            }
            ix[d] = 0;
        }
    }
}

/// `out = x.permute(axes)`: returns (index into x, out shape).
pub fn permute(shape: &[usize], axes: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let st = strides(shape);
    let out: Vec<usize> = axes.iter().map(|&a| shape[a]).collect();
    let ost: Vec<usize> = axes.iter().map(|&a| st[a]).collect();
    let mut idx = Vec::with_capacity(out.iter().product());
    for_each_index(&out, |ix| idx.push(ix.iter().zip(&ost).map(|(i, s)| i * s).sum()));
    (idx, out)
}

/// NumPy broadcasting of two shapes; `None` if they do not broadcast.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
        let db = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return None;
        };
    }
    Some(out)
}

/// Index into `x` (shape `from`) for each element of its broadcast to `to` (right-aligned).
pub fn broadcast(from: &[usize], to: &[usize]) -> Vec<usize> {
    let st = strides(from);
    let off = to.len() - from.len();
    let bst: Vec<usize> = (0..to.len())
        .map(|i| if i < off || from[i - off] == 1 { 0 } else { st[i - off] })
        .collect();
    let mut idx = Vec::with_capacity(to.iter().product());
    for_each_index(to, |ix| idx.push(ix.iter().zip(&bst).map(|(i, s)| i * s).sum()));
    idx
}

/// A run of consecutive output dims in a broadcast: copied from the input, or repeated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Run {
    /// Elements taken from the input (the product of the run's dims).
    Keep(usize),
    /// Times the data so far is repeated (the product of the run's dims).
    Repeat(usize),
}

/// `from` broadcast to `to` (aligned right) as alternating runs of kept and repeated dims; dims of
/// size 1 in both are dropped. `None` when the shapes do not broadcast.
pub fn broadcast_groups(from: &[usize], to: &[usize]) -> Option<Vec<Run>> {
    if from.len() > to.len() {
        return None;
    }
    let off = to.len() - from.len();
    let mut runs: Vec<Run> = Vec::new();
    for (i, &n) in to.iter().enumerate() {
        let f = if i < off { 1 } else { from[i - off] };
        if n == 1 && f == 1 {
            continue;
        }
        let keep = if f == n { true } else if f == 1 { false } else { return None };
        match (runs.last_mut(), keep) {
            (Some(Run::Keep(k)), true) => *k *= n,
            (Some(Run::Repeat(r)), false) => *r *= n,
            (_, true) => runs.push(Run::Keep(n)),
            (_, false) => runs.push(Run::Repeat(n)),
        }
    }
    Some(runs)
}

/// `x[.., start..end, ..]` along `axis`: (index, out shape).
pub fn slice(shape: &[usize], axis: usize, start: usize, end: usize) -> (Vec<usize>, Vec<usize>) {
    let pre: usize = shape[..axis].iter().product();
    let n = shape[axis];
    let post: usize = shape[axis + 1..].iter().product();
    let mut out = shape.to_vec();
    out[axis] = end - start;
    let mut idx = Vec::with_capacity(pre * (end - start) * post);
    for p in 0..pre {
        for j in start..end {
            let base = (p * n + j) * post;
            idx.extend(base..base + post);
        }
    }
    (idx, out)
}

/// Concatenation along `axis` of tensors laid end to end in one flat buffer: index into that
/// buffer, and the out shape.
pub fn concat(shapes: &[Vec<usize>], axis: usize) -> (Vec<usize>, Vec<usize>) {
    let pre: usize = shapes[0][..axis].iter().product();
    let post: usize = shapes[0][axis + 1..].iter().product();
    let mut out = shapes[0].clone();
    out[axis] = shapes.iter().map(|s| s[axis]).sum();
    let mut offsets = Vec::with_capacity(shapes.len());
    let mut o = 0;
    for s in shapes {
        offsets.push(o);
        o += s.iter().product::<usize>();
    }
    let mut idx = Vec::with_capacity(o);
    for p in 0..pre {
        for (s, off) in shapes.iter().zip(&offsets) {
            let n = s[axis];
            let base = off + p * n * post;
            idx.extend(base..base + n * post);
        }
    }
    (idx, out)
}

/// Columns of 1-D convolution: `x [B, C, L]` -> `[B, Lout, C * k]` (column `c * k + j`), with
/// `zero` (an index holding 0) for padded positions.
pub fn unfold1d(b: usize, c: usize, l: usize, k: usize, stride: usize, pad: usize, zero: usize) -> (Vec<usize>, usize) {
    let lout = (l + 2 * pad).saturating_sub(k) / stride + 1;
    let mut idx = Vec::with_capacity(b * lout * c * k);
    for bi in 0..b {
        for o in 0..lout {
            for ci in 0..c {
                for j in 0..k {
                    let pos = o * stride + j;
                    idx.push(if pos < pad || pos - pad >= l { zero } else { (bi * c + ci) * l + pos - pad });
                }
            }
        }
    }
    (idx, lout)
}

/// Patches of an image: `x [B, C, H, W]` -> `[B, (H/p)*(W/p), C*p*p]` (column `(c*p + i)*p + j`).
pub fn patches(b: usize, c: usize, h: usize, w: usize, p: usize) -> (Vec<usize>, usize) {
    let (hp, wp) = (h / p, w / p);
    let mut idx = Vec::with_capacity(b * hp * wp * c * p * p);
    for bi in 0..b {
        for y in 0..hp {
            for x in 0..wp {
                for ci in 0..c {
                    for i in 0..p {
                        for j in 0..p {
                            idx.push(((bi * c + ci) * h + y * p + i) * w + x * p + j);
                        }
                    }
                }
            }
        }
    }
    (idx, hp * wp)
}

/// T5's relative position bucket for `rel = key - query`.
pub fn t5_bucket(rel: i64, bidirectional: bool, buckets: u64, max_distance: u64) -> usize {
    let mut nb = buckets as i64;
    let mut ret = 0i64;
    let n = if bidirectional {
        nb /= 2;
        if rel > 0 {
            ret += nb;
        }
        rel.abs()
    } else {
        (-rel).max(0)
    };
    let max_exact = nb / 2;
    if n < max_exact {
        ret += n;
    } else {
        let me = max_exact.max(1) as f32;
        let large = me
            + ((n as f32 / me).ln() / (max_distance as f32 / me).ln() * (nb - max_exact) as f32) as i64 as f32;
        ret += (large as i64).min(nb - 1);
    }
    ret.max(0) as usize
}

/// ALiBi slopes (Press et al.), for any number of heads.
pub fn alibi_slopes(heads: usize) -> Vec<f32> {
    fn pow2(n: usize) -> Vec<f32> {
        let start = 2f64.powf(-8.0 / n as f64);
        (0..n).map(|i| start.powi(i as i32 + 1) as f32).collect()
    }
    if heads == 0 {
        return vec![];
    }
    let closest = 1usize << (usize::BITS - 1 - heads.leading_zeros());
    if closest == heads {
        pow2(heads)
    } else {
        let mut s = pow2(closest);
        s.extend(pow2(2 * closest).into_iter().step_by(2).take(heads - closest));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_transposes() {
        let (idx, out) = permute(&[2, 3], &[1, 0]);
        assert_eq!(out, vec![3, 2]);
        assert_eq!(idx, vec![0, 3, 1, 4, 2, 5]);
    }

    #[test]
    fn broadcast_groups_merge_runs_and_drop_unit_dims() {
        use Run::{Keep, Repeat};
        assert_eq!(broadcast_groups(&[3, 4], &[2, 3, 4]), Some(vec![Repeat(2), Keep(12)]));
        assert_eq!(broadcast_groups(&[2, 1, 4], &[2, 3, 4]), Some(vec![Keep(2), Repeat(3), Keep(4)]));
        assert_eq!(broadcast_groups(&[3, 1], &[2, 3, 4]), Some(vec![Repeat(2), Keep(3), Repeat(4)]));
        assert_eq!(broadcast_groups(&[1, 3, 1, 5], &[1, 3, 1, 5]), Some(vec![Keep(15)]));
        assert_eq!(broadcast_groups(&[2, 1, 3, 1], &[2, 4, 3, 5]), Some(vec![Keep(2), Repeat(4), Keep(3), Repeat(5)]));
        assert_eq!(broadcast_groups(&[2, 3], &[2, 4]), None);
        assert_eq!(broadcast_groups(&[2, 3, 4], &[3, 4]), None);
    }

    #[test]
    fn broadcast_and_slices() {
        assert_eq!(broadcast_shapes(&[2, 1, 4], &[3, 1]), Some(vec![2, 3, 4]));
        assert_eq!(broadcast_shapes(&[2, 3], &[4]), None);
        assert_eq!(broadcast(&[3], &[2, 3]), vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(broadcast(&[2, 1], &[2, 2]), vec![0, 0, 1, 1]);
        let (idx, out) = slice(&[2, 3], 1, 1, 3);
        assert_eq!((idx, out), (vec![1, 2, 4, 5], vec![2, 2]));
        let (idx, out) = concat(&[vec![2, 1], vec![2, 2]], 1);
        assert_eq!((idx, out), (vec![0, 2, 3, 1, 4, 5], vec![2, 3]));
    }

    #[test]
    fn t5_buckets_match_reference_values() {
        // Values of Hugging Face's `_relative_position_bucket` (32 buckets, distance 128).
        assert_eq!(t5_bucket(0, true, 32, 128), 0);
        assert_eq!(t5_bucket(3, true, 32, 128), 19);
        assert_eq!(t5_bucket(-3, true, 32, 128), 3);
        assert_eq!(t5_bucket(-20, true, 32, 128), 10);
        assert_eq!(t5_bucket(-200, true, 32, 128), 15);
        assert_eq!(t5_bucket(-20, false, 32, 128), 17);
        assert_eq!(t5_bucket(5, false, 32, 128), 0);
    }

    #[test]
    fn alibi_slopes_for_eight_and_six_heads() {
        let s = alibi_slopes(8);
        assert!((s[0] - 0.5).abs() < 1e-7 && (s[7] - 1.0 / 256.0).abs() < 1e-9);
        let s6 = alibi_slopes(6);
        assert_eq!(s6.len(), 6);
        assert_eq!(s6, vec![0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125]);
    }
}
