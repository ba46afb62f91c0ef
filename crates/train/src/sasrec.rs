//! SASRec (Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM
//! 2018) in candle, with the item representation of the three variants.
//!
//! ```text
//!   items  ─ item table E (id │ text │ fused) ─ ×√d ─┐
//!   slots  ─ position table P ───────────────────────+─ dropout ─ × timeline mask
//!          └─ blocks × N:  Q = LN(x);  x = Q + MHA(Q, x, x; causal + padding mask)
//!                          x = LN(x);  x = x + FFN(x);  x × timeline mask
//!          └─ LN ─ h_t ;  score(t, i) = h_t · E_i   (the item table is shared)
//! ```
//!
//! The blocks are **pre-LN**, arranged as SASRec.pytorch (the reference PyTorch
//! port): the query is layer-normed before attention and the residual adds the
//! normed query; keys and values come from the un-normed sequence. Sequences
//! are left-padded with item 0; padding slots are zeroed after every block (the
//! paper's timeline mask) and are masked as attention keys, so an output at
//! a real position depends only on real items at or before it.
//!
//! Item representations (`train.variant`):
//! - `id`: a learned embedding per item, the paper's model.
//! - `text`: a frozen MiniLM embedding of the item's text through a learned
//!   linear projection — items are as good as their text, however rare.
//! - `fused`: `g ⊙ E_id + (1 − g) ⊙ W·t` with a per-item, per-dimension gate
//!   `g = σ(W_g [E_id; W·t] + b_g)`: popular items can lean on what their
//!   interactions taught the ID view, tail items on the text view.
//! - `dual`: LLM-ESR's dual view (Liu et al., NeurIPS 2024): two sequence
//!   encoders, one over ID embeddings and one over the frozen text embedding
//!   through a linear adapter (no activation), and the score is the sum of
//!   the two views' scores, `⟨h_id, E_id⟩ + ⟨h_text, W·t⟩`. Neither view can
//!   drown the other inside a gate, so an item the ID view has barely seen
//!   is still scored by its text. The item table is the two views side by
//!   side (`[E_id | W·t]`, width 2·hidden) and the user vector the two
//!   encoders' outputs side by side, so one dot product is the sum of both
//!   views' scores and the losses, evaluator and serving tables need nothing new.

use candle_core::{DType, Device, IndexOp, Tensor};
use tailforge_core::config::Variant;
use tailforge_core::rng::SplitMix64;

use crate::params::{Init, ParamStore};

/// Name of the ID embedding table parameter.
pub const ITEM_EMBEDDING: &str = "item_embedding";

/// SASRec.pytorch's layer-norm epsilon.
const LN_EPS: f32 = 1e-8;

/// The model's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct SasRecShape {
    pub variant: Variant,
    /// Catalog size; the tables have `n_items + 1` rows, row 0 is padding.
    pub n_items: usize,
    pub hidden: usize,
    pub blocks: usize,
    pub heads: usize,
    pub maxlen: usize,
    pub dropout: f32,
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
}

impl LayerNorm {
    fn new(params: &mut ParamStore, name: &str, hidden: usize, dev: &Device) -> candle_core::Result<LayerNorm> {
        Ok(LayerNorm {
            weight: params.get(&format!("{name}.weight"), &[hidden], Init::Ones, 0, dev)?,
            bias: params.get(&format!("{name}.bias"), &[hidden], Init::Zeros, 0, dev)?,
        })
    }

    /// A fused kernel with its own backward pass (candle's fused one has none).
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        crate::fused::layer_norm(x, &self.weight, &self.bias, LN_EPS)
    }
}

struct Linear {
    /// `[out, in]`, as torch's `nn.Linear`.
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn new(
        params: &mut ParamStore,
        name: &str,
        (inp, out): (usize, usize),
        seed: u64,
        dev: &Device,
    ) -> candle_core::Result<Linear> {
        Ok(Linear {
            weight: params.get(&format!("{name}.weight"), &[out, inp], Init::XavierNormal, seed, dev)?,
            bias: params.get(&format!("{name}.bias"), &[out], Init::Zeros, seed, dev)?,
        })
    }

    /// `x · Wᵀ + b` for rows `x: [n, in]`. The model keeps its activations
    /// as rows, so no reshape nodes (each a zeroed gradient and an add in the
    /// backward pass) surround the product.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        crate::fused::add_rows(&x.matmul(&self.weight.t()?)?, &self.bias)
    }
}

