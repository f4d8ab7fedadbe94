#!/usr/bin/env python3
"""Writes a sequence file (one line per user: `user item item ...`, oldest first, as the
SASRec-style datasets in ../shared/data/sequences are) as a user,item,time CSV that a recipe
reads: the time is the item's position, so order and ties are exactly the file's.

    python3 scripts/sequences_csv.py ../shared/data/sequences/Beauty.txt OUT_DIR

OUT_DIR gets events.csv and recipe.toml (`kvrec-finetune fit OUT_DIR/recipe.toml`)."""
import csv
import pathlib
import sys

source, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
with source.open() as lines, (out / "events.csv").open("w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["user", "item", "time"])
    for line in lines:
        user, *items = line.split()
        for position, item in enumerate(items):
            writer.writerow([user, item, position])
(out / "recipe.toml").write_text(
    f"# {source.name}: one user per line, items oldest first (scripts/sequences_csv.py)\n"
    '[source]\ncsv = { events = "events.csv" }\n\n'
    '[interactions]\nsql = "SELECT user, item, CAST(time AS INTEGER) AS time FROM events"\n'
)
