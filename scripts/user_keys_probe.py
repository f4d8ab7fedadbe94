#!/usr/bin/env python3
"""Measures what the paper's user keys (gender, age, occupation) add to the sequence stage,
before any code renders them: each key value becomes a pseudo-item, an id that is no movie of
ML-1M (so never a candidate), and three of them go ahead of every training sequence and every
request's history. A model trained on that data with a template of `max_history` 23 reads the
user's keys and the same 20 items as a served request. A probe, not the product path: a served
request's history carries no such ids (docs/experiments/2026-12-05-protocol-shaped-targets.md).

    python3 scripts/user_keys_probe.py DATA_DIR OUT_DIR [MOVIES_DAT]

DATA_DIR is a folder `kvrec-finetune data` wrote (train_sequences.jsonl, train.jsonl,
test.jsonl); OUT_DIR gets the same three files with the keys in front.
"""
import json
import os
import sys


def main():
    src, dst = sys.argv[1], sys.argv[2]
    movies_dat = sys.argv[3] if len(sys.argv) > 3 else os.path.join(
        os.path.dirname(__file__), "..", "..", "shared", "data", "movielens",
        "ml-1m-head2999", "movies.dat")
    with open(movies_dat, encoding="latin-1") as f:
        movies = {int(line.split("::")[0]) for line in f}
    unused = [i for i in range(1, max(movies) + 1) if i not in movies]
    users = {}
    with open(os.path.join(src, "train.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            users[row["user_id"]] = row["user"]
    # Sorted, so every draw's data maps each value to the same id.
    values = sorted({f"{k}={v}" for u in users.values() for k, v in u.items()})
    if len(values) > len(unused):
        sys.exit(f"{len(values)} key values but only {len(unused)} unused ids below the largest movie id")
    key_id = {value: unused[i] for i, value in enumerate(values)}

    def keys(user):
        return [key_id[f"{k}={user[k]}"] for k in ("gender", "age", "occupation")]

    os.makedirs(dst, exist_ok=True)
    with open(os.path.join(src, "train_sequences.jsonl")) as f, \
            open(os.path.join(dst, "train_sequences.jsonl"), "w") as out:
        for line in f:
            seq = json.loads(line)
            seq["items"] = keys(users[seq["user_id"]]) + seq["items"]
            if seq.get("times"):
                seq["times"] = seq["times"][:1] * 3 + seq["times"]
            out.write(json.dumps(seq) + "\n")
    for name in ("train.jsonl", "test.jsonl"):
        with open(os.path.join(src, name)) as f, open(os.path.join(dst, name), "w") as out:
            for line in f:
                row = json.loads(line)
                row["history"] = [{"id": i} for i in keys(row["user"])] + row["history"]
                out.write(json.dumps(row) + "\n")
    print(f"{len(values)} key values on ids {unused[:len(values)]}")


if __name__ == "__main__":
    main()
