//! Fused CPU kernels with hand-written backward passes for the hot spots of
//! training, where candle's composed ops walk a tensor many times.
//!
//! Attention's weights over `[batch, heads, len, len]` are the largest
//! element-wise tensor of SASRec (128 × 200 × 200 per block at the paper's
//! settings). Composed from candle ops they cost an additive causal +
//! padding mask, then max, subtract, exp, sum and divide, then a dropout mask
//! drawn into its own tensor and a multiply — each a pass over the tensor,
//! each with its own backward pass. candle's fused `softmax_last_dim` has no
//! backward. Here:
//! - [`attention_weights`] applies the causal and key-padding masks while it
//!   normalizes each row (masked keys are skipped, not added −∞ to) and
//!   applies dropout in the same pass; its backward pass recomputes the row's
//!   softmax and computes the gradient in closed form,
//!   `∂x = s ⊙ (∂s − Σ ∂s ⊙ s)`, `∂s = ∂y ⊙ m`, in one more;
//! - dropout ([`dropout`], and inside [`attention_weights`]) multiplies by a
//!   mask it derives from a seed and each element's index (a counter-based
//!   SplitMix64 stream), so the mask is never stored: the backward pass
//!   derives it again.
//!
//! LayerNorm runs five times per forward pass on `[batch, len, hidden]`;
//! `candle_nn::ops::layer_norm_slow` composes it from eight ops, and the
//! fused `layer_norm` has no backward. [`layer_norm`] normalizes each row in
//! one pass and computes `∂x` and `∂γ` rows in one more, with the textbook
//! gradient `∂x = rstd · (∂x̂ − mean(∂x̂) − x̂ · mean(∂x̂ ⊙ x̂))`, `∂x̂ = ∂y ⊙ γ`.
//!
//! Bias and position adds ([`add_rows`]) and the timeline mask
//! ([`mask_rows`]) are small ops with costly gradients in candle: a
//! broadcast add's backward pass sums `∂y` over rows through candle's
//! generic strided reduction (a division per element), and a broadcast
//! multiply by a constant mask also computes, accumulates and reduces a
//! gradient for the mask. Here the sums run over contiguous rows and the
//! mask has no gradient.
//!
//! Other devices (CUDA) fall back to composed ops with the same results.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, D, Layout, Shape, Tensor};
use rayon::prelude::*;

use tailforge_core::rng::SplitMix64;

/// The contiguous f32 data behind a CPU tensor argument of a custom op.
fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else { candle_core::bail!("{what}: f32 only") };
    let Some((start, end)) = layout.contiguous_offsets() else { candle_core::bail!("{what}: must be contiguous") };
    Ok(&data[start..end])
}

/// Attention weights from `[batch, heads, len, len]` logits: each row's
/// softmax over the keys its query may see, then dropout. Query `i` of
/// sequence `b` sees key `j` iff `j ≤ i` and `key_visible[b, j]` (`[batch,
/// len]`, 1 = a real item); a query that sees no key (a padding slot) gets
/// all-zero weights. The softmax is not stored: the backward pass
/// recomputes it from the logits (one exp per visible key), which costs less
/// than keeping, and accumulating a gradient for, another tensor of this size.
#[derive(Clone)]
struct AttentionWeights {
    key_visible: Arc<Vec<u8>>,
    /// Logits are scaled by this before the softmax (1/√d of scaled dot-product attention).
    scale: f32,
    dropout: Option<Dropout>,
}

