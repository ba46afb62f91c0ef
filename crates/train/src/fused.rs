//! Fused CPU kernels with hand-written backward passes for the hot spots of
//! training, where candle's composed ops walk a tensor many times.
//!
//! Attention's softmax over `[batch, heads, len, len]` logits is the largest
//! element-wise tensor of SASRec (128 × 200 × 200 per block at the paper's
//! settings). `candle_nn::ops::softmax` composes it from max, subtract, exp,
//! sum and divide, each a pass with its own backward; candle's fused
//! `softmax_last_dim` has no backward. [`softmax_last_dim`] computes the
//! forward in one pass per row and the gradient in closed form,
//! `∂x = y ⊙ (∂y − Σ ∂y ⊙ y)`.
//!
//! LayerNorm runs five times per forward pass on `[batch, len, hidden]`;
//! `candle_nn::ops::layer_norm_slow` composes it from eight ops, and the
//! fused `layer_norm` has no backward. [`layer_norm`] normalizes each row in
//! one pass and computes `∂x` and `∂γ` rows in one more, with the textbook
//! gradient `∂x = rstd · (∂x̂ − mean(∂x̂) − x̂ · mean(∂x̂ ⊙ x̂))`, `∂x̂ = ∂y ⊙ γ`.
//!
//! Other devices (CUDA) fall back to the composed ops.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, D, Layout, Shape, Tensor};
use rayon::prelude::*;

/// The contiguous f32 data behind a CPU tensor argument of a custom op.
fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else { candle_core::bail!("{what}: f32 only") };
    let Some((start, end)) = layout.contiguous_offsets() else { candle_core::bail!("{what}: must be contiguous") };
    Ok(&data[start..end])
}

struct SoftmaxLastDim;

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "tailforge-softmax-last-dim"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let src = f32_slice(storage, layout, "softmax_last_dim")?;
        let row = layout.dims().last().copied().unwrap_or(1).max(1);
        let mut dst = vec![0f32; src.len()];
        src.par_chunks(row).zip(dst.par_chunks_mut(row)).for_each(|(x, y)| {
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for (x, y) in x.iter().zip(y.iter_mut()) {
                *y = (*x - max).exp();
                sum += *y;
            }
            let inv = 1.0 / sum;
            y.iter_mut().for_each(|y| *y *= inv);
        });
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let gy = (grad_res * res)?;
        let row_sums = gy.sum_keepdim(D::Minus1)?;
        Ok(Some((gy - res.broadcast_mul(&row_sums)?)?))
    }
}

/// Softmax over the last dimension, differentiable; fused on the CPU.
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        x.contiguous()?.apply_op1(SoftmaxLastDim)
    } else {
        candle_nn::ops::softmax(x, D::Minus1)
    }
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
        let both = x.contiguous()?.apply_op3_no_bwd(gamma, &grad.contiguous()?, &LayerNormGrad { eps: self.eps })?;
        let both = both.reshape((rows, 2 * h))?;
        let dx = both.narrow(1, 0, h)?.reshape(x.shape())?;
        let dgamma = both.narrow(1, h, h)?.sum(0)?;
        let dbeta = grad.reshape((rows, h))?.sum(0)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// The gradient rows of [`LayerNormOp`] for arguments x, γ, ∂y: `[∂x | ∂y ⊙ x̂]`
/// side by side (the second half summed over rows is ∂γ).
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
        out.par_chunks_mut(2 * h).zip(x.par_chunks(h).zip(dy.par_chunks(h))).for_each(|(out, (x, dy))| {
            let (mean, rstd) = row_moments(x, self.eps);
            let (mut m1, mut m2) = (0f32, 0f32);
            for k in 0..h {
                let xhat = (x[k] - mean) * rstd;
                let dxhat = dy[k] * gamma[k];
                m1 += dxhat;
                m2 += dxhat * xhat;
                out[h + k] = dy[k] * xhat;
            }
            let (m1, m2) = (m1 / h as f32, m2 / h as f32);
            for k in 0..h {
                let xhat = (x[k] - mean) * rstd;
                out[k] = rstd * (dy[k] * gamma[k] - m1 - xhat * m2);
            }
        });
        let mut dims = xl.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last *= 2;
        }
        Ok((CpuStorage::F32(out), Shape::from_dims(&dims)))
    }
}

/// LayerNorm over the last dimension, differentiable in x, γ and β; fused on the CPU.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f32) -> candle_core::Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        x.contiguous()?.apply_op3(gamma, beta, LayerNormOp { eps })
    } else {
        candle_nn::ops::layer_norm_slow(x, gamma, beta, eps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Forward and gradient equal the composed op's on masked attention-like logits.
    #[test]
    fn fused_softmax_matches_the_composed_op_and_its_gradient() {
        let dev = Device::Cpu;
        let values: Vec<f32> = (0..2 * 3 * 7).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.7).collect();
        let mut masked = values.clone();
        masked[3] = -1e9; // a masked key, as attention adds
        let x = Var::from_vec(masked, (2, 3, 7), &dev).unwrap();
        let weights =
            Tensor::from_vec((0..42).map(|i| (i % 5) as f32 - 2.0).collect::<Vec<_>>(), (2, 3, 7), &dev).unwrap();
        let mut outputs = Vec::new();
        for fused in [true, false] {
            let y = if fused {
                softmax_last_dim(x.as_tensor()).unwrap()
            } else {
                candle_nn::ops::softmax(x.as_tensor(), D::Minus1).unwrap()
            };
            let loss = (&y * &weights).unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            let g = grads.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            outputs.push((y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), g));
        }
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-6);
        assert!(close(&outputs[0].0, &outputs[1].0), "forward");
        assert!(close(&outputs[0].1, &outputs[1].1), "gradient");
        assert!(outputs[0].0[3] == 0.0, "a masked key gets no weight");
        let row: f32 = outputs[0].0[..7].iter().sum();
        assert!((row - 1.0).abs() < 1e-6);
    }

    /// Forward and the gradients of x, γ and β equal the composed op's.
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
            let grads = (&y * &weights).unwrap().sum_all().unwrap().backward().unwrap();
            let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            outputs.push([
                flat(&y),
                flat(grads.get(xt).unwrap()),
                flat(grads.get(g).unwrap()),
                flat(grads.get(b).unwrap()),
            ]);
        }
        for (k, what) in ["forward", "dx", "dgamma", "dbeta"].iter().enumerate() {
            let (a, b) = (&outputs[0][k], &outputs[1][k]);
            assert_eq!(a.len(), b.len());
            assert!(a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-4), "{what}: {a:?} vs {b:?}");
        }
    }
}
