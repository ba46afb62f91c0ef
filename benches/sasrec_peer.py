#!/usr/bin/env python3
"""SASRec peer baseline in PyTorch, evaluated under eval-v1 (../shared/EVAL.md).

A minimal, faithful port of pmixer/SASRec.pytorch (the model behind EVAL.md's
"SASRec, PyTorch" reference row), to give the Rust/candle SASRec of
crates/train a peer to compare accuracy and seconds per epoch with, on the
same analyze output and the same protocol.

Model (pmixer's original, post-LN-in-block variant):
  x = item_emb(seq) * sqrt(d) + pos_emb(0..L-1); dropout; x *= timeline mask
  per block:  Q = attn_ln(x)                       (x is [L, B, d])
              x = Q + MHA(Q, x, x, causal mask)    (keys/values: the un-normed x)
              x = fwd_ln(x)
              x = x + dropout(W2 relu(dropout(W1 x)))
              x *= timeline mask                   (padding positions back to 0)
  feats = last_ln(x); score(item) = <feats, item_emb(item)> (shared embeddings)
Training: per user the last `maxlen` items of the training part, positives =
next item, one negative per position drawn uniformly from items not in the
user's training part; BCE on positions with a positive; Adam lr 1e-3,
betas (0.9, 0.98); xavier_normal_ init of every matrix, as pmixer does.
One epoch = every training user (training part >= 2 items) once, shuffled,
in batches of 128 (pmixer samples users with replacement, ceil(U / 128)
batches; a permutation is the same amount of work without duplicates).

Evaluation (eval-v1, written independently of crates/train/src/eval.rs):
  input = training part (valid) or training part + validation item (test),
  last maxlen items; candidates = every catalog item except that history (the
  target is always ranked); rank = number of other candidates scoring >= the
  target; HR@10, NDCG@10 overall / head / tail / cold (target with at most 5
  training interactions, whatever its group); coverage@10 and tail share
  of the top-10 lists (score desc, ties by item id asc); sampled metrics with
  100 negatives drawn by eval-v1's SplitMix64 procedure (seed 42), ported
  exactly so the sampled figures are comparable to `tailforge evaluate`.
The evaluator is checked against EVAL.md's MostPop figures and case counts at
every start (MovieLens-100k and Amazon Scientific, recognised by their sizes).

  OMP_WAIT_POLICY=PASSIVE .venv-bench/bin/python benches/sasrec_peer.py --data an \
      --epochs 200 --eval-every 5 --patience 10 --threads 2 --seed 42 --out metrics.json

Threads: on a 2-core machine shared with other work (a cargo build), torch's
OpenMP threads spin at every barrier by default, and --threads 2 ran 3-4x
slower than --threads 1 (14.2 vs 4.3 s/epoch); OMP_WAIT_POLICY=PASSIVE (set
before Python starts) fixes that (3.6 s/epoch). The thread count changes
results only through float summation order.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import torch

K = 10
GROUPS = ("overall", "head", "tail", "cold")
COLD_MAX = 5  # eval-v1 §3: the cold group's targets have at most this many training interactions

# ---------------------------------------------------------------------------
# data


class Data:
    """An analyze output as eval-v1 sees it: dense item indices 0..N-1 in item
    id order, users in user id order, training parts, targets, groups."""

    def __init__(self, path: str):
        seqs = pq.read_table(os.path.join(path, "sequences.parquet")).to_pydict()
        order = sorted(range(len(seqs["user_id"])), key=lambda r: seqs["user_id"][r])
        self.user_ids = [seqs["user_id"][r] for r in order]
        raw = [seqs["item_ids"][r] for r in order]
        # eval-v1 §4: the catalog is every item occurring in the interactions.
        self.item_ids = np.array(sorted({i for s in raw for i in s}), dtype=np.int64)
        index = {int(i): k for k, i in enumerate(self.item_ids)}
        self.n_items = len(self.item_ids)
        self.items = [np.array([index[i] for i in s], dtype=np.int64) for s in raw]
        self.evaluated = np.array([len(s) >= 3 for s in self.items])
        self.train_len = np.array([len(s) - 2 if len(s) >= 3 else len(s) for s in self.items])

        # eval-v1 §3: popularity in the training parts; head = first ceil(0.2 N)
        # items by popularity desc, id asc.
        pop = np.zeros(self.n_items, dtype=np.int64)
        for s, t in zip(self.items, self.train_len):
            np.add.at(pop, s[:t], 1)
        self.train_pop = pop
        self.pop_order = np.lexsort((np.arange(self.n_items), -pop))  # pop desc, index (= id) asc
        n_head = math.ceil(0.2 * self.n_items)
        self.is_tail = np.ones(self.n_items, dtype=bool)
        self.is_tail[self.pop_order[:n_head]] = False
        # eval-v1 §3 (2026-12-06): a case is cold when its target has at most
        # COLD_MAX training interactions (0 included), whatever its head/tail group.
        self.is_cold = pop <= COLD_MAX
        self._cross_check(path)

    def _cross_check(self, path: str) -> None:
        """Our split and groups must be the analyze stage's (split.parquet, item_stats.eval_group)."""
        split = pq.read_table(os.path.join(path, "split.parquet")).to_pydict()
        by_user = {u: r for r, u in enumerate(split["user_id"])}
        for u, uid in enumerate(self.user_ids):
            r = by_user[uid]
            assert split["train_length"][r] == self.train_len[u], f"user {uid}: train_length differs"
            assert bool(split["evaluated"][r]) == bool(self.evaluated[u]), f"user {uid}: evaluated differs"
            if self.evaluated[u]:
                assert split["valid_item"][r] == self.item_ids[self.items[u][-2]]
                assert split["test_item"][r] == self.item_ids[self.items[u][-1]]
        stats_path = os.path.join(path, "item_stats.parquet")
        if os.path.exists(stats_path):
            st = pq.read_table(stats_path).to_pydict()
            if "eval_group" in st:
                index = {int(i): k for k, i in enumerate(self.item_ids)}
                for iid, g in zip(st["item_id"], st["eval_group"]):
                    if iid in index and g is not None:
                        assert (g == "tail") == bool(self.is_tail[index[iid]]), f"item {iid}: group differs"

    def history(self, u: int, phase: str) -> np.ndarray:
        t = self.train_len[u]
        return self.items[u][: t if phase == "valid" else t + 1]

    def target(self, u: int, phase: str) -> int:
        t = self.train_len[u]
        return int(self.items[u][t if phase == "valid" else t + 1])

    def summary(self) -> dict:
        ev = np.flatnonzero(self.evaluated)
        return {
            "users": len(self.user_ids),
            "evaluated_users": int(len(ev)),
            "catalog_items": int(self.n_items),
            "head_items": int((~self.is_tail).sum()),
            "tail_items": int(self.is_tail.sum()),
            "train_interactions": int(self.train_len.sum()),
            "test_targets_head_tail": [
                int(sum(not self.is_tail[self.target(u, "test")] for u in ev)),
                int(sum(bool(self.is_tail[self.target(u, "test")]) for u in ev)),
            ],
            "valid_targets_head_tail": [
                int(sum(not self.is_tail[self.target(u, "valid")] for u in ev)),
                int(sum(bool(self.is_tail[self.target(u, "valid")]) for u in ev)),
            ],
            "cold_items": int(self.is_cold.sum()),
            "test_targets_cold": int(sum(bool(self.is_cold[self.target(u, "test")]) for u in ev)),
            "valid_targets_cold": int(sum(bool(self.is_cold[self.target(u, "valid")]) for u in ev)),
        }


