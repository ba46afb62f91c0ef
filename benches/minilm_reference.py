#!/usr/bin/env python3
"""Reference sentence embeddings of all-MiniLM-L6-v2, computed independently
of the Rust/candle code, to check the Rust text encoder against.

- Tokens: the HuggingFace `tokenizers` package on the model's tokenizer.json
  ([CLS] … [SEP], no padding; truncation at 256 tokens, sentence-transformers'
  max_seq_length for this model).
- Forward: BERT written out here in plain torch ops from model.safetensors
  (embeddings word + position + token type, LayerNorm eps 1e-12; 6 post-LN
  encoder layers, 12 heads, exact erf GELU), run in float64 for the
  reference figures and in float32 to show the size of ordinary f32 error.
- Sentence embedding (sentence-transformers' recipe for this model): mean of
  the last hidden states over the attention mask, then L2 normalisation.

Checks (the script fails if one does not hold):
- the same forward on the tokenizer's default 128-token padding, with the
  attention mask applied in attention and pooling, gives the same vectors;
- if `transformers` is installed, its BertModel on the same weights agrees;
- norms are 1.

  .venv-bench/bin/python benches/minilm_reference.py \
      [--model models/all-MiniLM-L6-v2] [--out benches/reference/minilm_embeddings.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re

import numpy as np
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

SENTENCES = [
    "A quiet documentary about lighthouse keepers on the Scottish coast.",
    "Toy Story (1995)",
]
MAX_SEQ_LENGTH = 256  # sentence-transformers' setting for all-MiniLM-L6-v2


def bert_forward(w: dict, cfg: dict, ids: torch.Tensor, mask: torch.Tensor, dtype) -> torch.Tensor:
    """Last hidden states [B, T, H] of a BERT encoder; ids, mask: [B, T] (mask 1 = token)."""
    p = {k: v.to(dtype) for k, v in w.items() if v.is_floating_point()}
    H, nh, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["layer_norm_eps"]
    hd = H // nh
    B, T = ids.shape

    def ln(x, name):
        return torch.nn.functional.layer_norm(x, (H,), p[name + ".weight"], p[name + ".bias"], eps)

    def lin(x, name):
        return x @ p[name + ".weight"].T + p[name + ".bias"]

    x = (
        p["embeddings.word_embeddings.weight"][ids]
        + p["embeddings.position_embeddings.weight"][torch.arange(T)].unsqueeze(0)
        + p["embeddings.token_type_embeddings.weight"][torch.zeros_like(ids)]
    )
    x = ln(x, "embeddings.LayerNorm")
    # additive attention bias: a large negative number on padding keys
    bias = (1.0 - mask.to(dtype))[:, None, None, :] * torch.finfo(dtype).min
    for i in range(cfg["num_hidden_layers"]):
        pre = f"encoder.layer.{i}."
        split = lambda t: t.view(B, T, nh, hd).transpose(1, 2)  # noqa: E731
        q = split(lin(x, pre + "attention.self.query"))
        k = split(lin(x, pre + "attention.self.key"))
        v = split(lin(x, pre + "attention.self.value"))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + bias, dim=-1)
        ctx = (att @ v).transpose(1, 2).reshape(B, T, H)
        x = ln(x + lin(ctx, pre + "attention.output.dense"), pre + "attention.output.LayerNorm")
        h = lin(x, pre + "intermediate.dense")
        h = 0.5 * h * (1.0 + torch.erf(h / math.sqrt(2.0)))  # exact GELU ("gelu" in config.json)
        x = ln(x + lin(h, pre + "output.dense"), pre + "output.LayerNorm")
    return x


def sentence_embedding(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(hidden.dtype).unsqueeze(-1)
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1)


def main() -> None:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(root, "models", "all-MiniLM-L6-v2"))
    ap.add_argument("--out", default=os.path.join(root, "benches", "reference", "minilm_embeddings.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)

    cfg = json.load(open(os.path.join(args.model, "config.json")))
    weights_path = os.path.join(args.model, "model.safetensors")
    w = load_file(weights_path)
    sha = hashlib.sha256(open(weights_path, "rb").read()).hexdigest()

    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(MAX_SEQ_LENGTH)
    encs = [tok.encode(s) for s in SENTENCES]

    results, embs64, embs32 = [], [], []
    for s, e in zip(SENTENCES, encs):
        ids = torch.tensor([e.ids])
        mask = torch.tensor([e.attention_mask])
        e64 = sentence_embedding(bert_forward(w, cfg, ids, mask, torch.float64), mask)[0]
        e32 = sentence_embedding(bert_forward(w, cfg, ids, mask, torch.float32), mask)[0]
        embs64.append(e64)
        embs32.append(e32)
        results.append({"text": s, "token_ids": e.ids, "tokens": e.tokens})

    # Check 1: a padded batch (the tokenizer.json default: fixed 128) with the mask gives the same vectors.
    padded_tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    pe = padded_tok.encode_batch(SENTENCES)
    ids = torch.tensor([e.ids for e in pe])
    mask = torch.tensor([e.attention_mask for e in pe])
    assert ids.shape[1] == 128, ids.shape
    padded64 = sentence_embedding(bert_forward(w, cfg, ids, mask, torch.float64), mask)
    pad_diff = max(float((padded64[i] - embs64[i]).abs().max()) for i in range(len(SENTENCES)))
    assert pad_diff < 1e-10, f"padded batch differs by {pad_diff}"

    # Check 2: transformers' BertModel (if installed) on the same weights.
    hf_diff = None
    try:
        from transformers import BertModel

        hf = BertModel.from_pretrained(args.model, torch_dtype=torch.float64, local_files_only=True).eval()
        with torch.no_grad():
            out = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        hf64 = sentence_embedding(out, mask)
        hf_diff = max(float((hf64[i] - embs64[i]).abs().max()) for i in range(len(SENTENCES)))
        assert hf_diff < 1e-9, f"transformers BertModel differs by {hf_diff}"
    except ImportError:
        pass

    f32_diff = max(float((embs32[i].double() - embs64[i]).abs().max()) for i in range(len(SENTENCES)))
    for r, e64, e32 in zip(results, embs64, embs32):
        norm = float(e64.norm())
        assert abs(norm - 1.0) < 1e-12, norm
        r["n_tokens"] = len(r["token_ids"])
        r["first8"] = [round(float(x), 8) for x in e64[:8]]
        r["norm"] = norm
        r["embedding"] = [float(x) for x in e64]
    cos = float(embs64[0] @ embs64[1])
    cos32 = float(embs32[0] @ embs32[1])

    doc = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "model_safetensors_sha256": sha,
        "recipe": "tokenizer.json tokens ([CLS] .. [SEP], no padding, truncation 256); BERT forward; "
        "mean pooling over the attention mask; L2 normalisation",
        "computed_by": "benches/minilm_reference.py: BERT forward written in torch ops, float64",
        "torch": torch.__version__,
        "sentences": results,
        "cosine_similarity": cos,
        "checks": {
            "padded_128_batch_max_abs_diff": pad_diff,
            "transformers_bertmodel_max_abs_diff": hf_diff,
            "float32_forward_max_abs_diff": f32_diff,
            "float32_cosine_similarity": cos32,
        },
        "tolerance_hint": "a correct float32 implementation should agree to ~1e-5 per dimension",
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    text = json.dumps(doc, indent=1)
    # one line per list of numbers or tokens, for a readable diff
    text = re.sub(r"\[\n\s*([^\[\]{}]*?)\n\s*\]", lambda m: "[" + re.sub(r",\n\s*", ", ", m.group(1)) + "]", text)
    with open(args.out, "w") as f:
        f.write(text + "\n")
    for r in results:
        print(f"{r['text']!r}: {r['n_tokens']} tokens {r['token_ids']}\n  first 8: {np.round(r['first8'], 6).tolist()}  norm {r['norm']:.12f}")
    print(f"cosine similarity {cos:.6f}; padded diff {pad_diff:.1e}; transformers diff {hf_diff}; f32 diff {f32_diff:.1e}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
