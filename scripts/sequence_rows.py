#!/usr/bin/env python3
"""Next-item training rows over whole training sequences, for models whose template renders
history ids (`history_id_label`): each user's training sequence (train_sequences.jsonl from
`kvrec-finetune data`) is cut into windows of up to --window items; a window's last item is the
positive among --candidates items (the rest drawn from movies the user never rated), and the
items before it are the history. With `train --history-loss` every history id is a target
too, so a window of 60 gives 60 next-item predictions for ~270 tokens instead of the ~21 of a
protocol row of ~320 tokens. Windows start at every --stride items from each --offsets value.

    python3 scripts/sequence_rows.py DATA_DIR MOVIELENS_DIR OUT.jsonl

Only training sequences are read (the test item is not in them), so no test item leaks.
"""
import argparse
import json
import random


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("movielens")
    p.add_argument("out")
    p.add_argument("--window", type=int, default=61)
    p.add_argument("--stride", type=int, default=60)
    p.add_argument("--offsets", default="0,30")
    p.add_argument("--candidates", type=int, default=10)
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args()
    rng = random.Random(a.seed)
    titles = {}
    with open(f"{a.movielens}/movies.dat", encoding="latin-1") as f:
        for line in f:
            movie, title, _ = line.rstrip("\n").split("::")
            titles[int(movie)] = title
    users = {}
    with open(f"{a.data}/train-none.jsonl") as f:
        for line in f:
            row = json.loads(line)
            users.setdefault(row["user_id"], row["request"]["user"])
    sequences = [json.loads(line) for line in open(f"{a.data}/train_sequences.jsonl")]
    universe = sorted({m for s in sequences for m in s["items"]})
    item = lambda m: {"id": m, "title": titles.get(m, f"movie {m}")}
    n = 0
    with open(a.out, "w") as out:
        for offset in map(int, a.offsets.split(",")):
            for s in sequences:
                items, rated = s["items"], set(s["items"])
                for start in range(offset, len(items) - 1, a.stride):
                    window = items[start : start + a.window]
                    if len(window) < 2:
                        continue
                    positive = window[-1]
                    negatives = []
                    while len(negatives) < a.candidates - 1:
                        m = rng.choice(universe)
                        if m not in rated and m not in negatives:
                            negatives.append(m)
                    candidates = [positive] + negatives
                    rng.shuffle(candidates)
                    row = {
                        "user_id": s["user_id"],
                        "copy": 0,
                        "augmentation": "sequence",
                        "request": {
                            "user": users[s["user_id"]],
                            "history": [item(m) for m in window[:-1]],
                            "candidates": [item(m) for m in candidates],
                        },
                        "positive": positive,
                        "target": [positive] + [m for m in candidates if m != positive],
                    }
                    out.write(json.dumps(row, separators=(",", ":")) + "\n")
                    n += 1
    print(f"{n} rows written to {a.out}")


if __name__ == "__main__":
    main()
