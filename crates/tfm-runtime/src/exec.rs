//! The interpreter: binds shape variables from the inputs, walks the graph (blocks, repeats,
//! tied weights) and lowers each primitive to backend ops.

use crate::backend::{generic, Backend, Cols, CoreCfg};
use crate::value::{e, param_uid, Ctx, Elem, Val, BT, FT, IT};
use crate::{dev_err, layout, profile, run_err, HostTensor, ParamStore, Runtime, RuntimeError};
use dfdx::prelude::*;
use std::sync::Arc;
use tfm_ir::{Activation, AttentionCfg, ChildKind, Dim, DimEnv, Graph, Node, Op, ParamId, Prim};

type R<X> = Result<X, RuntimeError>;
pub(crate) type Vals<D, E = f32> = Vec<Option<Val<D, E>>>;

/// Global weight indices of one graph instance: its own weights, then for each child one
/// instance per repeat copy (one, reused, when shared).
#[derive(Debug)]
pub(crate) struct Inst {
    pub params: Vec<usize>,
    pub children: Vec<Vec<Inst>>,
    /// Per value of the graph: a transpose the product consuming it reads in place
    /// ([`transposes_read_in_place`], worked out once here rather than on every pass).
    pub untransposed: Vec<bool>,
}

impl Inst {
    /// Numbers weights exactly in `Graph::for_each_param` order.
    pub fn build(g: &Graph, counter: &mut usize) -> Inst {
        let params = (0..g.params.len())
            .map(|_| {
                *counter += 1;
                *counter - 1
            })
            .collect();
        let children = g
            .children
            .iter()
            .map(|c| match c.kind {
                ChildKind::Block | ChildKind::Repeat { shared: true, .. } => vec![Inst::build(&c.graph, counter)],
                ChildKind::Repeat { count, shared: false } => (0..count).map(|_| Inst::build(&c.graph, counter)).collect(),
            })
            .collect();
        Inst { params, children, untransposed: transposes_read_in_place(g) }
    }
}

/// Runs the root graph on host inputs; returns every root value (the objective reads some).
pub(crate) fn run_model<E: Elem, D: Backend<E>, T: Tape<E, D>>(
    rt: &Runtime<D>,
    cx: &mut Ctx<D, T, E>,
    store: &ParamStore<D, E>,
    inputs: &[HostTensor],
) -> R<Vals<D, E>> {
    let m = &rt.model;
    if inputs.len() != m.inputs.len() {
        let names: Vec<_> = m.inputs.iter().map(|p| p.name.as_str()).collect();
        return Err(run_err(format!(
            "expected {} input tensors ({}), found {}",
            m.inputs.len(),
            names.join(", "),
            inputs.len()
        )));
    }
    let mut env = DimEnv::new();
    for (port, h) in m.inputs.iter().zip(inputs) {
        let ty = &m.graph.values[port.value].ty;
        let err = |message: String| RuntimeError::Input { port: port.name.clone(), message };
        if h.dtype() != ty.dtype {
            return Err(err(format!("expected {ty}, found a {} tensor", h.dtype().name())));
        }
        if h.shape().len() != ty.shape.len() {
            return Err(err(format!("expected {ty}, found shape {:?}", h.shape())));
        }
        if h.len() != h.shape().iter().product::<usize>() {
            return Err(err(format!("shape {:?} holds {} elements, found {}", h.shape(), h.shape().iter().product::<usize>(), h.len())));
        }
        bind(&mut env, &ty.shape, h.shape(), false).map_err(|m| err(format!("{m} (expected {ty}, found shape {:?})", h.shape())))?;
    }
    for (port, h) in m.inputs.iter().zip(inputs) {
        let ty = &m.graph.values[port.value].ty;
        for (d, &n) in ty.shape.iter().zip(h.shape()) {
            if let Some(v) = d.eval(&env) {
                if v as usize != n {
                    return Err(RuntimeError::Input {
                        port: port.name.clone(),
                        message: format!("expected {ty}, found shape {:?}: `{d}` is {v} here", h.shape()),
                    });
                }
            }
        }
    }
    let mut vals = Vec::with_capacity(inputs.len());
    for h in inputs {
        vals.push(host_to_val(cx, h)?);
    }
    run_graph(rt, cx, store, &m.graph, &rt.inst, vals, &env)
}

fn host_to_val<E: Elem, D: Backend<E>, T: Tape<E, D>>(cx: &Ctx<D, T, E>, h: &HostTensor) -> R<Val<D, E>> {
    Ok(match h {
        HostTensor::F32 { shape, data } => Val::F(cx.constant(data.clone(), shape.clone())?),
        HostTensor::I64 { shape, data } => Val::I(IT { shape: shape.clone(), data: Arc::new(data.clone()) }),
        HostTensor::Bool { shape, data } => Val::B(BT { shape: shape.clone(), data: Arc::new(data.clone()) }),
    })
}

