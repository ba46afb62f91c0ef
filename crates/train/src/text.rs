//! Item text → sentence embeddings, in-process: all-MiniLM-L6-v2 through
//! candle-transformers' BERT and the `tokenizers` crate, with the
//! sentence-transformers recipe (mean pooling over real tokens, then L2
//! normalisation), and a cache keyed by the text's hash so that a nightly run
//! encodes only texts it has not seen.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, FixedSizeListArray, Float32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use sha2::{Digest, Sha256};
use tailforge_core::hash::hex;
use tailforge_core::parquet_io::{ParquetSink, read_parquet};
use tailforge_core::{Error, Location, Result};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// The encoder's output width (MiniLM-L6: 384).
pub type Embedding = Vec<f32>;

/// all-MiniLM-L6-v2, loaded from a directory with `model.safetensors`,
/// `config.json` and `tokenizer.json` (what `make setup` unpacks).
pub struct TextEncoder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    dim: usize,
    /// Identifies the encoder in cache keys: SHA-256 of the weights, plus the token limit.
    pub fingerprint: String,
}

fn missing(dir: &Path, file: &str, e: impl std::fmt::Display) -> Error {
    Error::usage(format!(
        "text encoder: cannot read {}: {e}. Set train.encoder to a directory with all-MiniLM-L6-v2's \
         model.safetensors, config.json and tokenizer.json (`make setup` installs it into models/all-MiniLM-L6-v2)",
        dir.join(file).display()
    ))
}

/// SHA-256 of a file, hex.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut file = std::fs::File::open(path)?;
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

