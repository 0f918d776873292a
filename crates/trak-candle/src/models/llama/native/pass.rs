//! One sequence's forward pass and its backward pass to the activations: every attributed
//! linear's inputs and output gradients written into the sequence's rows of the batch's
//! factors. No weight gradient is computed (the factored projector needs none), nothing is
//! padded (the sequence runs at its own length), and every GEMM is sequential, so a
//! sequence's factors are the same bits whatever its batch or the thread count.

use super::attention::{self, Heads, Qkv};
use super::exp::sigmoid;
use super::head;
use super::ops::{
    Rotary, linear, linear_back, rms_norm, rms_norm_back, rms_norm_scale_grad, rope, silu_product,
    silu_product_back,
};
use super::weights::{BlockWeights, Weights};
use crate::TokenSeq;

/// The sizes the pass needs.
#[derive(Debug, Clone, Copy)]
pub(super) struct Dims {
    pub d: usize,
    pub inter: usize,
    pub vocab: usize,
    pub heads: Heads,
    pub eps: f32,
}

impl Dims {
    fn qd(&self) -> usize {
        self.heads.n * self.heads.hd
    }

    fn kvd(&self) -> usize {
        self.heads.kv * self.heads.hd
    }
}

/// One attributed layer's rows for this sequence: inputs (`in_dim` wide, a trailing 1 for a
/// bias) and output gradients, at least `t` rows each (the rest stays as it is: zeros).
pub(super) struct Slot<'a> {
    pub acts: &'a mut [f32],
    pub deltas: &'a mut [f32],
    pub in_dim: usize,
}

/// Per block, the slot of each of its seven linears, if attributed.
pub(super) type Selection = [Option<usize>; 7];

/// The gradients of the norm scales for one sequence (training): per block the input and
/// post-attention norms', and the final norm's.
#[derive(Debug, Clone)]
pub(super) struct NormGrads {
    pub blocks: Vec<[Vec<f32>; 2]>,
    pub last: Vec<f32>,
}

impl NormGrads {
    /// Zeros for `blocks` blocks of width `d`.
    pub fn zeros(blocks: usize, d: usize) -> Self {
        Self {
            blocks: vec![[vec![0.0; d], vec![0.0; d]]; blocks],
            last: vec![0.0; d],
        }
    }
}

/// The slots of one block: `sel[i]` indexes `slots`; with `norms`, its norms' scale
/// gradients (training).
struct Out<'s, 'a> {
    sel: Selection,
    slots: &'s mut [Slot<'a>],
    norms: Option<&'s mut [Vec<f32>; 2]>,
}

impl Out<'_, '_> {
    /// `src` (rows of `width`) as linear `i`'s inputs, with the bias's 1 when it has one.
    fn acts(&mut self, i: usize, src: &[f32], width: usize) {
        let Some(s) = self.sel[i] else { return };
        let slot = &mut self.slots[s];
        let stride = slot.in_dim;
        for (dst, row) in slot.acts.chunks_mut(stride).zip(src.chunks(width)) {
            dst[..width].copy_from_slice(row);
            if stride > width {
                dst[width] = 1.0;
            }
        }
    }

    /// Norm `i`'s (0 input, 1 post-attention) scale gradient from its output's gradient.
    fn norm(&mut self, i: usize, da: &[f32], (x, inv): (&[f32], &[f32])) {
        if let Some(n) = self.norms.as_deref_mut() {
            rms_norm_scale_grad(&mut n[i], da, x, inv);
        }
    }

    /// `src` as linear `i`'s output gradients.
    fn deltas(&mut self, i: usize, src: &[f32]) {
        if let Some(s) = self.sel[i] {
            self.slots[s].deltas[..src.len()].copy_from_slice(src);
        }
    }
}

/// What a block's backward pass needs from its forward pass.
struct Saved {
    x: Vec<f32>,
    r1: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    xm: Vec<f32>,
    r2: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
}