# ---------------------------------------------------------------------------
# eval-v1 sampled negatives: SplitMix64 exactly as crates/train/src/eval.rs

M64 = (1 << 64) - 1
GOLDEN_GAMMA = 0x9E3779B97F4A7C15


def mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


class SplitMix64:
    def __init__(self, seed: int):
        self.state = seed & M64

    def next_u64(self) -> int:
        self.state = (self.state + GOLDEN_GAMMA) & M64
        return mix64(self.state)

    def below(self, n: int) -> int:
        """Uniform in 0..n by Lemire's multiply-and-reject."""
        m = self.next_u64() * n
        if (m & M64) < n:
            threshold = ((1 << 64) - n) % n
            while (m & M64) < threshold:
                m = self.next_u64() * n
        return m >> 64


def sample_negatives(interacted: np.ndarray, count: int, rng: SplitMix64) -> list[int]:
    n = len(interacted)
    pool = np.flatnonzero(~interacted)
    if len(pool) <= count:
        return [int(i) for i in pool]
    if 2 * len(pool) >= n:
        drawn, taken = [], set()
        while len(drawn) < count:
            i = rng.below(n)
            if not interacted[i] and i not in taken:
                taken.add(i)
                drawn.append(i)
        return drawn
    pool = [int(i) for i in pool]
    for j in range(count):
        k = j + rng.below(len(pool) - j)
        pool[j], pool[k] = pool[k], pool[j]
    return pool[:count]