impl AttentionWeights {
    /// Calls `row_fn(row, softmax, dropout_factors, out)` for every row of the
    /// logits with a visible key; `softmax` and the factors cover the row's
    /// first `query + 1` keys (later keys get zero weight), `out` is the row
    /// of the output.
    fn for_each_row(
        &self,
        logits: &Layout,
        x: &[f32],
        out: &mut [f32],
        row_fn: impl Fn(usize, &[f32], &[f32], &mut [f32]) + Sync + Send,
    ) -> candle_core::Result<()> {
        let dims = logits.dims();
        let len = dims.last().copied().unwrap_or(0);
        let rows_per_sequence = dims.get(1).copied().unwrap_or(0) * len;
        let visible = &self.key_visible;
        if dims.len() != 4 || dims[2] != len || visible.len() * rows_per_sequence != x.len() {
            candle_core::bail!(
                "attention weights: logits {dims:?} do not fit a [batch, len] key mask of {}",
                visible.len()
            );
        }
        if x.is_empty() {
            return Ok(());
        }
        let scratch = || (vec![0f32; len], vec![1f32; len]);
        x.par_chunks(len).zip(out.par_chunks_mut(len)).enumerate().for_each_init(
            scratch,
            |(softmax, factors), (r, (x, out))| {
                let sequence = r / rows_per_sequence;
                let visible = &visible[sequence * len..(sequence + 1) * len];
                // Keys after the query (causal) are never looked at.
                let end = r % len + 1;
                let max = (0..end).filter(|&j| visible[j] != 0).map(|j| x[j]).fold(f32::NEG_INFINITY, f32::max);
                if max == f32::NEG_INFINITY {
                    return; // no visible key: zero weights, zero gradient
                }
                let scale = self.scale;
                let mut sum = 0f32;
                for j in 0..end {
                    softmax[j] = if visible[j] != 0 { (scale * (x[j] - max)).exp() } else { 0.0 };
                    sum += softmax[j];
                }
                let inv = 1.0 / sum;
                softmax[..end].iter_mut().for_each(|y| *y *= inv);
                if let Some(dropout) = &self.dropout {
                    dropout.factors(r * len, &mut factors[..end]);
                }
                row_fn(r, &softmax[..end], &factors[..end], out);
            },
        );
        Ok(())
    }
}

impl CustomOp1 for AttentionWeights {
    fn name(&self) -> &'static str {
        "tailforge-attention-weights"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(storage, layout, "attention weights")?;
        let mut y = vec![0f32; x.len()];
        self.for_each_row(layout, x, &mut y, |_, softmax, factors, y| {
            for ((y, s), m) in y.iter_mut().zip(softmax).zip(factors) {
                *y = s * m;
            }
        })?;
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad_res.contiguous()?, &AttentionWeightsGrad(self.clone()))?))
    }
}

/// The gradient of [`AttentionWeights`] for arguments (logits, ∂y): with
/// `s` the softmax, `m` the dropout factors and `c` the scale, `∂s = ∂y ⊙ m`
/// and `∂x = c · s ⊙ (∂s − Σ ∂s ⊙ s)`.
struct AttentionWeightsGrad(AttentionWeights);

impl CustomOp2 for AttentionWeightsGrad {
    fn name(&self) -> &'static str {
        "tailforge-attention-weights-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, dy) = (f32_slice(xs, xl, "attention weights grad")?, f32_slice(gs, gl, "attention weights grad")?);
        if dy.len() != x.len() {
            candle_core::bail!("attention weights grad: {} gradients for {} logits", dy.len(), x.len());
        }
        let len = xl.dims().last().copied().unwrap_or(1).max(1);
        let scale = self.0.scale;
        let mut dx = vec![0f32; x.len()];
        self.0.for_each_row(xl, x, &mut dx, |row, softmax, factors, dx| {
            let dy = &dy[row * len..row * len + softmax.len()];
            let dot: f32 = dy.iter().zip(factors).zip(softmax).map(|((g, m), s)| g * m * s).sum();
            for (((dx, g), m), s) in dx.iter_mut().zip(dy).zip(factors).zip(softmax) {
                *dx = scale * s * (g * m - dot);
            }
        })?;
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }
}

fn is_cpu_f32(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32
}

/// Attention weights from `[batch, heads, len, len]` logits, softmax of
/// `scale · logits` over the visible keys: causal (a query never sees a later
/// slot), blind to padding keys (`key_visible[b, j] == 0`), with dropout
/// `(p, seed)` in training; differentiable, fused on the CPU.
pub fn attention_weights(
    logits: &Tensor,
    key_visible: &Arc<Vec<u8>>,
    scale: f32,
    dropout: Option<(f32, u64)>,
) -> candle_core::Result<Tensor> {
    let dropout = dropout.filter(|&(p, _)| p > 0.0).map(|(p, seed)| Dropout { p, seed });
    if is_cpu_f32(logits) {
        let op = AttentionWeights { key_visible: key_visible.clone(), scale, dropout };
        return logits.contiguous()?.apply_op1(op);
    }
    // Elsewhere: an additive mask, large enough to zero a weight and finite
    // so that a padding query's row stays NaN-free (it is masked later).
    const MASKED: f32 = -1e9;
    let (b, _, l, _) = logits.dims4()?;
    let causal: Vec<f32> = (0..l * l).map(|k| if k % l > k / l { MASKED } else { 0.0 }).collect();
    let causal = Tensor::from_vec(causal, (1, 1, l, l), logits.device())?;
    let padding: Vec<f32> = key_visible.iter().map(|&v| if v == 0 { MASKED } else { 0.0 }).collect();
    let padding = Tensor::from_vec(padding, (b, 1, 1, l), logits.device())?;
    let scaled = (logits * scale as f64)?;
    let weights = candle_nn::ops::softmax(&scaled.broadcast_add(&causal.broadcast_add(&padding)?)?, D::Minus1)?;
    match dropout {
        Some(d) => weights * d.mask(logits)?,
        None => Ok(weights),
    }
}