/// Buffers reused by every block: `a` (a norm's output, then its input gradient), `y` (the
/// attention output, then its gradient), `o` (a linear's output), `m` (the MLP's product,
/// then its gradient), `sig` (σ of the MLP's gate) and the q/k/v gradients.
struct Scratch {
    a: Vec<f32>,
    y: Vec<f32>,
    o: Vec<f32>,
    m: Vec<f32>,
    sig: Vec<f32>,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
}

impl Scratch {
    fn new(dims: &Dims, t: usize) -> Self {
        let z = |n: usize| vec![0.0f32; t * n];
        Self {
            a: z(dims.d),
            y: z(dims.qd()),
            o: z(dims.d),
            m: z(dims.inter),
            sig: z(dims.inter),
            dq: z(dims.qd()),
            dk: z(dims.kvd()),
            dv: z(dims.kvd()),
        }
    }
}

/// Block `bw`'s forward pass on the residual stream `h` (`t × d`, updated in place).
fn block_forward(
    h: &mut [f32],
    (bw, dims, rot): (&BlockWeights<'_>, &Dims, Rotary<'_>),
    sc: &mut Scratch,
    out: &mut Out<'_, '_>,
) -> Saved {
    let (d, qd, kvd, t) = (dims.d, dims.qd(), dims.kvd(), h.len() / dims.d);
    let lin = |i: usize| (bw.lin[i].w, bw.lin[i].b);
    let x = h.to_vec();
    let mut r1 = vec![0.0; t];
    rms_norm(&mut sc.a, &mut r1, &x, bw.input_norm, dims.eps);
    let (mut q, mut k, mut v) = (vec![0.0; t * qd], vec![0.0; t * kvd], vec![0.0; t * kvd]);
    linear(&mut q, &sc.a, lin(0), t);
    linear(&mut k, &sc.a, lin(1), t);
    linear(&mut v, &sc.a, lin(2), t);
    (0..3).for_each(|i| out.acts(i, &sc.a, d));
    rope(&mut q, qd, rot, false);
    rope(&mut k, kvd, rot, false);
    attention::forward(
        &mut sc.y,
        Qkv {
            q: &q,
            k: &k,
            v: &v,
        },
        dims.heads,
    );
    out.acts(3, &sc.y, qd);
    linear(&mut sc.o, &sc.y, lin(3), t);
    h.iter_mut().zip(&sc.o).for_each(|(h, o)| *h += o);
    let xm = h.to_vec();
    let mut r2 = vec![0.0; t];
    rms_norm(&mut sc.a, &mut r2, &xm, bw.post_norm, dims.eps);
    let (mut gate, mut up) = (vec![0.0; t * dims.inter], vec![0.0; t * dims.inter]);
    linear(&mut gate, &sc.a, lin(4), t);
    linear(&mut up, &sc.a, lin(5), t);
    (4..6).for_each(|i| out.acts(i, &sc.a, d));
    sigmoid(&mut sc.sig, &gate);
    silu_product(&mut sc.m, &sc.sig, (&gate, &up));
    out.acts(6, &sc.m, dims.inter);
    linear(&mut sc.o, &sc.m, lin(6), t);
    h.iter_mut().zip(&sc.o).for_each(|(h, o)| *h += o);
    Saved {
        x,
        r1,
        q,
        k,
        v,
        xm,
        r2,
        gate,
        up,
    }
}