/// Binds single-variable dims to actual sizes; with `overwrite` a child graph's own variables
/// replace the caller's.
fn bind(env: &mut DimEnv, dims: &[Dim], shape: &[usize], overwrite: bool) -> Result<(), String> {
    for (d, &n) in dims.iter().zip(shape) {
        if let Some(v) = d.as_var() {
            match env.get(v) {
                Some(&old) if old as usize != n && !overwrite => {
                    return Err(format!("shape variable `{v}` is {old} in an earlier input but {n} here"));
                }
                _ => {
                    env.insert(v.to_string(), n as u64);
                }
            }
        } else if let Some(c) = d.as_known() {
            if c as usize != n {
                return Err(format!("expected size {c}, found {n}"));
            }
        }
    }
    Ok(())
}

fn eval(d: &Dim, env: &DimEnv, what: &str) -> R<usize> {
    d.eval(env)
        .map(|v| v as usize)
        .ok_or_else(|| run_err(format!("{what}: cannot evaluate `{d}` with the bound shape variables {env:?}")))
}

fn run_graph<E: Elem, D: Backend<E>, T: Tape<E, D>>(
    rt: &Runtime<D>,
    cx: &mut Ctx<D, T, E>,
    store: &ParamStore<D, E>,
    g: &Graph,
    inst: &Inst,
    inputs: Vec<Val<D, E>>,
    parent_env: &DimEnv,
) -> R<Vals<D, E>> {
    let mut env = parent_env.clone();
    if inputs.len() != g.inputs.len() {
        return Err(run_err(format!("internal: a block expects {} inputs, found {}", g.inputs.len(), inputs.len())));
    }
    let mut vals: Vals<D, E> = vec![None; g.values.len()];
    for (&vid, v) in g.inputs.iter().zip(inputs) {
        bind(&mut env, &g.values[vid].ty.shape, v.shape(), true).map_err(run_err)?;
        vals[vid] = Some(v);
    }
    let untransposed = &inst.untransposed;
    let dev = cx.dev.clone();
    for node in &g.nodes {
        let mut ins = Vec::with_capacity(node.inputs.len());
        for &v in &node.inputs {
            ins.push(vals[v].clone().ok_or_else(|| run_err("internal: a value is used before it is computed"))?);
        }
        if let Some(&out) = node.outputs.first().filter(|o| untransposed[**o]) {
            // `w^T` feeding only `x @ w^T`: keep `w`; the product reads it transposed
            vals[out] = ins.into_iter().next();
            continue;
        }
        let outs = match &node.op {
            Op::Prim { prim: Prim::MatMul, .. } if node.inputs.get(1).is_some_and(|&b| untransposed[b]) => {
                let (x, w) = (f(&ins, 0, "matmul")?, f(&ins, 1, "matmul")?);
                profile::timed("forward linear", || dev.sync(), || Ok(vec![Val::F(linear(cx, x, w, None)?)]))?
            }
            Op::Prim { prim, params } => {
                let ps = Ps { g, inst, store, ids: params };
                let what = if profile::enabled() { format!("forward {prim:?}") } else { String::new() };
                profile::timed(&what, || dev.sync(), || prim_op(cx, &ps, prim, &ins, node, &env))?
            }
            Op::Apply { child } => apply(rt, cx, store, g, inst, *child, ins, &env)?,
            Op::Weight { path, param } => vec![Val::F(weight(g, inst, store, path, *param)?)],
        };
        if outs.len() != node.outputs.len() {
            return Err(run_err(format!("internal: an op made {} values, the graph expects {}", outs.len(), node.outputs.len())));
        }
        for (&vid, v) in node.outputs.iter().zip(outs) {
            check_type(g, vid, &v, &env)?;
            vals[vid] = Some(v);
        }
    }
    Ok(vals)
}

/// Values `w^T` (a 2-D transpose) whose only use is as the right operand of a matrix product
/// with a left operand of rank 2 or more: `x @ w^T` is then `linear(x, w)`, which reads `w` in
/// place instead of copying it (and its gradient) through a transpose. Unnamed values only, so
/// that no output or probe can see the skipped transpose.
pub(crate) fn transposes_read_in_place(g: &Graph) -> Vec<bool> {
    let mut uses = vec![0usize; g.values.len()];
    for node in &g.nodes {
        for &v in &node.inputs {
            uses[v] += 1;
        }
    }
    for &v in &g.outputs {
        uses[v] += 1;
    }
    let mut is_transpose = vec![false; g.values.len()];
    for node in &g.nodes {
        if let (Op::Prim { prim: Prim::Permute { axes }, .. }, [src], [out]) = (&node.op, &node.inputs[..], &node.outputs[..]) {
            let v = &g.values[*out];
            is_transpose[*out] = axes[..] == [1, 0]
                && g.values[*src].ty.shape.len() == 2
                && uses[*out] == 1
                && v.name.is_none()
                && matches!(v.ty.dtype, tfm_ir::DType::F32);
        }
    }
    let mut keep = vec![false; g.values.len()];
    for node in &g.nodes {
        if let (Op::Prim { prim: Prim::MatMul, .. }, [a, b]) = (&node.op, &node.inputs[..]) {
            if is_transpose[*b] && g.values[*a].ty.shape.len() >= 2 {
                keep[*b] = true;
            }
        }
    }
    keep
}