/// Inverted dropout: elements are zeroed with probability `p` and the rest
/// scaled by `1 / (1 − p)`. Element `e` is decided by 16 bits of the
/// `e / 4`-th output of `SplitMix64::new(seed)`, so the mask depends on the
/// seed alone (not on threads) and the backward pass derives it again.
#[derive(Debug, Clone, Copy)]
struct Dropout {
    p: f32,
    seed: u64,
}

/// Elements per parallel chunk (a multiple of the 4 elements one draw decides).
const DROPOUT_CHUNK: usize = 1 << 14;

impl Dropout {
    /// The factors (0 or `1 / (1 − p)`) of elements `start..start + out.len()`.
    fn factors(&self, start: usize, out: &mut [f32]) {
        let threshold = (self.p as f64 * 65536.0) as u64;
        let keep = 1.0 / (1.0 - self.p);
        let mut e = 0;
        while e < out.len() {
            let (group, lane) = ((start + e) / 4, (start + e) % 4);
            let r = SplitMix64::output_at(self.seed, group as u64);
            let n = (4 - lane).min(out.len() - e);
            for k in 0..n {
                out[e + k] = if (r >> (16 * (lane + k))) & 0xffff < threshold { 0.0 } else { keep };
            }
            e += n;
        }
    }

    /// `f(x) ⊙ mask` for every element of `src` (numbered from 0), in parallel chunks.
    fn apply(&self, src: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
        let mut dst = vec![0f32; src.len()];
        dst.par_chunks_mut(DROPOUT_CHUNK).zip(src.par_chunks(DROPOUT_CHUNK)).enumerate().for_each(|(c, (y, x))| {
            self.factors(c * DROPOUT_CHUNK, y);
            y.iter_mut().zip(x).for_each(|(y, &x)| *y *= f(x));
        });
        dst
    }

    /// The mask as a tensor (for devices without the fused kernel).
    fn mask(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut mask = vec![0f32; x.elem_count()];
        self.factors(0, &mut mask);
        Tensor::from_vec(mask, x.shape(), x.device())
    }
}

impl CustomOp1 for Dropout {
    fn name(&self) -> &'static str {
        "tailforge-dropout"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let src = f32_slice(storage, layout, "dropout")?;
        Ok((CpuStorage::F32(self.apply(src, |x| x)), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        // Linear in x with the same mask: ∂x = ∂y ⊙ mask.
        Ok(Some(grad_res.contiguous()?.apply_op1_no_bwd(self)?))
    }
}

/// Inverted dropout with probability `p`, its mask derived from `seed`; differentiable.
pub fn dropout(x: &Tensor, p: f32, seed: u64) -> candle_core::Result<Tensor> {
    if p <= 0.0 {
        return Ok(x.clone());
    }
    let op = Dropout { p, seed };
    if is_cpu_f32(x) { x.contiguous()?.apply_op1(op) } else { x * op.mask(x)? }
}

/// `dropout(relu(x))` in one pass. Its gradient needs neither `x` nor the
/// mask: an output element is positive exactly where `x > 0` and the mask
/// kept it, and there `∂x = ∂y / (1 − p)`. (candle's relu alone costs its
/// backward pass a zeros tensor, a comparison, a conversion and a multiply.)
struct ReluDropout(Dropout);

impl CustomOp1 for ReluDropout {
    fn name(&self) -> &'static str {
        "tailforge-relu-dropout"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let src = f32_slice(storage, layout, "relu dropout")?;
        Ok((CpuStorage::F32(self.0.apply(src, |x| x.max(0.0))), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let keep = 1.0 / (1.0 - self.0.p);
        Ok(Some(res.contiguous()?.apply_op2_no_bwd(&grad_res.contiguous()?, &ScaleWherePositive(keep))?))
    }
}

/// For arguments (y, ∂y): `∂y · c` where `y > 0`, else 0.
struct ScaleWherePositive(f32);

impl CustomOp2 for ScaleWherePositive {
    fn name(&self) -> &'static str {
        "tailforge-scale-where-positive"
    }