/// Block `bw`'s backward pass: `dh` (the residual stream's gradient at the block's output)
/// becomes the gradient at its input; each attributed linear's output gradient is recorded.
fn block_backward(
    dh: &mut [f32],
    mut s: Saved,
    (bw, dims, rot): (&BlockWeights<'_>, &Dims, Rotary<'_>),
    sc: &mut Scratch,
    out: &mut Out<'_, '_>,
) {
    let (qd, kvd, t) = (dims.qd(), dims.kvd(), dh.len() / dims.d);
    let w = |i: usize| bw.lin[i].w;
    out.deltas(6, dh);
    linear_back(&mut sc.m, dh, w(6), t, false);
    sigmoid(&mut sc.sig, &s.gate);
    silu_product_back(&sc.m, &sc.sig, (&mut s.gate, &mut s.up));
    out.deltas(4, &s.gate);
    out.deltas(5, &s.up);
    linear_back(&mut sc.a, &s.gate, w(4), t, false);
    linear_back(&mut sc.a, &s.up, w(5), t, true);
    out.norm(1, &sc.a, (&s.xm, &s.r2));
    rms_norm_back(dh, &sc.a, &s.xm, &s.r2, bw.post_norm);
    out.deltas(3, dh);
    linear_back(&mut sc.y, dh, w(3), t, false);
    let x = Qkv {
        q: &s.q,
        k: &s.k,
        v: &s.v,
    };
    let grads = (&mut sc.dq[..], &mut sc.dk[..], &mut sc.dv[..]);
    attention::backward(grads, &sc.y, x, (dims.heads, t));
    rope(&mut sc.dq, qd, rot, true);
    rope(&mut sc.dk, kvd, rot, true);
    out.deltas(0, &sc.dq);
    out.deltas(1, &sc.dk);
    out.deltas(2, &sc.dv);
    linear_back(&mut sc.a, &sc.dq, w(0), t, false);
    linear_back(&mut sc.a, &sc.dk, w(1), t, true);
    linear_back(&mut sc.a, &sc.dv, w(2), t, true);
    out.norm(0, &sc.a, (&s.x, &s.r1));
    rms_norm_back(dh, &sc.a, &s.x, &s.r1, bw.input_norm);
}

/// The pass over `seq` (checked by the caller: its tokens in the vocabulary, its length
/// within the model's context): every attributed linear's factors into `slots` (`sel`, per
/// block, says which), and with `norms` the norm scales' gradients. Returns f (the
/// sequence's log-probability), or why the sequence has nothing to predict.
pub(super) fn run(
    w: &Weights<'_>,
    dims: &Dims,
    seq: &TokenSeq,
    (sel, slots, mut norms): (&[Selection], &mut [Slot<'_>], Option<&mut NormGrads>),
) -> Result<f64, String> {
    let t = seq.tokens.len().saturating_sub(1);
    let (next, counted) = seq.next_tokens(t)?;
    let d = dims.d;
    let mut h = vec![0.0f32; t * d];
    for (row, &tok) in h.chunks_mut(d).zip(&seq.tokens) {
        let tok = tok as usize;
        row.copy_from_slice(&w.embed[tok * d..(tok + 1) * d]);
    }
    let half = dims.heads.hd / 2;
    let rot = Rotary {
        cos: &w.cos[..t * half],
        sin: &w.sin[..t * half],
        half,
    };
    let mut sc = Scratch::new(dims, t);
    let mut saved = Vec::with_capacity(w.blocks.len());
    for (bw, &sel) in w.blocks.iter().zip(sel) {
        let mut out = Out {
            sel,
            slots,
            norms: None,
        };
        saved.push(block_forward(&mut h, (bw, dims, rot), &mut sc, &mut out));
    }
    let (mut hf, mut rf) = (vec![0.0; t * d], vec![0.0; t]);
    rms_norm(&mut hf, &mut rf, &h, w.final_norm, dims.eps);
    let mut dhf = vec![0.0; t * d];
    let f = head::backward(&mut dhf, &hf, (w.head, dims.vocab), (&next, &counted));
    drop(hf);
    let mut dh = vec![0.0; t * d];
    if let Some(n) = norms.as_deref_mut() {
        rms_norm_scale_grad(&mut n.last, &dhf, &h, &rf);
    }
    rms_norm_back(&mut dh, &dhf, &h, &rf, w.final_norm);
    let mut block_norms: Vec<Option<&mut [Vec<f32>; 2]>> = match norms {
        Some(n) => n.blocks.iter_mut().map(Some).collect(),
        None => w.blocks.iter().map(|_| None).collect(),
    };
    for ((bw, &sel), n) in w.blocks.iter().zip(sel).zip(block_norms.iter_mut()).rev() {
        let s = saved.pop().expect("one saved state per block");
        let mut out = Out {
            sel,
            slots,
            norms: n.take(),
        };
        block_backward(&mut dh, s, (bw, dims, rot), &mut sc, &mut out);
    }
    Ok(f)
}