def eval_negatives(data: Data, seed: int = 42, count: int = 100) -> dict[int, np.ndarray]:
    out = {}
    for u in np.flatnonzero(data.evaluated):
        interacted = np.zeros(data.n_items, dtype=bool)
        interacted[data.items[u]] = True
        rng = SplitMix64(mix64(seed ^ mix64(int(u))))
        out[int(u)] = np.array(sample_negatives(interacted, count, rng), dtype=np.int64)
    return out


# ---------------------------------------------------------------------------
# eval-v1 full ranking


def group_metrics(ranks: np.ndarray) -> dict:
    if len(ranks) == 0:
        return {"n": 0, "hr@10": 0.0, "ndcg@10": 0.0}
    hit = ranks < K
    ndcg = np.where(hit, 1.0 / np.log2(ranks.astype(np.float64) + 2.0), 0.0)
    return {"n": int(len(ranks)), "hr@10": float(hit.mean()), "ndcg@10": float(ndcg.mean())}


def evaluate(data: Data, score_fn, phase: str, negatives: dict[int, np.ndarray], chunk: int = 256) -> dict:
    """score_fn(users, histories) -> float32 array [len(users), N]."""
    users = np.flatnonzero(data.evaluated)
    full_ranks, sampled_ranks, tail_target, cold_target = [], [], [], []
    covered = np.zeros(data.n_items, dtype=bool)
    slots = tail_slots = 0
    for c in range(0, len(users), chunk):
        us = users[c : c + chunk]
        hists = [data.history(u, phase) for u in us]
        scores = np.asarray(score_fn(us, hists), dtype=np.float32)
        assert scores.shape == (len(us), data.n_items)
        if np.isnan(scores).any():
            raise RuntimeError("NaN score: diverged model")
        for row, u in enumerate(us):
            s = scores[row]
            target = data.target(u, phase)
            cand = np.ones(data.n_items, dtype=bool)
            cand[hists[row]] = False
            t = s[target]
            others = cand.copy()
            others[target] = False
            full_ranks.append(int(np.count_nonzero(others & (s >= t))))
            neg = negatives[int(u)]
            sampled_ranks.append(int(np.count_nonzero(s[neg[neg != target]] >= t)))
            tail_target.append(bool(data.is_tail[target]))
            cold_target.append(bool(data.is_cold[target]))
            # top 10 of the candidates: score desc, ties by index (= id) asc
            idx = np.flatnonzero(cand)
            top = idx[np.argsort(-s[idx], kind="stable")[:K]]
            covered[top] = True
            slots += len(top)
            tail_slots += int(data.is_tail[top].sum())
    full_ranks = np.array(full_ranks)
    sampled_ranks = np.array(sampled_ranks)
    tail_target = np.array(tail_target, dtype=bool)
    cold_target = np.array(cold_target, dtype=bool)
    # cold cuts across head/tail (on both EVAL.md datasets it is a subset of
    # tail), so head + tail = overall but cold is counted besides them.
    grouped = lambda r: {  # noqa: E731
        "overall": group_metrics(r),
        "head": group_metrics(r[~tail_target]),
        "tail": group_metrics(r[tail_target]),
        "cold": group_metrics(r[cold_target]),
    }
    return {
        "full": grouped(full_ranks),
        "sampled": grouped(sampled_ranks),
        "coverage@10": float(covered.mean()),
        "tail_share@10": float(tail_slots / slots) if slots else 0.0,
    }