    fn cpu_fwd(
        &self,
        ys: &CpuStorage,
        yl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (y, g) = (f32_slice(ys, yl, "relu dropout grad")?, f32_slice(gs, gl, "relu dropout grad")?);
        if y.len() != g.len() {
            candle_core::bail!("relu dropout grad: {} gradients for {} outputs", g.len(), y.len());
        }
        let c = self.0;
        let dx: Vec<f32> = y.par_iter().zip(g.par_iter()).map(|(&y, &g)| if y > 0.0 { g * c } else { 0.0 }).collect();
        Ok((CpuStorage::F32(dx), yl.shape().clone()))
    }
}

/// `dropout(relu(x), p)` with its mask derived from `seed`; differentiable, fused on the CPU.
pub fn relu_dropout(x: &Tensor, p: f32, seed: u64) -> candle_core::Result<Tensor> {
    if p <= 0.0 || !is_cpu_f32(x) {
        return dropout(&x.relu()?, p, seed);
    }
    x.contiguous()?.apply_op1(ReluDropout(Dropout { p, seed }))
}

/// Rows per partial sum of [`column_sums`]: fixed, so the order of the
/// float additions (and the result, bit for bit) does not depend on threads.
const SUM_ROWS_PER_CHUNK: usize = 256;

/// Sums over the rows of `x` viewed as `[rows, width]`: `[width]`.
struct ColumnSums {
    width: usize,
}

impl CustomOp1 for ColumnSums {
    fn name(&self) -> &'static str {
        "tailforge-column-sums"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(storage, layout, "column sums")?;
        let w = self.width;
        if w == 0 || x.len() % w != 0 {
            candle_core::bail!("column sums: {} elements are not rows of {w}", x.len());
        }
        let partials: Vec<Vec<f32>> = x
            .par_chunks(w * SUM_ROWS_PER_CHUNK)
            .map(|chunk| {
                let mut acc = vec![0f32; w];
                for row in chunk.chunks_exact(w) {
                    acc.iter_mut().zip(row).for_each(|(a, v)| *a += v);
                }
                acc
            })
            .collect();
        let mut total = vec![0f32; w];
        for partial in &partials {
            total.iter_mut().zip(partial).for_each(|(t, v)| *t += v);
        }
        Ok((CpuStorage::F32(total), Shape::from_dims(&[w])))
    }
}

/// `x` viewed as `[rows, width]`, summed over its rows (not differentiable:
/// it computes gradients). candle's `sum(0)` takes its generic strided path
/// for this (a division per element), which made bias, position and
/// LayerNorm gradients ≈ 15% of an epoch.
fn column_sums(x: &Tensor, width: usize) -> candle_core::Result<Tensor> {
    if is_cpu_f32(x) { x.contiguous()?.apply_op1_no_bwd(&ColumnSums { width }) } else { x.reshape(((), width))?.sum(0) }
}

/// `x + b`, with `b` repeated over the leading rows of `x` viewed as
/// `[rows, b.elem_count()]`: a bias (`[out]` over `[rows, out]`) or the
/// position table (`[1, len, hidden]` over `[batch, len, hidden]`).
struct AddRows;

impl CustomOp2 for AddRows {
    fn name(&self) -> &'static str {
        "tailforge-add-rows"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, b) = (f32_slice(xs, xl, "add rows")?, f32_slice(bs, bl, "add rows")?);
        let w = b.len();
        if w == 0 || x.len() % w != 0 {
            candle_core::bail!("add rows: {} elements are not rows of {w}", x.len());
        }
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(w).zip(x.par_chunks(w)).for_each(|(y, x)| {
            y.iter_mut().zip(x).zip(b).for_each(|((y, x), b)| *y = x + b);
        });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let db = column_sums(grad, b.elem_count())?.reshape(b.shape())?;
        Ok((Some(grad.clone()), Some(db)))
    }
}

/// `x + b` with `b` broadcast over the leading dimensions of `x`; differentiable, fused on the CPU.
pub fn add_rows(x: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    if is_cpu_f32(x) && is_cpu_f32(b) {
        x.contiguous()?.apply_op2(&b.contiguous()?, AddRows)
    } else {
        x.broadcast_add(b)
    }
}

