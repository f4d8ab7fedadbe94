#!/usr/bin/env python3
"""Held-out HR@1 of a fit's model with co-occurrence added at several weights, offline.

    /usr/bin/python3 scripts/co_watch_blend.py FITDIR [EXTENSION]

Scores FITDIR/data/test.jsonl with FITDIR/model.gguf through the SQLite extension
(recommend_each), counts co-occurrence on FITDIR/data/train_sequences.jsonl at the settings
FITDIR/report.md names, and prints HR@1 of `log p + w * ln(1 + co-watch)` for each weight w,
with each item's co-watched items cut to the K strongest (0: all). This is the experiment
behind fit's co-watch prior (docs/experiments/2026-12-07-co-watch-prior.md); fit itself picks
the weight on validation requests, never on these. Ties go to the candidate listed first.
Needs a Python whose sqlite3 loads extensions (Debian's /usr/bin/python3).
"""
import json
import math
import os
import re
import sqlite3
import sys
from collections import defaultdict

WEIGHTS = [0, 0.25, 0.5, 1, 1.5, 2, 3, 5, 8]
KEEP = [0, 128, 64, 32]


def main():
    fit = sys.argv[1]
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/kvrec/target"))
    extension = sys.argv[2] if len(sys.argv) > 2 else f"{target}/debug/libkvrec.so"
    report = open(f"{fit}/report.md").read()
    m = re.search(r"co-occurrence \(window (\d+), decay ([\d.]+), norm ([\d.]+)\)", report)
    window, decay, norm = int(m.group(1)), float(m.group(2)), float(m.group(3))

    pairs, popularity = defaultdict(int), defaultdict(int)
    for line in open(f"{fit}/data/train_sequences.jsonl"):
        items = json.loads(line)["items"]
        for i, a in enumerate(items):
            popularity[a] += 1
            for b in items[i + 1 : i + 1 + window]:
                pairs[(a, b)] += 1
                pairs[(b, a)] += 1
    neighbours = defaultdict(list)
    for (a, b), count in pairs.items():
        neighbours[a].append((count, -b))

    ids_path = f"{fit}/data/item_ids.json"
    app = json.load(open(ids_path)) if os.path.exists(ids_path) else None
    to_app = (lambda k: app[k - 1]) if app else (lambda k: k)
    to_dense = {to_app(k): k for k in range(1, len(app) + 1)} if app else None

    con = sqlite3.connect(":memory:")
    con.enable_load_extension(True)
    con.load_extension(extension)
    con.execute("SELECT kvrec_load_model('m', ?)", (f"{fit}/model.gguf",))
    requests = []
    for line in open(f"{fit}/data/test.jsonl"):
        r = json.loads(line)
        as_app = lambda xs: json.dumps([dict(x, id=to_app(x["id"])) for x in xs])
        rows = con.execute(
            "SELECT id, score FROM recommend_each('m', ?, ?, ?)",
            (json.dumps(r["user"]), as_app(r["history"]), as_app(r["candidates"])),
        ).fetchall()
        scores = {(to_dense[i] if to_dense else i): s for i, s in rows}
        candidates = [c["id"] for c in r["candidates"]]
        history = [h["id"] for h in r["history"]]
        requests.append((history, r["positive"], candidates, [scores[c] for c in candidates]))

    print(f"{fit}: {len(requests)} requests, co-occurrence window {window} decay {decay} norm {norm}")
    for keep in KEEP:
        if keep:
            kept = {a: {-b: c for c, b in sorted(l, reverse=True)[:keep]} for a, l in neighbours.items()}
            pair = lambda h, c: kept.get(h, {}).get(c, 0)
        else:
            pair = lambda h, c: pairs.get((h, c), 0)
        terms = []
        for history, _, candidates, _ in requests:
            co = [
                sum(decay**age * pair(h, c) for age, h in enumerate(reversed(history)))
                / (popularity.get(c, 0) + 1) ** norm
                for c in candidates
            ]
            terms.append([math.log1p(x) for x in co])
        line = []
        for w in WEIGHTS:
            hits = 0
            for (_, positive, candidates, model), t in zip(requests, terms):
                blended = [m + w * x for m, x in zip(model, t)]
                best = max(range(len(candidates)), key=lambda i: (blended[i], -i))
                hits += candidates[best] == positive
            line.append(f"{w}: {hits / len(requests):.4f}")
        print(f"K {keep or 'all'}: " + ", ".join(line))


if __name__ == "__main__":
    main()
