#!/usr/bin/env python3
"""Estimates how well any ranker can do on a generated shape (scripts/synthetic_sequences.py):
HR@1 on a fit's held-out requests of a ranker that knows the generator's topics, series and
popularity weights, and reads the user's topics off the history. A model and co-occurrence
that both sit near it have nothing left to separate them.

Two figures: reading the request's history (the 20 items before the target that the protocol
gives every ranker, the model included), and reading the user's whole training history, which
no request carries: the second only says how much the 20-item window costs.

    python3 scripts/synthetic_ceiling.py SHAPE FIT_DIR [--seed N]

FIT_DIR is `kvrec-finetune fit`'s folder for that shape's recipe (its data/ and run/).
"""
import argparse
import collections
import json
import pathlib
import random

import synthetic_sequences as generator


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("shape", choices=sorted(generator.SHAPES))
    parser.add_argument("fit", type=pathlib.Path)
    parser.add_argument("--seed", type=int, default=7, help="the seed the data was generated with")
    args = parser.parse_args()
    p = generator.SHAPES[args.shape]
    topics, successor, popularity = generator.catalog(p, random.Random(args.seed))
    topic_of, weight = {}, {}
    for t, (members, weights) in enumerate(zip(topics, popularity)):
        for item, w in zip(members, weights):
            topic_of[item], weight[item] = t, w
    # The data's item ids are positions in its id map of the recipe's text ids ("i123").
    text_ids = json.loads((args.fit / "run" / "item_ids.json").read_text())
    item = lambda token: int(text_ids[token - 1][1:])
    histories = {}
    with (args.fit / "data" / "train_sequences.jsonl").open() as f:
        for line in f:
            s = json.loads(line)
            histories[s["user_id"]] = [item(i) for i in s["items"]]
    hits = collections.Counter()
    requests = 0
    tiebreak = {"request": random.Random(0), "whole": random.Random(0)}
    with (args.fit / "data" / "test.jsonl").open() as f:
        for line in f:
            request = json.loads(line)
            candidates = [item(c["id"]) for c in request["candidates"]]
            positive = item(request["positive"])
            shown = [item(h["id"]) for h in request["history"]]
            for reading, history in (("request", shown), ("whole", histories[request["user_id"]])):
                best = best_guess(
                    p, topics, topic_of, weight, successor, history, candidates, tiebreak[reading]
                )
                hits[reading] += best == positive
            requests += 1
    print(
        f"{args.shape}: generator-aware HR@1 {hits['request'] / requests:.4f} from the request's "
        f"history, {hits['whole'] / requests:.4f} from the whole training history, "
        f"on {requests} requests"
    )


def best_guess(p, topics, topic_of, weight, successor, history, candidates, tiebreak):
    """The candidate the generator most likely drew next after `history` (oldest first)."""
    seen, last = set(history), history[-1]
    # The walk is in the last item's topic; it stays, or moves to one the user likes.
    liked = collections.Counter(topic_of[i] for i in history)
    topic_p = {t: (1 - p["stay"]) * c / len(history) for t, c in liked.items()}
    topic_p[topic_of[last]] = topic_p.get(topic_of[last], 0.0) + p["stay"]
    follow = successor.get(last)
    follow_p = p["follow"] if follow is not None and follow not in seen else 0.0

    def probability(c):
        if c in seen:
            return 0.0
        t = topic_of[c]
        unseen = sum(weight[i] for i in topics[t] if i not in seen)
        drawn = (1 - follow_p) * topic_p.get(t, 0.0) * weight[c] / unseen
        return drawn + (follow_p if c == follow else 0.0)

    return max(candidates, key=lambda c: (probability(c), tiebreak.random()))


if __name__ == "__main__":
    main()