# EVAL.md's reference datasets, recognised by (catalog items, users, training
# interactions): MostPop's exact full-ranking figures ("Check your evaluator")
# and the number of cases per group (the Reference facts / Facts paragraphs).
# EVAL.md prints 6 decimals, so a figure matches within half a unit of the last.
EVAL_MD_MOSTPOP = {
    (1682, 943, 98114): {
        "name": "MovieLens-100k",
        "figures": {
            ("test", "overall", "hr@10"): 0.049841,
            ("test", "overall", "ndcg@10"): 0.025440,
            ("test", "head", "hr@10"): 0.107551,
            ("test", "head", "ndcg@10"): 0.054896,
            ("test", "tail", "hr@10"): 0.0,
            ("test", "tail", "ndcg@10"): 0.0,
            ("test", "cold", "hr@10"): 0.0,
            ("test", "cold", "ndcg@10"): 0.0,
            ("valid", "overall", "hr@10"): 0.063627,
            ("valid", "overall", "ndcg@10"): 0.032743,
        },
        # EVAL.md gives no validation cold count for MovieLens-100k.
        "counts": {
            ("test", "overall"): 943,
            ("test", "head"): 437,
            ("test", "tail"): 506,
            ("test", "cold"): 26,
            ("valid", "head"): 517,
            ("valid", "tail"): 426,
        },
    },
    (4344, 8317, 41858): {
        "name": "Amazon Scientific",
        "figures": {
            ("test", "overall", "hr@10"): 0.024528,
            ("test", "overall", "ndcg@10"): 0.016705,
            ("test", "head", "hr@10"): 0.062963,
            ("test", "head", "ndcg@10"): 0.042881,
            ("test", "tail", "hr@10"): 0.0,
            ("test", "tail", "ndcg@10"): 0.0,
            ("test", "cold", "hr@10"): 0.0,
            ("test", "cold", "ndcg@10"): 0.0,
            ("valid", "overall", "hr@10"): 0.033906,
            ("valid", "overall", "ndcg@10"): 0.018682,
        },
        "counts": {
            ("test", "overall"): 8317,
            ("test", "head"): 3240,
            ("test", "tail"): 5077,
            ("test", "cold"): 2913,
            ("valid", "head"): 3749,
            ("valid", "tail"): 4568,
            ("valid", "cold"): 2481,
        },
    },
}


def mostpop_check(data: Data, negatives) -> dict:
    """EVAL.md "Check your evaluator": MostPop with popularity ties broken by
    item id ascending must reproduce EVAL.md's figures exactly on its reference
    datasets (MovieLens-100k, Amazon Scientific). The case counts per group are
    checked too: a wrong split or group (a cold threshold of < 5 instead of
    <= 5, say) can leave MostPop's figures on a small group unchanged, at 0,
    while every model's figures on that group move. Any other dataset is
    evaluated but not checked (reproduced_eval_md false)."""
    scores = np.zeros(data.n_items, dtype=np.float32)
    scores[data.pop_order] = np.arange(data.n_items, 0, -1, dtype=np.float32)
    fn = lambda us, hs: np.tile(scores, (len(us), 1))  # noqa: E731
    test = evaluate(data, fn, "test", negatives)
    valid = evaluate(data, fn, "valid", negatives)
    ref = EVAL_MD_MOSTPOP.get((int(data.n_items), len(data.user_ids), int(data.train_len.sum())))
    if ref is not None:
        for (phase, group), want in ref["counts"].items():
            got = (test if phase == "test" else valid)["full"][group]["n"]
            if got != want:
                raise AssertionError(f"{ref['name']} {phase} {group}: {got} cases, EVAL.md says {want}")
        for (phase, group, metric), want in ref["figures"].items():
            got = (test if phase == "test" else valid)["full"][group][metric]
            if abs(got - want) > 5e-7:
                raise AssertionError(
                    f"{ref['name']} MostPop {phase} {group} {metric}: got {got:.6f}, EVAL.md says {want:.6f}"
                )
    return {
        "reproduced_eval_md": ref is not None,
        "dataset": ref["name"] if ref else None,
        "test": test,
        "valid": valid,
    }


