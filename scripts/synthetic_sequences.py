#!/usr/bin/env python3
"""Writes a synthetic interaction log of a chosen shape, for measuring `fit`'s defaults on data
no default was tuned on (docs/RESULTS.md): events.csv (user,item,time) and recipe.toml.

    python3 scripts/synthetic_sequences.py SHAPE OUT_DIR [--seed N]

Shapes (users / items / events per user):
  series   4,000 / 2,500 / ~40  long sessions that walk through item series (episodes, albums):
           the next item is often the one after the last, so order matters more than taste
  sparse  12,000 / 15,000 / ~7  a wide shop catalog with a long tail, few events per user and
           ties (same-day purchases), where counting has little to go on
  taste    6,000 / 1,200 / ~25  taste clusters with a popularity skew and no order within a
           visit: co-occurrence's home ground

Each user likes two or three of K topics; each step stays in the topic with probability
`stay`, then takes the next item of the current item's series with probability `follow` or
else an item of the topic by a Zipf popularity. Users never repeat an item (as the protocol's
5-core data has no repeats). Deterministic for a seed.
"""
import argparse
import csv
import pathlib
import random

SHAPES = {
    # users, items, topics, mean length, stay, follow, series length, ties per day
    "series": dict(users=4000, items=2500, topics=25, length=40, stay=0.85, follow=0.6, series=10, per_day=1),
    "sparse": dict(users=12000, items=15000, topics=150, length=7, stay=0.7, follow=0.25, series=4, per_day=3),
    "taste": dict(users=6000, items=1200, topics=12, length=25, stay=0.8, follow=0.0, series=1, per_day=5),
}


def zipf_weights(n, rng, exponent=1.0):
    weights = [1.0 / (rank + 1) ** exponent for rank in range(n)]
    rng.shuffle(weights)
    return weights


def catalog(p, rng):
    """The items' topics, each item's successor in its series, and the popularity weights of
    each topic's items (aligned with `topics`)."""
    items = list(range(1, p["items"] + 1))
    rng.shuffle(items)
    # Topics hold consecutive runs of series; an item's successor is the next of its series.
    topics = [items[t :: p["topics"]] for t in range(p["topics"])]
    successor = {}
    for members in topics:
        for start in range(0, len(members), p["series"]):
            run = members[start : start + p["series"]]
            successor.update(zip(run, run[1:]))
    popularity = [zipf_weights(len(members), rng) for members in topics]
    return topics, successor, popularity


def generate(shape, seed):
    p = SHAPES[shape]
    rng = random.Random(seed)
    topics, successor, popularity = catalog(p, rng)
    topic_weights = zipf_weights(p["topics"], rng, exponent=0.7)
    rows = []
    for user in range(1, p["users"] + 1):
        liked = rng.choices(range(p["topics"]), weights=topic_weights, k=rng.choice([2, 3]))
        length = max(5, min(200, int(rng.expovariate(1.0 / (p["length"] - 4))) + 5))
        seen, sequence = set(), []
        topic = rng.choice(liked)
        tries = 0
        while len(sequence) < length and tries < length * 20:
            tries += 1
            if rng.random() > p["stay"]:
                topic = rng.choice(liked)
            last = sequence[-1] if sequence else None
            follow = successor.get(last) if last is not None else None
            if follow is not None and follow not in seen and rng.random() < p["follow"]:
                item = follow
            else:
                item = rng.choices(topics[topic], weights=popularity[topic])[0]
            if item in seen:
                continue
            seen.add(item)
            sequence.append(item)
        # Up to `per_day` events share a day, in the order they happened.
        day = rng.randrange(1000)
        for position, item in enumerate(sequence):
            if position and rng.random() < 1.0 / p["per_day"]:
                day += 1 + int(rng.expovariate(0.2))
            rows.append((f"u{user}", f"i{item}", day))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("shape", choices=sorted(SHAPES))
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = generate(args.shape, args.seed)
    with (args.out / "events.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["user", "item", "day"])
        writer.writerows(rows)
    (args.out / "recipe.toml").write_text(
        f"# synthetic '{args.shape}' shape, seed {args.seed} (scripts/synthetic_sequences.py)\n"
        '[source]\ncsv = { events = "events.csv" }\n\n'
        '[interactions]\nsql = "SELECT user, item, CAST(day AS INTEGER) AS time FROM events"\n'
    )
    print(f"{args.out / 'events.csv'}: {len(rows)} events")


if __name__ == "__main__":
    main()