/// Checks a computed value against its IR type where the dims evaluate.
fn check_type<E: Elem, D: Backend<E>>(g: &Graph, vid: usize, v: &Val<D, E>, env: &DimEnv) -> R<()> {
    let ty = &g.values[vid].ty;
    let name = g.values[vid].name.as_deref().unwrap_or("a value");
    let dt_ok = match v {
        Val::F(_) => matches!(ty.dtype, tfm_ir::DType::F32 | tfm_ir::DType::F16 | tfm_ir::DType::Bf16),
        Val::I(_) => ty.dtype == tfm_ir::DType::I64,
        Val::B(_) => ty.dtype == tfm_ir::DType::Bool,
    };
    let shape = v.shape();
    let shape_ok = shape.len() == ty.shape.len()
        && ty.shape.iter().zip(shape).all(|(d, &n)| d.eval(env).map(|e| e as usize == n).unwrap_or(true));
    if dt_ok && shape_ok {
        Ok(())
    } else {
        Err(run_err(format!(
            "`{name}`: expected {ty}, computed a {} tensor of shape {shape:?}; hint: a sequence may be longer than the model allows",
            v.dtype().name()
        )))
    }
}

fn weight<E: Elem, D: Backend<E>>(g: &Graph, inst: &Inst, store: &ParamStore<D, E>, path: &[usize], param: ParamId) -> R<FT<D, E>> {
    let (mut g, mut inst) = (g, inst);
    for &c in path {
        let child = g.children.get(c).ok_or_else(|| run_err("internal: weight path names a missing child"))?;
        g = &child.graph;
        inst = inst.children[c].first().ok_or_else(|| run_err("internal: a repeat has no copies"))?;
    }
    let def = g.params.get(param).ok_or_else(|| run_err("internal: weight names a missing parameter"))?;
    let gi = inst.params[param];
    let p = &store.params[gi];
    let shape: Vec<usize> = def.shape.iter().map(|&d| d as usize).collect();
    if p.value.shape().0 != shape.iter().product::<usize>() {
        return Err(run_err(format!(
            "weight `{}`: expected {} values, the store holds {}",
            p.name,
            shape.iter().product::<usize>(),
            p.value.shape().0
        )));
    }
    Ok(FT { t: p.value.clone(), shape, uid: param_uid(gi), host: None, dev: None })
}

#[allow(clippy::too_many_arguments)]
fn apply<E: Elem, D: Backend<E>, T: Tape<E, D>>(
    rt: &Runtime<D>,
    cx: &mut Ctx<D, T, E>,
    store: &ParamStore<D, E>,
    g: &Graph,
    inst: &Inst,
    c: usize,
    ins: Vec<Val<D, E>>,
    env: &DimEnv,
) -> R<Vec<Val<D, E>>> {
    let child = &g.children[c];
    let insts = &inst.children[c];
    let outputs = |vals: Vals<D, E>| -> R<Vec<Val<D, E>>> {
        child
            .graph
            .outputs
            .iter()
            .map(|&o| vals[o].clone().ok_or_else(|| run_err("internal: a block output was not computed")))
            .collect()
    };
    match child.kind {
        ChildKind::Block => {
            let vals = run_graph(rt, cx, store, &child.graph, &insts[0], ins, env)?;
            outputs(vals)
        }
        ChildKind::Repeat { count, shared } => {
            let mut ins = ins;
            for i in 0..count as usize {
                let it = if shared { &insts[0] } else { &insts[i] };
                let vals = run_graph(rt, cx, store, &child.graph, it, ins.clone(), env)?;
                let mut outs = outputs(vals)?;
                if outs.is_empty() {
                    return Err(run_err("internal: a repeated block has no output"));
                }
                ins[0] = outs.swap_remove(0);
            }
            Ok(vec![ins.swap_remove(0)])
        }
    }
}

/// The weights a primitive reads.
struct Ps<'a, D: Backend<E>, E: Elem> {
    g: &'a Graph,
    inst: &'a Inst,
    store: &'a ParamStore<D, E>,
    ids: &'a [ParamId],
}