impl TextEncoder {
    pub fn load(dir: &Path, max_tokens: usize, device: &Device) -> Result<TextEncoder> {
        let weights = dir.join("model.safetensors");
        let config_text =
            std::fs::read_to_string(dir.join("config.json")).map_err(|e| missing(dir, "config.json", e))?;
        let config: Config = serde_json::from_str(&config_text).map_err(|e| {
            Error::usage(format!("text encoder: {} is not a BERT config: {e}", dir.join("config.json").display()))
        })?;
        let sha = file_sha256(&weights).map_err(|e| missing(dir, "model.safetensors", e))?;
        let mut tokenizer =
            Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| missing(dir, "tokenizer.json", e))?;
        // The packaged tokenizer pads every text to 128 tokens and cuts there;
        // pad each batch only to its longest text, and cut at the configured limit.
        tokenizer.with_padding(Some(PaddingParams { strategy: PaddingStrategy::BatchLongest, ..Default::default() }));
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: max_tokens, ..Default::default() }))
            .map_err(|e| Error::usage(format!("text encoder: truncation at {max_tokens} tokens: {e}")))?;
        // SAFETY: the weights file is memory-mapped read-only; it must not be
        // modified while the encoder lives (it is a model file under models/).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(std::slice::from_ref(&weights), DType::F32, device) }
            .map_err(|e| missing(dir, "model.safetensors", e))?;
        let model = BertModel::load(vb, &config).map_err(|e| {
            Error::usage(format!("text encoder: {} does not hold a BERT model: {e}", weights.display()))
        })?;
        Ok(TextEncoder {
            model,
            tokenizer,
            device: device.clone(),
            dim: config.hidden_size,
            fingerprint: format!("{sha}-t{max_tokens}"),
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Token ids of one text (for tests and diagnostics).
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.tokenizer.encode(text, true).map_err(|e| Error::internal(format!("tokenizing: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Embeds `texts` (mean-pooled, L2-normalised), `batch` texts per forward pass.
    /// Texts are sorted by length first so a batch pads little.
    pub fn encode(&self, texts: &[&str], batch: usize) -> Result<Vec<Embedding>> {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut out: Vec<Embedding> = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(batch.max(1)) {
            let inputs: Vec<&str> = chunk.iter().map(|&i| texts[i]).collect();
            let vectors = self.encode_batch(&inputs).map_err(|e| Error::internal(format!("text encoder: {e}")))?;
            for (&i, v) in chunk.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    fn encode_batch(
        &self,
        texts: &[&str],
    ) -> std::result::Result<Vec<Embedding>, Box<dyn std::error::Error + Send + Sync>> {
        let encodings = self.tokenizer.encode_batch(texts.to_vec(), true)?;
        let width = encodings.first().map(|e| e.get_ids().len()).unwrap_or(0);
        let n = encodings.len();
        let flat = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Vec<u32> {
            encodings.iter().flat_map(|e| f(e).iter().copied()).collect()
        };
        let ids = Tensor::from_vec(flat(&|e| e.get_ids()), (n, width), &self.device)?;
        let types = Tensor::from_vec(flat(&|e| e.get_type_ids()), (n, width), &self.device)?;
        let mask = Tensor::from_vec(flat(&|e| e.get_attention_mask()), (n, width), &self.device)?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?;
        // Mean over real tokens: Σ h·m / Σ m, then unit length.
        let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&m)?.sum(1)?;
        let counts = m.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        Ok(mean.broadcast_div(&norm)?.to_vec2()?)
    }
}

/// Text embeddings already computed, keyed by SHA-256 of (encoder fingerprint, text),
/// persisted as one Parquet file per encoder under the cache location.
pub struct EmbeddingCache {
    file: Location,
    dim: usize,
    entries: HashMap<String, Embedding>,
    dirty: bool,
}

impl EmbeddingCache {
    pub async fn open(dir: &Location, encoder_fingerprint: &str, dim: usize) -> Result<EmbeddingCache> {
        let name: String = encoder_fingerprint.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
        let file = dir.join(&format!("minilm-{name}.parquet"));
        let mut entries = HashMap::new();
        if file.exists().await? {
            match read_parquet(&file).await.and_then(|b| decode(&b, dim)) {
                Ok(e) => entries = e,
                // The cache is derived data: unreadable means recompute, not fail.
                Err(e) => tracing::warn!(cache = %file.display(), error = %e, "ignoring unreadable embedding cache"),
            }
        }
        Ok(EmbeddingCache { file, dim, entries, dirty: false })
    }

    pub fn key(encoder_fingerprint: &str, text: &str) -> String {
        let mut h = Sha256::new();
        h.update(encoder_fingerprint.as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
        hex(&h.finalize())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Embeds every text, encoding only those not cached. Returns the
    /// embeddings in input order, how many distinct texts were encoded now
    /// and how many inputs the cache already held.
    pub fn embed(
        &mut self,
        encoder: &TextEncoder,
        texts: &[String],
        batch: usize,
    ) -> Result<(Vec<Embedding>, usize, usize)> {
        let keys: Vec<String> = texts.iter().map(|t| Self::key(&encoder.fingerprint, t)).collect();
        let mut todo: Vec<usize> = (0..texts.len()).filter(|&i| !self.entries.contains_key(&keys[i])).collect();
        let cached = texts.len() - todo.len();
        // The same text twice is encoded once.
        todo.sort_by(|&a, &b| keys[a].cmp(&keys[b]));
        todo.dedup_by(|a, b| keys[*a] == keys[*b]);
        if !todo.is_empty() {
            let inputs: Vec<&str> = todo.iter().map(|&i| texts[i].as_str()).collect();
            let vectors = encoder.encode(&inputs, batch)?;
            for (&i, v) in todo.iter().zip(vectors) {
                self.entries.insert(keys[i].clone(), v);
            }
            self.dirty = true;
        }
        let out = keys.iter().map(|k| self.entries.get(k).cloned().unwrap_or_default()).collect();
        Ok((out, todo.len(), cached))
    }

    /// Writes the cache (atomically: the object appears whole or not at all).
    pub async fn save(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let mut keys: Vec<&String> = self.entries.keys().collect();
        keys.sort();
        let values: Vec<f32> = keys.iter().flat_map(|k| self.entries[*k].iter().copied()).collect();
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let vectors =
            FixedSizeListArray::try_new(item.clone(), self.dim as i32, Arc::new(Float32Array::from(values)), None)
                .map_err(|e| Error::internal(format!("embedding cache: {e}")))?;
        let schema = Arc::new(Schema::new(vec![
            Field::new("text_sha256", DataType::Utf8, false),
            Field::new("vector", DataType::FixedSizeList(item, self.dim as i32), false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from_iter_values(keys.iter().map(|k| k.as_str()))), Arc::new(vectors)],
        )
        .map_err(|e| Error::internal(format!("embedding cache: {e}")))?;
        let mut sink = ParquetSink::create(&self.file, schema)?;
        sink.write(&batch).await?;
        sink.finish().await?;
        self.dirty = false;
        Ok(())
    }
}

fn decode(batches: &[RecordBatch], dim: usize) -> Result<HashMap<String, Embedding>> {
    let mut entries = HashMap::new();
    for batch in batches {
        let keys = batch.column(0).as_any().downcast_ref::<StringArray>();
        let vectors = batch.column(1).as_any().downcast_ref::<FixedSizeListArray>();
        let (Some(keys), Some(vectors)) = (keys, vectors) else {
            return Err(Error::internal("embedding cache has unexpected columns"));
        };
        if vectors.value_length() as usize != dim {
            return Err(Error::internal(format!("embedding cache holds {}-d vectors", vectors.value_length())));
        }
        let Some(values) = vectors.values().as_any().downcast_ref::<Float32Array>() else {
            return Err(Error::internal("embedding cache vectors are not f32"));
        };
        for row in 0..keys.len() {
            let start = row * dim;
            entries.insert(keys.value(row).to_string(), values.values()[start..start + dim].to_vec());
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models_dir() -> std::path::PathBuf {
        // The directory cargo runs the test from, not the one it was compiled in:
        // clones sharing one CARGO_TARGET_DIR can reuse each other's test binaries.
        std::env::var_os("CARGO_MANIFEST_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf())
            .join("../../models/all-MiniLM-L6-v2")
    }

    /// The packaged model's embeddings of two sentences, computed once with
    /// PyTorch from the same safetensors (benches/minilm_reference.py).
    #[test]
    fn embeddings_match_the_pytorch_reference() {
        let reference: serde_json::Value =
            serde_json::from_str(include_str!("../../../benches/reference/minilm_embeddings.json")).unwrap();
        let encoder =
            TextEncoder::load(&models_dir(), 256, &Device::Cpu).expect("models/all-MiniLM-L6-v2 (run `make setup`)");
        let sentences = reference["sentences"].as_array().unwrap();
        let texts: Vec<&str> = sentences.iter().map(|s| s["text"].as_str().unwrap()).collect();
        // Both in one batch: the shorter one is padded, which must not change it.
        let got = encoder.encode(&texts, 8).unwrap();
        for (s, v) in sentences.iter().zip(&got) {
            let ids: Vec<u32> = s["token_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
            assert_eq!(encoder.token_ids(s["text"].as_str().unwrap()).unwrap(), ids);
            let want: Vec<f64> = s["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            assert_eq!(v.len(), want.len());
            let worst = v.iter().zip(&want).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
            assert!(worst < 1e-4, "{}: max |Δ| = {worst}", s["text"]);
            let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5);
        }
        let cosine: f32 = got[0].iter().zip(&got[1]).map(|(a, b)| a * b).sum();
        let want = reference["cosine_similarity"].as_f64().unwrap();
        assert!((cosine as f64 - want).abs() < 1e-4, "cosine {cosine} vs {want}");
    }

    #[test]
    fn a_missing_encoder_is_a_usage_error_that_says_what_to_do() {
        let Err(e) = TextEncoder::load(Path::new("/nonexistent/minilm"), 256, &Device::Cpu) else { panic!("loaded") };
        let msg = e.to_string();
        assert!(msg.contains("train.encoder") && msg.contains("make setup"), "{msg}");
        assert_eq!(e.exit_code(), tailforge_core::error::EXIT_USAGE);
    }
}