/// `x` (`[.., width]`) with the rows where `keep` is 0 zeroed: SASRec's
/// timeline mask. Its gradient is masked the same way; candle's broadcast
/// multiply by a constant mask tensor would also compute, accumulate and
/// reduce a gradient for the mask.
#[derive(Clone)]
struct MaskRows {
    keep: Arc<Vec<u8>>,
}

impl CustomOp1 for MaskRows {
    fn name(&self) -> &'static str {
        "tailforge-mask-rows"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_slice(storage, layout, "mask rows")?;
        let rows = self.keep.len();
        if rows == 0 || x.len() % rows != 0 {
            candle_core::bail!("mask rows: {} elements are not {rows} rows", x.len());
        }
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(x.len() / rows).zip(x.par_chunks(x.len() / rows)).zip(self.keep.par_iter()).for_each(
            |((y, x), &keep)| {
                if keep != 0 {
                    y.copy_from_slice(x);
                }
            },
        );
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_res.contiguous()?.apply_op1_no_bwd(self)?))
    }
}

/// `x` with the rows (over its last dimension) where `keep` is 0 zeroed; differentiable.
pub fn mask_rows(x: &Tensor, keep: &Arc<Vec<u8>>) -> candle_core::Result<Tensor> {
    if is_cpu_f32(x) {
        return x.contiguous()?.apply_op1(MaskRows { keep: keep.clone() });
    }
    let mut dims = x.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = 1;
    }
    let mask: Vec<f32> = keep.iter().map(|&k| f32::from(k)).collect();
    x.broadcast_mul(&Tensor::from_vec(mask, dims, x.device())?)
}

/// Mean and reciprocal standard deviation of one row (biased variance, as torch).
fn row_moments(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// `y = (x − mean) · rstd · γ + β` over the last dimension; arguments x, γ, β.
struct LayerNormOp {
    eps: f32,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "tailforge-layer-norm"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, gamma, beta) =
            (f32_slice(xs, xl, "layer_norm")?, f32_slice(gs, gl, "layer_norm")?, f32_slice(bs, bl, "layer_norm")?);
        let h = gamma.len();
        let mut y = vec![0f32; x.len()];
        x.par_chunks(h).zip(y.par_chunks_mut(h)).for_each(|(x, y)| {
            let (mean, rstd) = row_moments(x, self.eps);
            for k in 0..h {
                y[k] = (x[k] - mean) * rstd * gamma[k] + beta[k];
            }
        });
        Ok((CpuStorage::F32(y), xl.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let h = gamma.dim(0)?;
        let rows = x.elem_count() / h;
        let grad = grad.contiguous()?;
        let both = x.contiguous()?.apply_op3_no_bwd(gamma, &grad, &LayerNormGrad { eps: self.eps })?;
        let both = both.reshape((2, rows, h))?;
        let dx = both.get(0)?.reshape(x.shape())?;
        let dgamma = column_sums(&both.get(1)?, h)?;
        let dbeta = column_sums(&grad, h)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// The gradients of [`LayerNormOp`] for arguments x, γ, ∂y: `[2, .., h]`,
/// the rows of ∂x, then those of `∂y ⊙ x̂` (which, summed over rows, are ∂γ).
struct LayerNormGrad {
    eps: f32,
}

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "tailforge-layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
        ds: &CpuStorage,
        dl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, gamma, dy) = (
            f32_slice(xs, xl, "layer_norm_grad")?,
            f32_slice(gs, gl, "layer_norm_grad")?,
            f32_slice(ds, dl, "layer_norm_grad")?,
        );
        let h = gamma.len();
        let mut out = vec![0f32; 2 * x.len()];
        let (dx, dgamma_rows) = out.split_at_mut(x.len());
        dx.par_chunks_mut(h).zip(dgamma_rows.par_chunks_mut(h)).zip(x.par_chunks(h).zip(dy.par_chunks(h))).for_each(
            |((dx, dgamma), (x, dy))| {
                let (mean, rstd) = row_moments(x, self.eps);
                let (mut m1, mut m2) = (0f32, 0f32);
                for k in 0..h {
                    let xhat = (x[k] - mean) * rstd;
                    let dxhat = dy[k] * gamma[k];
                    m1 += dxhat;
                    m2 += dxhat * xhat;
                    dgamma[k] = dy[k] * xhat;
                }
                let (m1, m2) = (m1 / h as f32, m2 / h as f32);
                for k in 0..h {
                    let xhat = (x[k] - mean) * rstd;
                    dx[k] = rstd * (dy[k] * gamma[k] - m1 - xhat * m2);
                }
            },
        );
        let mut dims = vec![2];
        dims.extend_from_slice(xl.dims());
        Ok((CpuStorage::F32(out), Shape::from_dims(&dims)))
    }
}