# ---------------------------------------------------------------------------
# model (pmixer/SASRec.pytorch)


class PointWiseFeedForward(torch.nn.Module):
    def __init__(self, d: int, dropout: float):
        super().__init__()
        self.w1 = torch.nn.Linear(d, d)
        self.drop1 = torch.nn.Dropout(dropout)
        self.relu = torch.nn.ReLU()
        self.w2 = torch.nn.Linear(d, d)
        self.drop2 = torch.nn.Dropout(dropout)

    def forward(self, x):
        return x + self.drop2(self.w2(self.relu(self.drop1(self.w1(x)))))


class SASRec(torch.nn.Module):
    def __init__(self, n_items: int, d: int, blocks: int, heads: int, maxlen: int, dropout: float):
        super().__init__()
        self.item_emb = torch.nn.Embedding(n_items + 1, d, padding_idx=0)
        self.pos_emb = torch.nn.Embedding(maxlen, d)
        self.emb_dropout = torch.nn.Dropout(dropout)
        self.attn_ln = torch.nn.ModuleList([torch.nn.LayerNorm(d, eps=1e-8) for _ in range(blocks)])
        self.attn = torch.nn.ModuleList([torch.nn.MultiheadAttention(d, heads, dropout) for _ in range(blocks)])
        self.fwd_ln = torch.nn.ModuleList([torch.nn.LayerNorm(d, eps=1e-8) for _ in range(blocks)])
        self.fwd = torch.nn.ModuleList([PointWiseFeedForward(d, dropout) for _ in range(blocks)])
        self.last_ln = torch.nn.LayerNorm(d, eps=1e-8)
        self.maxlen = maxlen
        # pmixer: xavier_normal_ on every parameter that accepts it (matrices,
        # embeddings); vectors keep PyTorch's defaults.
        for p in self.parameters():
            if p.dim() >= 2:
                torch.nn.init.xavier_normal_(p.data)

    def feats(self, seqs: torch.Tensor) -> torch.Tensor:
        """seqs: [B, L] item indices (1..N, 0 = padding, left-padded) -> [B, L, d].

        L is maxlen, as pmixer pads; a narrower (trimmed) batch keeps the
        positions of the right-aligned slots: maxlen - L .. maxlen - 1."""
        x = self.item_emb(seqs) * (self.item_emb.embedding_dim**0.5)
        positions = torch.arange(self.maxlen - seqs.shape[1], self.maxlen).unsqueeze(0).expand_as(seqs)
        x = self.emb_dropout(x + self.pos_emb(positions))
        keep = (seqs != 0).unsqueeze(-1).to(x.dtype)
        x = x * keep
        L = seqs.shape[1]
        causal = ~torch.tril(torch.ones((L, L), dtype=torch.bool))
        for i in range(len(self.attn)):
            x = x.transpose(0, 1)  # [L, B, d]
            q = self.attn_ln[i](x)
            out, _ = self.attn[i](q, x, x, attn_mask=causal, need_weights=False)
            x = (q + out).transpose(0, 1)
            x = self.fwd[i](self.fwd_ln[i](x))
            x = x * keep
        return self.last_ln(x)

    def forward(self, seqs, pos, neg):
        f = self.feats(seqs)
        return (f * self.item_emb(pos)).sum(-1), (f * self.item_emb(neg)).sum(-1)

    @torch.no_grad()
    def score_all(self, seqs: torch.Tensor) -> torch.Tensor:
        """Scores of items 1..N for the last position of each sequence: [B, N]."""
        last = self.feats(seqs)[:, -1, :]
        return last @ self.item_emb.weight[1:].T


