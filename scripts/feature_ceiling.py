#!/usr/bin/env python3
"""How far the candidate keys alone can go: a LightGBM lambdarank model over the keys that
`kvrec-finetune data --candidate-keys genres,popularity,co_watch` writes, trained on
train.jsonl and scored on test.jsonl with the same HR@1 / NDCG@3 as `eval`.

This is an analysis aid, not part of kvrec: it tells whether a model that reads these keys
could reach a quality target at all. Needs `pip install lightgbm scikit-learn numpy`.

    python3 scripts/feature_ceiling.py data/ml1m
"""
import json
import math
import sys
from collections import Counter

import lightgbm as lgb
import numpy as np


def features(instance):
    genres = Counter(g for h in instance["history"] for g in h.get("genres", "").split("|") if g)
    n = max(1, len(instance["history"]))
    rows = []
    for c in instance["candidates"]:
        overlap = sum(genres[g] for g in c.get("genres", "").split("|") if g) / n
        rows.append([c.get("co_watch", 0), math.log1p(c.get("popularity", 0)), overlap])
    return rows


def load(path):
    x, y, groups = [], [], []
    with open(path) as f:
        for line in f:
            instance = json.loads(line)
            rows = features(instance)
            x += rows
            y += [int(c["id"] == instance["positive"]) for c in instance["candidates"]]
            groups.append(len(rows))
    return np.array(x, dtype=float), np.array(y), groups


def metrics(scores, y, groups):
    hr1 = ndcg3 = 0.0
    i = 0
    for n in groups:
        s, t = scores[i : i + n], y[i : i + n]
        pos = s[t == 1][0]
        # Ties count as the expected rank, as kvrec's eval does.
        better, tied = (s > pos).sum(), (s == pos).sum() - 1
        rank = 1 + better + tied / 2
        hr1 += rank == 1 if tied == 0 else max(0.0, 1 - better) / (tied + 1)
        ndcg3 += 1 / math.log2(rank + 1) if rank <= 3 else 0
        i += n
    return hr1 / len(groups), ndcg3 / len(groups)


def main():
    folder = sys.argv[1]
    xtr, ytr, gtr = load(f"{folder}/train.jsonl")
    xte, yte, gte = load(f"{folder}/test.jsonl")
    print("co_watch alone   HR@1 %.3f NDCG@3 %.3f" % metrics(xte[:, 0] + 1e-6 * xte[:, 1], yte, gte))
    model = lgb.LGBMRanker(n_estimators=300, learning_rate=0.05, num_leaves=15, verbose=-1)
    model.fit(xtr, ytr, group=gtr)
    print("LightGBM on keys HR@1 %.3f NDCG@3 %.3f" % metrics(model.predict(xte), yte, gte))


if __name__ == "__main__":
    main()