/// The positional embedding, attention blocks and final norm that turn a
/// sequence of item vectors into next-item vectors (the paper's encoder).
struct SequenceEncoder {
    positions: Tensor,
    blocks: Vec<Block>,
    last_norm: LayerNorm,
}

/// One self-attention block (the paper's §III-B and §III-C), pre-LN as in the
/// reference implementation: attention, then the point-wise feed-forward
/// network, each with its residual connection.
struct Block {
    attention: SelfAttention,
    feed_forward: FeedForward,
}

/// Causal self-attention. As in the reference code, the query and the
/// residual come from the normalized input, keys and values from the raw one.
struct SelfAttention {
    norm: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
}

/// The point-wise feed-forward network: two linear layers with a ReLU between.
struct FeedForward {
    norm: LayerNorm,
    inner: Linear,
    outer: Linear,
}

/// The shape of one batch of rows `[batch · width, hidden]` and which rows are real items.
struct Rows<'a> {
    batch: usize,
    width: usize,
    hidden: usize,
    /// 1 for a real item, 0 for padding.
    real: &'a std::sync::Arc<Vec<u8>>,
}

impl Block {
    /// Parameters `{prefix}attention_norm`, `{prefix}attention.{q,k,v,out}`,
    /// `{prefix}ffn_norm`, `{prefix}ffn.{1,2}` (the checkpoint's names).
    fn new(
        params: &mut ParamStore,
        prefix: &str,
        shape: &SasRecShape,
        seed: u64,
        dev: &Device,
    ) -> candle_core::Result<Block> {
        let h = shape.hidden;
        let p = |s: &str| format!("{prefix}{s}");
        Ok(Block {
            attention: SelfAttention {
                norm: LayerNorm::new(params, &p("attention_norm"), h, dev)?,
                q: Linear::new(params, &p("attention.q"), (h, h), seed, dev)?,
                k: Linear::new(params, &p("attention.k"), (h, h), seed, dev)?,
                v: Linear::new(params, &p("attention.v"), (h, h), seed, dev)?,
                out: Linear::new(params, &p("attention.out"), (h, h), seed, dev)?,
                heads: shape.heads,
            },
            feed_forward: FeedForward {
                norm: LayerNorm::new(params, &p("ffn_norm"), h, dev)?,
                inner: Linear::new(params, &p("ffn.1"), (h, h), seed, dev)?,
                outer: Linear::new(params, &p("ffn.2"), (h, h), seed, dev)?,
            },
        })
    }

    /// `dropout` is the rate and, in training, one seed per dropout site in
    /// order (attention weights, feed-forward inner, feed-forward output).
    fn forward(&self, x: &Tensor, rows: &Rows, dropout: (f32, Option<[u64; 3]>)) -> candle_core::Result<Tensor> {
        let (p, seeds) = dropout;
        let x = self.attention.forward(x, rows, seeds.map(|s| (p, s[0])))?;
        let x = self.feed_forward.forward(&x, seeds.map(|s| (p, s[1], s[2])))?;
        crate::fused::mask_rows(&x, rows.real)
    }
}

impl SelfAttention {
    fn forward(&self, x: &Tensor, rows: &Rows, dropout: Option<(f32, u64)>) -> candle_core::Result<Tensor> {
        let (b, l, h, heads) = (rows.batch, rows.width, rows.hidden, self.heads);
        let dh = h / heads;
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            if heads == 1 {
                t.reshape((b, 1, l, dh))
            } else {
                t.reshape((b, l, heads, dh))?.transpose(1, 2)?.contiguous()
            }
        };
        let q_in = self.norm.forward(x)?;
        let q = split(self.q.forward(&q_in)?)?;
        let k = split(self.k.forward(x)?)?;
        let v = split(self.v.forward(x)?)?;
        let logits = q.matmul(&k.t()?)?;
        // The 1/√d scale is applied inside the softmax kernel (no extra tensor, no extra node).
        let scale = 1.0 / (dh as f32).sqrt();
        let weights = crate::fused::attention_weights(&logits, rows.real, scale, dropout)?;
        let att = weights.matmul(&v)?;
        let att = if heads == 1 { att.reshape((b * l, h))? } else { att.transpose(1, 2)?.reshape((b * l, h))? };
        q_in + self.out.forward(&att)?
    }
}