def left_pad(hist: np.ndarray, maxlen: int) -> np.ndarray:
    out = np.zeros(maxlen, dtype=np.int64)
    h = hist[-maxlen:] + 1  # dense index -> model index (0 = padding)
    out[maxlen - len(h) :] = h
    return out


class Sampler:
    """pmixer's sample_function: for a user's training part, the last maxlen
    (input, next item) pairs, and per position a negative not in the training part."""

    def __init__(self, data: Data, maxlen: int, rng: np.random.Generator):
        self.maxlen, self.rng, self.n = maxlen, rng, data.n_items
        self.train = [data.items[u][: data.train_len[u]] + 1 for u in range(len(data.items))]
        self.train_set = [set(t.tolist()) for t in self.train]
        self.users = np.array([u for u, t in enumerate(self.train) if len(t) > 1])

    def batch(self, us: np.ndarray, trim: bool = False):
        """Inputs, positives and negatives [B, maxlen]; with trim, [B, W] for
        the batch's longest input W (tailforge's batch width)."""
        L = self.maxlen
        if trim:
            L = max(min(len(self.train[u]) - 1, self.maxlen) for u in us)
        seq = np.zeros((len(us), L), dtype=np.int64)
        pos = np.zeros((len(us), L), dtype=np.int64)
        neg = np.zeros((len(us), L), dtype=np.int64)
        for r, u in enumerate(us):
            t = self.train[u]
            x, y = t[:-1][-L:], t[1:][-L:]
            seq[r, L - len(x) :] = x
            pos[r, L - len(y) :] = y
            ts = self.train_set[u]
            negs = self.rng.integers(1, self.n + 1, size=len(y))
            for j in range(len(negs)):
                while negs[j] in ts:
                    negs[j] = self.rng.integers(1, self.n + 1)
            neg[r, L - len(y) :] = negs
        return torch.from_numpy(seq), torch.from_numpy(pos), torch.from_numpy(neg)


