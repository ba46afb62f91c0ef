"""Tables of benches/generate-ablation.sh: grounding per prompt, and NDCG@10
with catalog vs catalog + generated text, including the test targets whose
item has no catalog description (from the TAILFORGE_EVAL_RANKS dump; the
dump's evaluation whose overall NDCG@10 equals metrics.json's is the
reported model's)."""
import json
import math
import sys
from pathlib import Path

import pyarrow.parquet as pq

out, data, seeds = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]

print("| prompt | items | accepted | keywords grounded | rows fully grounded | description grounding p50 (p10–p90) | s/item | generated tok/s |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for name in ["grounded", "grounded-no-neighbors", "free", "free-no-neighbors"]:
    p = out / name / "summary.json"
    if not p.exists():
        continue
    s = json.loads(p.read_text())
    g = s["grounding"]
    d = g["description_share"]
    done = max(s["accepted"] + sum(s["rejected"].values()), 1)
    print(f"| {name} | {s['items']} | {s['accepted']} | {g['keywords_grounded']:.3f} | {g['rows_fully_grounded']:.3f} | "
          f"{d['p50']:.2f} ({d['p10']:.2f}–{d['p90']:.2f}) | {s['seconds'] / done:.2f} | {s['generated_tokens_per_s']:.1f} |")

items = pq.read_table(data / "items.parquet", columns=["item_id", "description"]).to_pylist()
no_desc = {str(r["item_id"]) for r in items if not r["description"]}
gen_ids = set()
for f in sorted((out / "grounded" / "generated").glob("part-*.parquet")):
    gen_ids |= {str(i) for i in pq.read_table(f, columns=["item_id"]).column("item_id").to_pylist()}
# Training arms: the directory suffix and what the table calls it.
ARMS = [("catalog", "catalog"), ("generated-no-neighbors", "+ generated, no neighbours"), ("generated", "+ generated, neighbours")]


def ndcg(rank):
    return 1.0 / math.log2(rank + 2) if rank < 10 else 0.0


def sliced(ranks_file, overall):
    """NDCG@10 on no-description targets and on targets with generated text, from the matching evaluation."""
    blocks, cur = [], None
    for line in Path(ranks_file).read_text().splitlines():
        if line.startswith("#"):
            cur = []
            blocks.append(cur)
        else:
            item, rank = line.split(",")
            cur.append((item, int(rank)))
    for b in blocks:
        if abs(sum(ndcg(r) for _, r in b) / len(b) - overall) < 1e-9:
            def mean(ids):
                v = [ndcg(r) for i, r in b if i in ids]
                return sum(v) / len(v) if v else float("nan"), len(v)
            return mean(no_desc), mean(gen_ids)
    return (float("nan"), 0), (float("nan"), 0)


print()
print("| text | seed | NDCG@10 | head | tail | cold | no description (n) | generated text (n) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for seed in seeds:
    for arm, text in ARMS:
        d = out / f"dual-{arm}-seed{seed}"
        if not (d / "metrics.json").exists():
            continue
        m = json.loads((d / "metrics.json").read_text())["test"]["full"]
        (nd, nn), (gd, gn) = sliced(str(d) + ".ranks", m["overall"]["ndcg@10"])
        print(f"| {text} | {seed} | {m['overall']['ndcg@10']:.4f} | {m['head']['ndcg@10']:.4f} | {m['tail']['ndcg@10']:.4f} | "
              f"{m['cold']['ndcg@10']:.4f} | {nd:.4f} ({nn}) | {gd:.4f} ({gn}) |")