impl FeedForward {
    /// `dropout`: the rate and the seeds of the inner activation's and the output's dropout.
    fn forward(&self, x: &Tensor, dropout: Option<(f32, u64, u64)>) -> candle_core::Result<Tensor> {
        // The residual, as in the reference code, starts from the normalized input.
        let x = self.norm.forward(x)?;
        let pre_activation = self.inner.forward(&x)?;
        let inner = match dropout {
            Some((p, seed, _)) => crate::fused::relu_dropout(&pre_activation, p, seed)?,
            None => pre_activation.relu()?,
        };
        let out = self.outer.forward(&inner)?;
        let out = match dropout {
            Some((p, _, seed)) => crate::fused::dropout(&out, p, seed)?,
            None => out,
        };
        &x + out
    }
}

/// The text view: frozen features and their learned projection (and gate, for `fused`).
struct TextView {
    /// `[n_items + 1, text_dim]`, row 0 zeros; not a parameter.
    features: Tensor,
    projection: Linear,
    gate: Option<Linear>,
}

pub struct SasRec {
    pub shape: SasRecShape,
    device: Device,
    id_embedding: Option<Tensor>,
    text: Option<TextView>,
    /// One encoder; for `dual`, the ID view's then the text view's.
    encoders: Vec<SequenceEncoder>,
}

/// A batch of left-padded sequences of model item ids (dense index + 1; 0 = padding).
#[derive(Debug, Clone)]
pub struct SeqBatch {
    pub ids: Vec<u32>,
    pub batch: usize,
    pub width: usize,
}

impl SeqBatch {
    /// Left-pads each sequence's last `width` items (dense indices) into model ids.
    pub fn from_histories(histories: &[&[u32]], maxlen: usize) -> SeqBatch {
        let width = histories.iter().map(|h| h.len().min(maxlen)).max().unwrap_or(1).max(1);
        let mut ids = vec![0u32; histories.len() * width];
        for (row, h) in histories.iter().enumerate() {
            let take = h.len().min(width);
            let dst = &mut ids[row * width + width - take..(row + 1) * width];
            for (d, &item) in dst.iter_mut().zip(&h[h.len() - take..]) {
                *d = item + 1;
            }
        }
        SeqBatch { ids, batch: histories.len(), width }
    }
}

impl SasRec {
    /// Builds the model, creating its parameters in `params` (seeded by `seed`).
    /// `text_features` (`[n_items + 1, d]`, row 0 zeros) is required by the text variants.
    pub fn new(
        shape: SasRecShape,
        text_features: Option<Tensor>,
        params: &mut ParamStore,
        seed: u64,
        device: &Device,
    ) -> candle_core::Result<SasRec> {
        let (n, h) = (shape.n_items + 1, shape.hidden);
        let id_embedding = match shape.variant {
            Variant::Id | Variant::Fused | Variant::Dual => {
                // Row 0 is padding: zero, and it never receives a gradient
                // (padding inputs are masked, padding targets excluded from the loss).
                Some(params.get(ITEM_EMBEDDING, &[n, h], Init::PaddedEmbedding, seed, device)?)
            }
            Variant::Text => None,
        };
        let text = match shape.variant {
            Variant::Id => None,
            Variant::Text | Variant::Fused | Variant::Dual => {
                let Some(features) = text_features else {
                    candle_core::bail!("the {} variant needs item text embeddings", shape.variant.as_str())
                };
                let d = features.dim(1)?;
                if features.dim(0)? != n {
                    candle_core::bail!("{} text feature rows for {} items", features.dim(0)?, shape.n_items);
                }
                let projection = Linear::new(params, "text_projection", (d, h), seed, device)?;
                let gate = match shape.variant {
                    Variant::Fused => Some(Linear::new(params, "fusion_gate", (2 * h, h), seed, device)?),
                    _ => None,
                };
                Some(TextView { features, projection, gate })
            }
        };
        // The first encoder's parameters keep the single-encoder names, so
        // `id`, `text` and `fused` checkpoints read as before.
        let mut encoders = vec![SequenceEncoder::new(params, "", &shape, seed, device)?];
        if shape.variant == Variant::Dual {
            encoders.push(SequenceEncoder::new(params, "text_encoder.", &shape, seed ^ 0x7465_7874, device)?);
        }
        Ok(SasRec { shape, device: device.clone(), id_embedding, text, encoders })
    }