# ---------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="tailforge analyze output directory")
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--patience", type=int, default=10, help="stop after this many evaluations without a better validation NDCG@10 (0: never)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", default="metrics.json")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--heads", type=int, default=1)
    ap.add_argument("--maxlen", type=int, default=200)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument(
        "--length-buckets",
        type=int,
        default=1,
        help="as tailforge's train.length_buckets: >1 sorts pools of K batches' worth of shuffled users by length"
        " and pads each batch only to its longest sequence (pmixer: 1, every batch padded to maxlen)."
        " Unlike tailforge, pmixer's attention also attends to padding keys, so trimming changes its model slightly.",
    )
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    load_start = os.getloadavg()

    data = Data(args.data)
    negatives = eval_negatives(data)
    check = mostpop_check(data, negatives)
    print(
        f"data: {data.summary()}\nMostPop check: test NDCG@10 {check['test']['full']['overall']['ndcg@10']:.6f}"
        f" (reproduces EVAL.md: {check['reproduced_eval_md']}{', ' + check['dataset'] if check['dataset'] else ''})",
        file=sys.stderr,
    )

    model = SASRec(data.n_items, args.hidden, args.blocks, args.heads, args.maxlen, args.dropout)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.98))
    bce = torch.nn.BCEWithLogitsLoss()
    sampler = Sampler(data, args.maxlen, rng)

    def score_fn(us, hists):
        seqs = torch.from_numpy(np.stack([left_pad(h, args.maxlen) for h in hists]))
        return model.score_all(seqs).numpy()

    def run_eval(phase):
        model.eval()
        t0 = time.perf_counter()
        r = evaluate(data, score_fn, phase, negatives)
        model.train()
        return r, time.perf_counter() - t0

    epoch_seconds, curve = [], []
    best = {"ndcg": -1.0, "epoch": 0, "state": None, "valid": None}
    since_best = 0
    epoch = 0
    for epoch in range(1, args.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        perm = rng.permutation(sampler.users)
        batch_users = [perm[b : b + args.batch] for b in range(0, len(perm), args.batch)]
        if args.length_buckets > 1:
            pool = args.batch * args.length_buckets
            batch_users = []
            for p in range(0, len(perm), pool):
                ordered = sorted(perm[p : p + pool], key=lambda u: -len(sampler.train[u]))
                batch_users += [np.array(ordered[b : b + args.batch]) for b in range(0, len(ordered), args.batch)]
            batch_users = [batch_users[i] for i in rng.permutation(len(batch_users))]
        total, batches = 0.0, 0
        for us in batch_users:
            seq, pos, neg = sampler.batch(us, trim=args.length_buckets > 1)
            pos_logits, neg_logits = model(seq, pos, neg)
            mask = pos != 0
            loss = bce(pos_logits[mask], torch.ones_like(pos_logits[mask])) + bce(
                neg_logits[mask], torch.zeros_like(neg_logits[mask])
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
            batches += 1
        epoch_seconds.append(time.perf_counter() - t0)
        if epoch % args.eval_every == 0 or epoch == args.epochs:
            valid, eval_s = run_eval("valid")
            nd = valid["full"]["overall"]["ndcg@10"]
            curve.append({"epoch": epoch, "loss": total / batches, "valid_ndcg@10": nd, "valid_hr@10": valid["full"]["overall"]["hr@10"], "eval_seconds": eval_s})
            print(f"epoch {epoch}: loss {total / batches:.4f}  valid NDCG@10 {nd:.4f} HR@10 {valid['full']['overall']['hr@10']:.4f}  {epoch_seconds[-1]:.2f} s/epoch, eval {eval_s:.1f} s", file=sys.stderr)
            if nd > best["ndcg"]:
                best = {"ndcg": nd, "epoch": epoch, "state": copy.deepcopy(model.state_dict()), "valid": valid}
                since_best = 0
            else:
                since_best += 1
                if args.patience and since_best >= args.patience:
                    print(f"early stop: no better validation NDCG@10 in {args.patience} evaluations", file=sys.stderr)
                    break

    model.load_state_dict(best["state"])
    test, _ = run_eval("test")
    result = {
        "model": "SASRec (PyTorch, pmixer/SASRec.pytorch port)",
        "protocol": "eval-v1",
        "data": os.path.abspath(args.data),
        "data_summary": data.summary(),
        "config": {k: v for k, v in vars(args).items() if k not in ("data", "out")},
        "epochs_run": epoch,
        "best_epoch": best["epoch"],
        "seconds_per_epoch": {
            "mean": statistics.fmean(epoch_seconds),
            "median": statistics.median(epoch_seconds),
            "min": min(epoch_seconds),
            "note": "training only (batch sampling, forward, backward, Adam); evaluation excluded",
        },
        "epoch_seconds": epoch_seconds,
        "batches_per_epoch": math.ceil(len(sampler.users) / args.batch),
        "test_ndcg@10": {g: test["full"][g]["ndcg@10"] for g in GROUPS},
        "valid_ndcg@10": {g: best["valid"]["full"][g]["ndcg@10"] for g in GROUPS},
        "test": test,
        "valid": best["valid"],
        "curve": curve,
        "mostpop_check": check,
        "env": {
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "threads": torch.get_num_threads(),
            "nproc": os.cpu_count(),
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
        },
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    t = result["test_ndcg@10"]
    print(
        f"best epoch {best['epoch']} of {epoch}; test NDCG@10 overall {t['overall']:.4f} head {t['head']:.4f} tail {t['tail']:.4f}"
        f" cold {t['cold']:.4f};"
        f" {result['seconds_per_epoch']['median']:.2f} s/epoch (median); wrote {args.out}"
    )


if __name__ == "__main__":
    main()