/// LayerNorm over the last dimension, differentiable in x, γ and β; fused on the CPU.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> candle_core::Result<Tensor> {
    if is_cpu_f32(x) {
        x.contiguous()?.apply_op3(gamma, beta, LayerNormOp { eps })
    } else {
        candle_nn::ops::layer_norm_slow(x, gamma, beta, eps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Forward and the gradients of x, γ and β equal the composed op's.
    /// `y` and the gradients of `Σ y ⊙ weights` with respect to `args`, flattened.
    fn value_and_gradients(y: &Tensor, weights: &Tensor, args: [&Tensor; 3]) -> [Vec<f32>; 4] {
        let grads = (y * weights).unwrap().sum_all().unwrap().backward().unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        [
            flat(y),
            flat(grads.get(args[0]).unwrap()),
            flat(grads.get(args[1]).unwrap()),
            flat(grads.get(args[2]).unwrap()),
        ]
    }

    /// The fused op's outputs (`outputs[0]`) equal the composed op's (`outputs[1]`)
    /// within `tol`, relative to `1 + |composed|`.
    fn assert_agree(outputs: &[[Vec<f32>; 4]], names: [&str; 4], tol: f32) {
        for (k, what) in names.iter().enumerate() {
            let (a, b) = (&outputs[0][k], &outputs[1][k]);
            assert_eq!(a.len(), b.len(), "{what}");
            assert!(a.iter().zip(b).all(|(a, b)| (a - b).abs() < tol * (1.0 + b.abs())), "{what}: {a:?} vs {b:?}");
        }
    }

    /// `add_rows` (a bias, and a position table over a batch) and `mask_rows`
    /// equal candle's broadcast add and multiply, values and gradients, over
    /// more rows than one partial sum covers.
    #[test]
    fn row_adds_and_the_row_mask_match_broadcast_ops_and_their_gradients() {
        let dev = Device::Cpu;
        let (batch, len, width) = (3, 300, 5);
        let n = batch * len * width;
        let x = Var::from_vec((0..n).map(|i| ((i * 31 % 17) as f32 - 8.0) * 0.1).collect(), (batch, len, width), &dev)
            .unwrap();
        let bias = Var::from_vec((0..width).map(|i| i as f32 * 0.3 - 0.5).collect(), width, &dev).unwrap();
        let pos =
            Var::from_vec((0..len * width).map(|i| (i % 11) as f32 * 0.01).collect(), (1, len, width), &dev).unwrap();
        let keep = Arc::new((0..batch * len).map(|r| u8::from(r % 7 != 3)).collect::<Vec<u8>>());
        let keep_t = Tensor::from_vec(keep.iter().map(|&k| f32::from(k)).collect(), (batch, len, 1), &dev).unwrap();
        let weights =
            Tensor::from_vec((0..n).map(|i| ((i * 7) % 9) as f32 - 4.0).collect(), (batch, len, width), &dev).unwrap();
        let mut outputs = Vec::new();
        for fused in [true, false] {
            let (xt, bt, pt) = (x.as_tensor(), bias.as_tensor(), pos.as_tensor());
            let y = if fused {
                mask_rows(&add_rows(&add_rows(xt, bt).unwrap(), pt).unwrap(), &keep).unwrap()
            } else {
                xt.broadcast_add(bt).unwrap().broadcast_add(pt).unwrap().broadcast_mul(&keep_t).unwrap()
            };
            outputs.push(value_and_gradients(&y, &weights, [xt, bt, pt]));
        }
        assert_agree(&outputs, ["forward", "dx", "dbias", "dpos"], 1e-3);
        // Masked rows are exactly zero, with exactly zero gradient.
        assert!(outputs[0][0][3 * width..4 * width].iter().all(|&v| v == 0.0));
        assert!(outputs[0][1][3 * width..4 * width].iter().all(|&v| v == 0.0));
    }

    /// `relu_dropout` equals candle's relu followed by `dropout`, values and
    /// gradients. (At exactly x = 0 candle's relu passes the gradient and this
    /// one, like PyTorch's, does not; the inputs here avoid 0.)
    #[test]
    fn relu_dropout_matches_relu_then_dropout() {
        let dev = Device::Cpu;
        let n = 3 * DROPOUT_CHUNK + 77;
        let x = Var::from_vec((0..n).map(|i| ((i * 31 % 17) as f32 - 7.5) * 0.1).collect(), n, &dev).unwrap();
        let weights = Tensor::from_vec((0..n).map(|i| ((i * 7) % 9) as f32 - 4.0).collect(), n, &dev).unwrap();
        let mut outputs = Vec::new();
        for fused in [true, false] {
            let xt = x.as_tensor();
            let y =
                if fused { relu_dropout(xt, 0.25, 5).unwrap() } else { dropout(&xt.relu().unwrap(), 0.25, 5).unwrap() };
            outputs.push(value_and_gradients(&y, &weights, [xt, xt, xt]));
        }
        assert_agree(&outputs, ["forward", "dx", "dx", "dx"], 1e-6);
        let zeroed = outputs[0][1].iter().filter(|&&g| g == 0.0).count();
        assert!(zeroed > n / 2 && zeroed < n, "{zeroed} of {n} gradients are zero");
    }

    /// Column sums are the same bits whatever the number of threads.
    #[test]
    fn column_sums_do_not_depend_on_threads() {
        let x = Tensor::from_vec(
            (0..2000 * 3).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013).collect::<Vec<f32>>(),
            (2000, 3),
            &Device::Cpu,
        )
        .unwrap();
        let sums = |threads: usize| -> Vec<u32> {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| column_sums(&x, 3).unwrap().to_vec1::<f32>().unwrap()).iter().map(|v| v.to_bits()).collect()
        };
        let one = sums(1);
        assert_eq!(one, sums(2));
        assert_eq!(one, sums(4));
        let expected: Vec<f64> =
            (0..3).map(|c| (0..2000).map(|r| (((r * 3 + c) * 37 % 101) as f64 - 50.0) * 0.013).sum::<f64>()).collect();
        for (s, e) in one.iter().zip(&expected) {
            assert!((f32::from_bits(*s) as f64 - e).abs() < 1e-3, "{one:?} vs {expected:?}");
        }
    }

    #[test]
    fn fused_layer_norm_matches_the_composed_op_and_its_gradients() {
        let dev = Device::Cpu;
        let x = Var::from_vec((0..4 * 3 * 8).map(|i| ((i * 29 % 13) as f32 - 6.0) * 0.3).collect(), (4, 3, 8), &dev)
            .unwrap();
        let gamma = Var::from_vec((0..8).map(|i| 0.5 + i as f32 * 0.1).collect(), 8, &dev).unwrap();
        let beta = Var::from_vec((0..8).map(|i| i as f32 * -0.05).collect(), 8, &dev).unwrap();
        let weights =
            Tensor::from_vec((0..96).map(|i| ((i * 7) % 9) as f32 - 4.0).collect::<Vec<_>>(), (4, 3, 8), &dev).unwrap();
        let mut outputs = Vec::new();
        for fused in [true, false] {
            let (xt, g, b) = (x.as_tensor(), gamma.as_tensor(), beta.as_tensor());
            let y = if fused {
                layer_norm(xt, g, b, 1e-8).unwrap()
            } else {
                candle_nn::ops::layer_norm_slow(xt, g, b, 1e-8).unwrap()
            };
            outputs.push(value_and_gradients(&y, &weights, [xt, g, b]));
        }
        assert_agree(&outputs, ["forward", "dx", "dgamma", "dbeta"], 1e-4);
    }

    /// The fused weights equal an additive mask, candle's softmax and a
    /// dropout multiply on every real query row, forward and gradient, with
    /// and without dropout; padding query rows get zero weights.
    #[test]
    fn attention_weights_match_masked_softmax_and_dropout_composed() {
        let dev = Device::Cpu;
        let (b, heads, l) = (2, 2, 5);
        // Sequence 0 left-padded by two slots, sequence 1 full.
        let visible: Vec<u8> = vec![0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
        let n = b * heads * l * l;
        let x = Var::from_vec((0..n).map(|i| ((i * 31 % 17) as f32 - 8.0) * 0.4).collect(), (b, heads, l, l), &dev)
            .unwrap();
        let weights =
            Tensor::from_vec((0..n).map(|i| ((i * 5) % 7) as f32 - 3.0).collect::<Vec<_>>(), (b, heads, l, l), &dev)
                .unwrap();
        let mut additive = vec![0f32; n];
        for (e, a) in additive.iter_mut().enumerate() {
            let (seq, i, j) = (e / (heads * l * l), e / l % l, e % l);
            if j > i || visible[seq * l + j] == 0 {
                *a = -1e9;
            }
        }
        let additive = Tensor::from_vec(additive, (b, heads, l, l), &dev).unwrap();
        let visible = Arc::new(visible);
        let mut zeros = Vec::new();
        for dropout in [None, Some((0.3f32, 11u64))] {
            let mut outputs = Vec::new();
            for fused in [true, false] {
                let y = if fused {
                    attention_weights(x.as_tensor(), &visible, 0.7, dropout).unwrap()
                } else {
                    let scaled = (x.as_tensor() * 0.7).unwrap();
                    let s = candle_nn::ops::softmax(&(scaled + &additive).unwrap(), D::Minus1).unwrap();
                    match dropout {
                        Some((p, seed)) => (&s * Dropout { p, seed }.mask(&s).unwrap()).unwrap(),
                        None => s,
                    }
                };
                let grads = (&y * &weights).unwrap().sum_all().unwrap().backward().unwrap();
                let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                outputs.push((flat(&y), flat(grads.get(x.as_tensor()).unwrap())));
            }
            zeros.push(outputs[0].0.iter().filter(|&&v| v == 0.0).count());
            for row in 0..b * heads * l {
                let (seq, query) = (row / (heads * l), row % l);
                let span = row * l..(row + 1) * l;
                let (fy, fg) = (&outputs[0].0[span.clone()], &outputs[0].1[span.clone()]);
                if seq == 0 && query < 2 {
                    assert!(fy.iter().chain(fg).all(|&v| v == 0.0), "padding query row {row}: {fy:?}");
                    continue;
                }
                let (cy, cg) = (&outputs[1].0[span.clone()], &outputs[1].1[span]);
                assert!(
                    fy.iter().zip(cy).all(|(a, b)| (a - b).abs() < 1e-6),
                    "{dropout:?} row {row}: {fy:?} vs {cy:?}"
                );
                assert!(
                    fg.iter().zip(cg).all(|(a, b)| (a - b).abs() < 1e-5),
                    "{dropout:?} row {row} gradient: {fg:?} vs {cg:?}"
                );
                assert!(fy[query + 1..].iter().all(|&v| v == 0.0), "row {row} sees the future");
                if dropout.is_none() {
                    assert!((fy.iter().sum::<f32>() - 1.0).abs() < 1e-6);
                }
            }
        }
        assert!(zeros[1] > zeros[0] + 5, "dropout zeroed few weights beyond the masks: {zeros:?}");
    }

    /// Dropout keeps the expectation, depends on the seed only, and its
    /// gradient is the forward mask (the mask is derived again, not stored).
    #[test]
    fn dropout_is_seeded_unbiased_and_its_gradient_is_its_mask() {
        let dev = Device::Cpu;
        let n = 100_003; // not a multiple of the chunk or of 4
        let x = Var::from_vec(vec![1f32; n], n, &dev).unwrap();
        let y = dropout(x.as_tensor(), 0.2, 9).unwrap();
        let a: Vec<f32> = y.to_vec1().unwrap();
        assert_eq!(a, dropout(x.as_tensor(), 0.2, 9).unwrap().to_vec1::<f32>().unwrap());
        assert_ne!(a, dropout(x.as_tensor(), 0.2, 10).unwrap().to_vec1::<f32>().unwrap());
        let zeros = a.iter().filter(|&&v| v == 0.0).count() as f64 / n as f64;
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        assert!((zeros - 0.2).abs() < 0.01, "dropped {zeros}");
        assert!((mean - 1.0).abs() < 0.02, "mean {mean}");
        // x is all ones, so y is the mask itself; ∂(Σy)/∂x must be that mask.
        let grad: Vec<f32> = y.sum_all().unwrap().backward().unwrap().get(x.as_tensor()).unwrap().to_vec1().unwrap();
        assert_eq!(grad, a);
        // The composed fallback draws the same mask.
        let op = Dropout { p: 0.2, seed: 9 };
        assert_eq!(op.mask(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap(), a);
    }
}