impl<E: Elem, D: Backend<E>> Ps<'_, D, E> {
    fn at(&self, i: usize) -> R<FT<D, E>> {
        let pid = *self.ids.get(i).ok_or_else(|| run_err("internal: a layer is missing a weight"))?;
        weight(self.g, self.inst, self.store, &[], pid)
    }
    /// The weight whose name ends with `.{suffix}` (or is `suffix`).
    fn named(&self, suffix: &str) -> R<Option<FT<D, E>>> {
        let dotted = format!(".{suffix}");
        for &pid in self.ids {
            let n = &self.g.params[pid].name;
            if n == suffix || n.ends_with(&dotted) {
                return weight(self.g, self.inst, self.store, &[], pid).map(Some);
            }
        }
        Ok(None)
    }
}

fn f<'a, E: Elem, D: Backend<E>>(ins: &'a [Val<D, E>], i: usize, what: &str) -> R<&'a FT<D, E>> {
    ins.get(i).ok_or_else(|| run_err(format!("internal: {what} is missing an input")))?.f(what)
}

fn prim_op<E: Elem, D: Backend<E>, T: Tape<E, D>>(
    cx: &mut Ctx<D, T, E>,
    ps: &Ps<D, E>,
    prim: &Prim,
    ins: &[Val<D, E>],
    node: &Node,
    env: &DimEnv,
) -> R<Vec<Val<D, E>>> {
    let _ = node;
    let one = |x: FT<D, E>| Ok(vec![Val::F(x)]);
    match prim {
        Prim::Embedding => {
            let ids = ins.first().ok_or_else(|| run_err("embedding: missing ids"))?.i("embedding ids")?;
            let w = ps.at(0)?;
            one(D::embedding(cx, &w, ids)?)
        }
        Prim::Sinusoidal => {
            let ids = ins.first().ok_or_else(|| run_err("sinusoidal: missing positions"))?.i("positions")?;
            let w = ps.at(0)?;
            one(D::embedding(cx, &w, ids)?)
        }
        Prim::Linear { bias } => {
            let x = f(ins, 0, "linear")?;
            let w = ps.at(0)?;
            let b = if *bias { Some(ps.at(1)?) } else { None };
            one(linear(cx, x, &w, b.as_ref())?)
        }
        Prim::LayerNorm { eps, bias } => {
            let x = f(ins, 0, "layer_norm")?;
            let w = ps.at(0)?;
            let b = if *bias { Some(ps.at(1)?) } else { None };
            one(D::layer_norm(cx, x, &w, b.as_ref(), *eps as f32)?)
        }
        Prim::RmsNorm { eps } => {
            let x = f(ins, 0, "rms_norm")?;
            let w = ps.at(0)?;
            one(D::rms_norm(cx, x, &w, *eps as f32)?)
        }
        Prim::Attention(c) => one(attention(cx, ps, c, ins)?),
        Prim::Mlp { act, bias } => one(mlp(cx, ps, *act, *bias, f(ins, 0, "mlp")?)?),
        Prim::PatchEmbed { patch, bias } => {
            let x = f(ins, 0, "patch_embed")?;
            if x.shape.len() != 4 {
                return Err(run_err(format!("patch_embed: expected f32[B, C, H, W], found shape {:?}", x.shape)));
            }
            let (b, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
            let p = *patch as usize;
            let (idx, np) = layout::patches(b, c, h, w, p);
            let cols = D::gather(cx, x, idx, vec![b, np, c * p * p])?;
            let wt = ps.at(0)?;
            let wt = wt.reshaped(vec![wt.shape[0], c * p * p]);
            let bb = if *bias { Some(ps.at(1)?) } else { None };
            one(D::linear(cx, &cols, &wt, bb.as_ref())?)
        }
        Prim::Conv1d { stride, padding, bias } => {
            let x = f(ins, 0, "conv1d")?;
            if x.shape.len() != 3 {
                return Err(run_err(format!("conv1d: expected f32[B, C, L], found shape {:?}", x.shape)));
            }
            let (b, c, l) = (x.shape[0], x.shape[1], x.shape[2]);
            let wt = ps.at(0)?;
            let (out, k) = (wt.shape[0], wt.shape.get(2).copied().unwrap_or(1));
            let (idx, lout) = layout::unfold1d(b, c, l, k, (*stride as usize).max(1), *padding as usize, x.numel());
            let cols = cx.gather_fill(x, idx, vec![b, lout, c * k], 0.0)?;
            let wt = wt.reshaped(vec![out, c * k]);
            let bb = if *bias { Some(ps.at(1)?) } else { None };
            let y = D::linear(cx, &cols, &wt, bb.as_ref())?;
            let (idx, shape) = layout::permute(&[b, lout, out], &[0, 2, 1]);
            one(D::gather(cx, &y, idx, shape)?)
        }
        Prim::RelativeBias { buckets, max_distance, bidirectional, q_len, k_len } => {
            let t = eval(q_len, env, "relative_bias")?;
            let s = eval(k_len, env, "relative_bias")?;
            let w = ps.at(0)?;
            let heads = w.shape.get(1).copied().unwrap_or(1);
            let mut idx = Vec::with_capacity(heads * t * s);
            for h in 0..heads {
                for i in 0..t {
                    for j in 0..s {
                        let bk = layout::t5_bucket(j as i64 - i as i64, *bidirectional, *buckets, *max_distance);
                        idx.push(bk.min(w.shape[0].saturating_sub(1)) * heads + h);
                    }
                }
            }
            one(D::gather(cx, &w, idx, vec![heads, t, s])?)
        }
        Prim::Add | Prim::Sub | Prim::Mul | Prim::Div => {
            let (a, b) = (f(ins, 0, "an arithmetic op")?, f(ins, 1, "an arithmetic op")?);
            let shape = layout::broadcast_shapes(&a.shape, &b.shape).ok_or_else(|| {
                run_err(format!("expected shapes that broadcast, found {:?} and {:?}", a.shape, b.shape))
            })?;
            let a = expand_to(cx, a, &shape)?;
            let b = expand_to(cx, b, &shape)?;
            one(match prim {
                Prim::Add => D::add(cx, &a, &b)?,
                Prim::Sub => cx.zip(&a, &b, |a, b| a - b),
                Prim::Mul => cx.zip(&a, &b, |a, b| a * b),
                _ => cx.zip(&a, &b, |a, b| a / b),
            })
        }
        Prim::Neg => one(cx.map(f(ins, 0, "neg")?, |t| t.negate())),
        Prim::Scale(c) => {
            let c = e::<E>(*c as f32);
            one(cx.map(f(ins, 0, "scale")?, |t| t * c))
        }
        Prim::Act(a) => one(D::act(cx, f(ins, 0, "an activation")?, *a)?),
        Prim::Tanh => one(cx.map(f(ins, 0, "tanh")?, |t| t.tanh())),
        Prim::Sigmoid => one(cx.map(f(ins, 0, "sigmoid")?, |t| t.sigmoid())),
        Prim::Exp => one(cx.map(f(ins, 0, "exp")?, |t| t.exp())),
        Prim::Sqrt => one(cx.map(f(ins, 0, "sqrt")?, |t| t.sqrt())),
        Prim::MatMul => one(D::matmul(cx, f(ins, 0, "matmul")?, f(ins, 1, "matmul")?)?),
        Prim::Softmax { axis } => {
            let x = f(ins, 0, "softmax")?;
            one(generic::over_axis(cx, x, *axis, |t| t.softmax::<Axis<1>>())?)
        }
        Prim::LogSoftmax { axis } => {
            let x = f(ins, 0, "log_softmax")?;
            one(generic::over_axis(cx, x, *axis, |t| t.log_softmax::<Axis<1>>())?)
        }
        Prim::Dropout { p } => {
            let x = f(ins, 0, "dropout")?;
            if cx.train && *p > 0.0 {
                one(D::dropout(cx, x, *p as f32)?)
            } else {
                one(x.clone())
            }
        }
        Prim::Arange { n } => {
            let n = eval(n, env, "arange")?;
            Ok(vec![Val::I(IT { shape: vec![n], data: Arc::new((0..n as i64).collect()) })])
        }
        Prim::Reshape { shape } => {
            let x = ins.first().ok_or_else(|| run_err("reshape: missing input"))?;
            let shape: Vec<usize> = shape.iter().map(|d| eval(d, env, "reshape")).collect::<R<_>>()?;
            let n: usize = x.shape().iter().product();
            if shape.iter().product::<usize>() != n {
                return Err(run_err(format!("reshape: cannot view {:?} ({n} elements) as {shape:?}", x.shape())));
            }
            Ok(vec![match x {
                Val::F(x) => Val::F(x.reshaped(shape)),
                Val::I(x) => Val::I(IT { shape, data: x.data.clone() }),
                Val::B(x) => Val::B(BT { shape, data: x.data.clone() }),
            }])
        }
        Prim::Permute { axes } => {
            let x = ins.first().ok_or_else(|| run_err("permute: missing input"))?;
            if axes.len() != x.shape().len() {
                return Err(run_err(format!("permute: expected {} axes, found {}", x.shape().len(), axes.len())));
            }
            let (idx, shape) = layout::permute(x.shape(), axes);
            Ok(vec![regather(cx, x, idx, shape)?])
        }
        Prim::Concat { axis } => Ok(vec![concat(cx, ins, *axis)?]),
        Prim::Split { axis, sizes } => {
            let x = ins.first().ok_or_else(|| run_err("split: missing input"))?;
            let mut start = 0;
            let mut outs = vec![];
            for s in sizes {
                let n = eval(s, env, "split")?;
                if start + n > x.shape()[*axis] {
                    return Err(run_err(format!("split: sizes exceed dim {axis} of {:?}", x.shape())));
                }
                let (idx, shape) = layout::slice(x.shape(), *axis, start, start + n);
                outs.push(regather(cx, x, idx, shape)?);
                start += n;
            }
            Ok(outs)
        }
        Prim::Slice { axis, start, end } => {
            let x = ins.first().ok_or_else(|| run_err("slice: missing input"))?;
            let (s, e) = (eval(start, env, "slice")?, eval(end, env, "slice")?);
            let n = x.shape().get(*axis).copied().unwrap_or(0);
            if s > e || e > n {
                return Err(run_err(format!(
                    "slice: expected {s}..{e} within 0..{n} on dim {axis}; hint: the sequence may be longer than the model's context"
                )));
            }
            let (idx, shape) = layout::slice(x.shape(), *axis, s, e);
            Ok(vec![regather(cx, x, idx, shape)?])
        }
        Prim::Expand { shape } => {
            let x = ins.first().ok_or_else(|| run_err("expand: missing input"))?;
            let to: Vec<usize> = shape.iter().map(|d| eval(d, env, "expand")).collect::<R<_>>()?;
            if layout::broadcast_shapes(x.shape(), &to).as_deref() != Some(&to[..]) {
                return Err(run_err(format!("expand: cannot expand {:?} to {to:?}", x.shape())));
            }
            let idx = layout::broadcast(x.shape(), &to);
            Ok(vec![regather(cx, x, idx, to)?])
        }
        Prim::First => {
            let x = f(ins, 0, "first")?;
            if x.shape.len() != 3 {
                return Err(run_err(format!("first: expected f32[B, T, D], found shape {:?}", x.shape)));
            }
            let (idx, _) = layout::slice(&x.shape, 1, 0, 1);
            one(D::gather(cx, x, idx, vec![x.shape[0], x.shape[2]])?)
        }
        Prim::Mean { axis } | Prim::Sum { axis } => {
            let x = f(ins, 0, "a reduction")?;
            let s = generic::sum_axis(cx, x, *axis)?;
            if matches!(prim, Prim::Mean { .. }) {
                let c = e::<E>(1.0 / x.shape[*axis].max(1) as f32);
                one(cx.map(&s, |t| t * c))
            } else {
                one(s)
            }
        }
        Prim::Normalize => {
            let x = f(ins, 0, "normalize")?;
            let (r, n) = (x.rows(), x.last());
            let inv = (cx.tr(x).reshape_like(&(r, n)).square().sum::<(usize,), Axis<1>>() + e::<E>(E::TINY)).sqrt().recip();
            let inv = cx.keep(inv, vec![r]);
            let x2 = cx.distinct(&inv, x);
            let y = cx.tr(&inv).broadcast_like::<(usize, usize), Axis<1>>(&(r, n)) * x2.t.clone().reshape_like(&(r, n));
            one(cx.keep(y, x.shape.clone()))
        }
        Prim::Alibi { heads, len } => {
            let t = eval(len, env, "alibi")?;
            let h = *heads as usize;
            let slopes = layout::alibi_slopes(h);
            let mut data = Vec::with_capacity(h * t * t);
            for s in &slopes {
                for i in 0..t {
                    for j in 0..t {
                        data.push(-s * (i as f32 - j as f32).abs());
                    }
                }
            }
            one(cx.constant(data, vec![h, t, t])?)
        }
        Prim::PadMask { pad_id } => {
            let x = ins.first().ok_or_else(|| run_err("pad_mask: missing input"))?.i("pad_mask")?;
            let data = x.data.iter().map(|&v| v != *pad_id).collect();
            Ok(vec![Val::B(BT { shape: x.shape.clone(), data: Arc::new(data) })])
        }
    }
}

/// Applies a layout gather to any dtype (host gather for integer and bool tensors).
fn regather<E: Elem, D: Backend<E>, T: Tape<E, D>>(cx: &mut Ctx<D, T, E>, x: &Val<D, E>, idx: Vec<usize>, shape: Vec<usize>) -> R<Val<D, E>> {
    Ok(match x {
        Val::F(x) => Val::F(D::gather(cx, x, idx, shape)?),
        Val::I(x) => Val::I(IT { shape, data: Arc::new(idx.iter().map(|&i| x.data[i]).collect()) }),
        Val::B(x) => Val::B(BT { shape, data: Arc::new(idx.iter().map(|&i| x.data[i]).collect()) }),
    })
}

fn expand_to<E: Elem, D: Backend<E>, T: Tape<E, D>>(cx: &mut Ctx<D, T, E>, x: &FT<D, E>, shape: &[usize]) -> R<FT<D, E>> {
    if x.shape == shape {
        return Ok(x.clone());
    }
    if x.numel() == shape.iter().product::<usize>() {
        return Ok(x.reshaped(shape.to_vec()));
    }
    D::broadcast(cx, x, shape)
}

fn concat<E: Elem, D: Backend<E>, T: Tape<E, D>>(cx: &mut Ctx<D, T, E>, ins: &[Val<D, E>], axis: usize) -> R<Val<D, E>> {
    let first = ins.first().ok_or_else(|| run_err("concat: expected at least one tensor"))?;
    let shapes: Vec<Vec<usize>> = ins.iter().map(|v| v.shape().to_vec()).collect();
    for s in &shapes {
        let same = s.len() == shapes[0].len() && s.iter().zip(&shapes[0]).enumerate().all(|(i, (a, b))| i == axis || a == b);
        if !same {
            return Err(run_err(format!("concat: expected shapes equal except on dim {axis}, found {shapes:?}")));
        }
    }
    let (idx, shape) = layout::concat(&shapes, axis);
    match first {
        Val::F(_) => {
            let mut acc: Option<FT<D, E>> = None;
            for v in ins {
                let x = v.f("concat")?;
                acc = Some(match acc {
                    None => x.clone(),
                    Some(a) => {
                        let x = cx.distinct(&a, x);
                        let n = a.numel() + x.numel();
                        let y = (cx.tr(&a), x.t.clone()).try_concat_along(Axis::<0>).map_err(dev_err)?;
                        cx.keep(y, vec![n])
                    }
                });
            }
            let flat = acc.ok_or_else(|| run_err("concat: no tensors"))?;
            Ok(Val::F(D::gather(cx, &flat.reshaped(vec![flat.numel()]), idx, shape)?))
        }
        Val::I(_) => {
            let mut all = vec![];
            for v in ins {
                all.extend(v.i("concat")?.data.iter().copied());
            }
            Ok(Val::I(IT { shape, data: Arc::new(idx.iter().map(|&i| all[i]).collect()) }))
        }
        Val::B(_) => {
            let mut all = vec![];
            for v in ins {
                all.extend(v.b("concat")?.data.iter().copied());
            }
            Ok(Val::B(BT { shape, data: Arc::new(idx.iter().map(|&i| all[i]).collect()) }))
        }
    }
}

fn linear<E: Elem, D: Backend<E>, T: Tape<E, D>>(cx: &mut Ctx<D, T, E>, x: &FT<D, E>, w: &FT<D, E>, b: Option<&FT<D, E>>) -> R<FT<D, E>> {
    let inn = w.numel() / w.shape[0].max(1);
    if x.last() != inn {
        return Err(run_err(format!("linear: expected inputs with last dim {inn}, found shape {:?}", x.shape)));
    }
    D::linear(cx, x, w, b)
}

fn mlp<E: Elem, D: Backend<E>, T: Tape<E, D>>(cx: &mut Ctx<D, T, E>, ps: &Ps<D, E>, act: Activation, bias: bool, x: &FT<D, E>) -> R<FT<D, E>> {
    let gated = matches!(act, Activation::Swiglu | Activation::Geglu);
    // by name (`up.weight`, `gate.weight`, `down.weight`), else in the documented order
    let get = |name: &str, pos: usize| -> R<FT<D, E>> {
        match ps.named(name)? {
            Some(w) => Ok(w),
            None => ps.at(pos),
        }
    };
    let stride = if bias { 2 } else { 1 };
    let (gate_i, up_i, down_i) = if gated { (0, stride, 2 * stride) } else { (usize::MAX, 0, stride) };
    let up_w = get("up.weight", up_i)?;
    let up_b = if bias { Some(get("up.bias", up_i + 1)?) } else { None };
    let down_w = get("down.weight", down_i)?;
    let down_b = if bias { Some(get("down.bias", down_i + 1)?) } else { None };
    let up = linear(cx, x, &up_w, up_b.as_ref())?;
    let h = if gated {
        let gate_w = get("gate.weight", gate_i)?;
        let gate_b = if bias { Some(get("gate.bias", gate_i + 1)?) } else { None };
        let gate = linear(cx, x, &gate_w, gate_b.as_ref())?;
        let inner = if act == Activation::Swiglu { Activation::Silu } else { Activation::Gelu };
        let a = D::act(cx, &gate, inner)?;
        cx.zip(&a, &up, |a, u| a * u)
    } else {
        D::act(cx, &up, act)?
    };
    linear(cx, &h, &down_w, down_b.as_ref())
}

fn attention<E: Elem, D: Backend<E>, T: Tape<E, D>>(cx: &mut Ctx<D, T, E>, ps: &Ps<D, E>, c: &AttentionCfg, ins: &[Val<D, E>]) -> R<FT<D, E>> {
    let x = f(ins, 0, "attention")?;
    let mut i = 1;
    let mem = if c.cross {
        i += 1;
        f(ins, 1, "attention memory")?
    } else {
        x
    };
    let mask = if c.has_mask {
        i += 1;
        Some(ins.get(i - 1).ok_or_else(|| run_err("attention: missing mask"))?.b("attention mask")?)
    } else {
        None
    };
    let bias = if c.has_bias { Some(f(ins, i, "attention bias")?) } else { None };
    if x.shape.len() != 3 || mem.shape.len() != 3 {
        return Err(run_err(format!("attention: expected f32[B, T, D] inputs, found {:?}", x.shape)));
    }
    let (b, t, s) = (x.shape[0], x.shape[1], mem.shape[1]);
    let (h, kv, hd) = (c.heads as usize, c.kv_heads.max(1) as usize, c.head_dim as usize);
    if h % kv != 0 {
        return Err(run_err(format!("attention: expected kv_heads to divide heads, found {kv} and {h}")));
    }
    if let Some(m) = mask {
        if m.shape != [b, s] {
            return Err(run_err(format!("attention: expected a mask of shape [{b}, {s}], found {:?}", m.shape)));
        }
    }
    if let Some(bb) = bias {
        if bb.numel() != h * t * s {
            return Err(run_err(format!("attention: expected a bias of shape [{h}, {t}, {s}], found {:?}", bb.shape)));
        }
    }
    // weights by name, else in the documented order: q, k, v, o weights (qkv, o when fused), then biases
    let nw = if c.fused_qkv { 2 } else { 4 };
    let get = |name: &str, pos: usize| -> R<FT<D, E>> {
        match ps.named(name)? {
            Some(w) => Ok(w),
            None => ps.at(pos),
        }
    };
    let (qw, kw, vw) = (h * hd, kv * hd, kv * hd);
    let (q_full, k_full, v_full, q_off, k_off, v_off);
    if c.fused_qkv {
        let w = get("qkv.weight", 0)?;
        let bq = if c.bias { Some(get("qkv.bias", nw)?) } else { None };
        let qkv = linear(cx, x, &w, bq.as_ref())?;
        q_full = qkv.clone();
        k_full = qkv.clone();
        v_full = qkv;
        (q_off, k_off, v_off) = (0, qw, qw + kw);
    } else {
        let names = ["q", "k", "v"];
        let mut outs = vec![];
        for (j, n) in names.iter().enumerate() {
            let w = get(&format!("{n}.weight"), j)?;
            let bb = if c.bias && (j != 1 || c.k_bias) { Some(get(&format!("{n}.bias"), nw + j - (j == 2 && !c.k_bias) as usize)?) } else { None };
            let src = if j == 0 { x } else { mem };
            outs.push(linear(cx, src, &w, bb.as_ref())?);
        }
        v_full = outs.pop().ok_or_else(|| run_err("internal"))?;
        k_full = outs.pop().ok_or_else(|| run_err("internal"))?;
        q_full = outs.pop().ok_or_else(|| run_err("internal"))?;
        (q_off, k_off, v_off) = (0, 0, 0);
    }
    let (qf, kf);
    let (q, k) = if c.rotary {
        let theta = c.rope_theta as f32;
        qf = D::rope(cx, Cols { x: &q_full, off: q_off, width: qw }, h, hd, theta)?;
        kf = D::rope(cx, Cols { x: &k_full, off: k_off, width: kw }, kv, hd, theta)?;
        (Cols::all(&qf), Cols::all(&kf))
    } else {
        (Cols { x: &q_full, off: q_off, width: qw }, Cols { x: &k_full, off: k_off, width: kw })
    };
    let v = Cols { x: &v_full, off: v_off, width: vw };
    let cfg = CoreCfg {
        b,
        t,
        s,
        heads: h,
        kv_heads: kv,
        hd,
        causal: c.causal,
        window: c.window as usize,
        scale: if c.scale { 1.0 / (hd as f32).sqrt() } else { 1.0 },
        dropout: if cx.train { c.dropout as f32 } else { 0.0 },
    };
    let core = D::attention_core(cx, q, k, v, cfg, mask, bias)?;
    let ow = get("o.weight", nw - 1)?;
    let nb = if c.fused_qkv { 1 } else { 2 + c.k_bias as usize };
    let ob = if c.out_bias { Some(get("o.bias", nw + if c.bias { nb } else { 0 })?) } else { None };
    linear(cx, &core, &ow, ob.as_ref())
}