    /// Width of the item table and of user vectors: `hidden`, or `2 · hidden` for `dual`.
    pub fn table_width(&self) -> usize {
        self.shape.hidden * self.encoders.len()
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The item table `[n_items + 1, hidden]` of the variant: what sequences
    /// are embedded with and what outputs are scored against.
    pub fn item_table(&self) -> candle_core::Result<Tensor> {
        match (&self.id_embedding, &self.text) {
            (Some(e), None) => Ok(e.clone()),
            (None, Some(t)) => t.projection.forward(&t.features),
            (Some(e), Some(t)) if self.shape.variant == Variant::Dual => {
                Tensor::cat(&[e, &t.projection.forward(&t.features)?], 1)
            }
            (Some(e), Some(t)) => {
                let projected = t.projection.forward(&t.features)?;
                let Some(gate) = &t.gate else { candle_core::bail!("fused view without a gate") };
                let g = candle_nn::ops::sigmoid(&gate.forward(&Tensor::cat(&[e, &projected], 1)?)?)?;
                let one_minus = g.affine(-1.0, 1.0)?;
                (g * e)? + (one_minus * projected)?
            }
            (None, None) => candle_core::bail!("model without an item representation"),
        }
    }

    /// The mean gate value per item (how much each item leans on its ID view), for the fused variant.
    pub fn gate_means(&self) -> candle_core::Result<Option<Vec<f32>>> {
        let (Some(e), Some(t)) = (&self.id_embedding, &self.text) else { return Ok(None) };
        let Some(gate) = &t.gate else { return Ok(None) };
        let projected = t.projection.forward(&t.features)?;
        let g = candle_nn::ops::sigmoid(&gate.forward(&Tensor::cat(&[e, &projected], 1)?)?)?;
        Ok(Some(g.mean(1)?.to_vec1()?))
    }

    /// Hidden states `[batch, width, hidden]` of every position. With `rng`
    /// the model is in training mode (dropout on); without, in inference mode.
    pub fn forward(
        &self,
        table: &Tensor,
        seqs: &SeqBatch,
        rng: Option<&mut SplitMix64>,
    ) -> candle_core::Result<Tensor> {
        self.forward_rows(table, seqs, rng)?.reshape((seqs.batch, seqs.width, self.table_width()))
    }

    /// [`SasRec::forward`] as rows `[batch · width, hidden]` (row `b · width
    /// + t` is sequence `b`, slot `t`), the layout the losses take. The
    /// whole pass keeps this layout, reshaping only into attention's
    /// `[batch, heads, width, head_dim]`.
    pub fn forward_rows(
        &self,
        table: &Tensor,
        seqs: &SeqBatch,
        mut rng: Option<&mut SplitMix64>,
    ) -> candle_core::Result<Tensor> {
        if seqs.width > self.shape.maxlen {
            candle_core::bail!("batch width {} exceeds maxlen {}", seqs.width, self.shape.maxlen);
        }
        let h = self.shape.hidden;
        if let [encoder] = self.encoders.as_slice() {
            return encoder.forward_rows(&self.shape, &self.device, table, seqs, rng);
        }
        // dual: each encoder reads its own view's columns of the table.
        let mut views = Vec::with_capacity(self.encoders.len());
        for (v, encoder) in self.encoders.iter().enumerate() {
            let view = table.narrow(1, v * h, h)?.contiguous()?;
            views.push(encoder.forward_rows(&self.shape, &self.device, &view, seqs, rng.as_deref_mut())?);
        }
        Tensor::cat(&views, 1)
    }

    /// The last position's hidden state of each sequence: `[batch, table_width]`,
    /// in inference mode. This is the user's representation for the next item.
    pub fn user_vectors(&self, table: &Tensor, seqs: &SeqBatch) -> candle_core::Result<Tensor> {
        let hidden = self.forward(table, seqs, None)?;
        hidden.i((.., seqs.width - 1, ..))?.contiguous()
    }
}

impl SequenceEncoder {
    /// Parameters named `{prefix}position_embedding`, `{prefix}blocks.{b}.…`, `{prefix}last_norm`.
    fn new(
        params: &mut ParamStore,
        prefix: &str,
        shape: &SasRecShape,
        seed: u64,
        device: &Device,
    ) -> candle_core::Result<SequenceEncoder> {
        let h = shape.hidden;
        let positions =
            params.get(&format!("{prefix}position_embedding"), &[shape.maxlen, h], Init::XavierNormal, seed, device)?;
        let mut blocks = Vec::with_capacity(shape.blocks);
        for b in 0..shape.blocks {
            blocks.push(Block::new(params, &format!("{prefix}blocks.{b}."), shape, seed, device)?);
        }
        let last_norm = LayerNorm::new(params, &format!("{prefix}last_norm"), h, device)?;
        Ok(SequenceEncoder { positions, blocks, last_norm })
    }

    /// Rows `[batch · width, hidden]` of next-item vectors from the item
    /// vectors `table` (`[n_items + 1, hidden]`); see [`SasRec::forward_rows`].
    fn forward_rows(
        &self,
        shape: &SasRecShape,
        dev: &Device,
        table: &Tensor,
        seqs: &SeqBatch,
        mut rng: Option<&mut SplitMix64>,
    ) -> candle_core::Result<Tensor> {
        let (b, l, h) = (seqs.batch, seqs.width, shape.hidden);
        let p = shape.dropout;
        // Training mode draws a seed per dropout site from `rng`, in order.
        let mut next_seed = move || rng.as_deref_mut().map(SplitMix64::next_u64);
        let drop = |x: Tensor, seed: Option<u64>| -> candle_core::Result<Tensor> {
            match seed {
                Some(seed) => crate::fused::dropout(&x, p, seed),
                None => Ok(x),
            }
        };
        let ids = Tensor::from_slice(&seqs.ids, b * l, dev)?;
        // 1 for a real item, 0 for padding: the timeline mask (padding slots
        // are zeroed) and the attention's key mask (see fused::attention_weights).
        let real = std::sync::Arc::new(seqs.ids.iter().map(|&i| u8::from(i != 0)).collect::<Vec<u8>>());

        // Slots are numbered from the right, so an item's position embedding
        // is the same whatever the batch's width: the last slot is maxlen - 1.
        let slots = Tensor::arange((shape.maxlen - l) as u32, shape.maxlen as u32, dev)?;
        let pos = self.positions.index_select(&slots, 0)?;
        // Rows [b · l, h]; the [l, h] position block repeats over sequences.
        let x = (table.index_select(&ids, 0)? * (h as f64).sqrt())?;
        let x = crate::fused::add_rows(&x, &pos)?;
        let mut x = crate::fused::mask_rows(&drop(x, next_seed())?, &real)?;

        let rows = Rows { batch: b, width: l, hidden: h, real: &real };
        for block in &self.blocks {
            // Seeds drawn in the order of the sites: attention, feed-forward inner, output.
            let seeds = next_seed().zip(next_seed()).zip(next_seed()).map(|((a, f), o)| [a, f, o]);
            x = block.forward(&x, &rows, (p, seeds))?;
        }
        self.last_norm.forward(&x)
    }
}

/// softplus(x) = log(1 + eˣ), stable for large |x|: relu(x) + log(1 + e^−|x|).
fn softplus(x: &Tensor) -> candle_core::Result<Tensor> {
    x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?
}

/// The paper's loss: −log σ(h·e₊) − log(1 − σ(h·e₋)) averaged over real
/// positions. `hidden` is rows `[positions, hidden]` ([`SasRec::forward_rows`]);
/// `positives`/`negatives` are model ids per position (0 where the
/// position is padding, excluded).
pub fn bce_loss(hidden: &Tensor, table: &Tensor, positives: &[u32], negatives: &[u32]) -> candle_core::Result<Tensor> {
    let n = hidden.dim(0)?;
    let dev = hidden.device();
    let logit = |ids: &[u32]| -> candle_core::Result<Tensor> {
        let rows = table.index_select(&Tensor::from_slice(ids, n, dev)?, 0)?;
        (hidden * rows)?.sum(1)
    };
    let valid: Vec<f32> = positives.iter().map(|&p| if p == 0 { 0.0 } else { 1.0 }).collect();
    let count = valid.iter().sum::<f32>().max(1.0);
    let valid = Tensor::from_vec(valid, n, dev)?;
    let per_position = (softplus(&logit(positives)?.neg()?)? + softplus(&logit(negatives)?)?)?;
    (per_position * valid)?.sum_all()? / count as f64
}

/// Sampled softmax: cross-entropy of the next item against `shared_negatives`
/// (model ids, shared by every position of the batch, which keeps the cost at
/// one `[positions, negatives]` matrix product). `hidden` is rows, as for [`bce_loss`].
pub fn sampled_softmax_loss(
    hidden: &Tensor,
    table: &Tensor,
    positives: &[u32],
    shared_negatives: &[u32],
) -> candle_core::Result<Tensor> {
    let n = hidden.dim(0)?;
    let dev = hidden.device();
    let pos_rows = table.index_select(&Tensor::from_slice(positives, n, dev)?, 0)?;
    let pos_logit = (hidden * pos_rows)?.sum_keepdim(1)?;
    let neg_rows = table.index_select(&Tensor::from_slice(shared_negatives, shared_negatives.len(), dev)?, 0)?;
    let neg_logits = hidden.matmul(&neg_rows.t()?)?;
    let logits = Tensor::cat(&[&pos_logit, &neg_logits], 1)?;
    let log_z = {
        let max = logits.max_keepdim(1)?.detach();
        (logits.broadcast_sub(&max)?.exp()?.sum_keepdim(1)?.log()? + max)?
    };
    let per_position = (log_z - pos_logit)?.squeeze(1)?;
    let valid: Vec<f32> = positives.iter().map(|&p| if p == 0 { 0.0 } else { 1.0 }).collect();
    let count = valid.iter().sum::<f32>().max(1.0);
    (per_position * Tensor::from_vec(valid, n, dev)?)?.sum_all()? / count as f64
}

/// `[n, d]` rows as f32, e.g. for text features.
pub fn features_tensor(rows: &[Vec<f32>], device: &Device) -> candle_core::Result<Tensor> {
    let d = rows.first().map(Vec::len).unwrap_or(0);
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_vec(flat, (rows.len(), d), device)?.to_dtype(DType::F32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(variant: Variant, n_items: usize) -> (SasRec, ParamStore) {
        let shape = SasRecShape { variant, n_items, hidden: 16, blocks: 2, heads: 2, maxlen: 8, dropout: 0.0 };
        let mut params = ParamStore::default();
        let text = if variant.uses_text() {
            let mut rng = SplitMix64::new(3);
            let mut rows = vec![vec![0.0f32; 12]];
            for _ in 0..n_items {
                rows.push((0..12).map(|_| crate::params::standard_normal(&mut rng) as f32).collect());
            }
            Some(features_tensor(&rows, &Device::Cpu).unwrap())
        } else {
            None
        };
        let model = SasRec::new(shape, text, &mut params, 1, &Device::Cpu).unwrap();
        (model, params)
    }

    fn hidden_rows(model: &SasRec, seq: &[u32]) -> Vec<Vec<f32>> {
        let table = model.item_table().unwrap();
        let batch = SeqBatch::from_histories(&[seq], 8);
        model.forward(&table, &batch, None).unwrap().squeeze(0).unwrap().to_vec2().unwrap()
    }

    #[test]
    fn a_future_item_cannot_change_an_earlier_output() {
        for variant in [Variant::Id, Variant::Text, Variant::Fused, Variant::Dual] {
            let (model, _) = tiny(variant, 20);
            // Same first four items, different fifth: positions 0..4 of the
            // (full-width, unpadded) sequence must be identical.
            let a = hidden_rows(&model, &[3, 1, 4, 1, 5, 9, 2, 6]);
            let b = hidden_rows(&model, &[3, 1, 4, 1, 17, 9, 2, 6]);
            for t in 0..4 {
                assert_eq!(a[t], b[t], "{variant:?}: position {t} saw the future");
            }
            assert_ne!(a[4], b[4], "{variant:?}: position 4 must see its own item");
            assert_ne!(a[7], b[7], "{variant:?}: later positions see the change");
        }
    }

    #[test]
    fn padding_does_not_change_real_positions() {
        let (model, _) = tiny(Variant::Fused, 20);
        let table = model.item_table().unwrap();
        // The short sequence alone (width 3) and batched with a longer one
        // (left-padded to width 6): its last state must not move.
        let short: &[u32] = &[4, 8, 15];
        let alone = model.user_vectors(&table, &SeqBatch::from_histories(&[short], 8)).unwrap();
        let padded = model.user_vectors(&table, &SeqBatch::from_histories(&[&[1, 2, 3, 4, 5, 6], short], 8)).unwrap();
        let a: Vec<f32> = alone.squeeze(0).unwrap().to_vec1().unwrap();
        let b: Vec<f32> = padded.i(1).unwrap().to_vec1().unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn softplus_matches_its_definition_and_stays_finite() {
        let x = Tensor::new(&[-100f32, -2.0, 0.0, 3.0, 100.0], &Device::Cpu).unwrap();
        let y: Vec<f32> = softplus(&x).unwrap().to_vec1().unwrap();
        for (xi, yi) in [-100f64, -2.0, 0.0, 3.0, 100.0].iter().zip(&y) {
            let expected = if *xi > 30.0 { *xi } else { (1.0 + xi.exp()).ln() };
            assert!((expected - *yi as f64).abs() < 1e-5, "softplus({xi}) = {yi}, expected {expected}");
        }
    }
}
