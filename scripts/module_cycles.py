"""Circles in the module graph of each crate given (its `src` folder): module A uses B when
A's code (comments and `#[cfg(test)] mod tests` left out) names `crate::B…`, `super::B…` or
`super::{B, …}`. A module naming its own ancestor counts; a parent declaring its children does
not. Prints each crate's circles and exits 1 when there is any.

    python3 scripts/module_cycles.py src core/src llm/src finetune/src
"""
import os
import re
import sys
from collections import defaultdict


def modules(src):
    """Module path (`a::b`, '' for the crate root) → file."""
    found = {}
    for folder, _, files in os.walk(src):
        for name in files:
            if name.endswith(".rs"):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, src)[:-3].split(os.sep)
                if parts[-1] in ("mod", "lib", "main"):
                    parts = parts[:-1]
                found["::".join(parts)] = path
    return found


def named_paths(text):
    """(`crate` | `super`, [segments]) of every path the code names."""
    paths = [(m.group(1), m.group(2).strip(":").split("::"))
             for m in re.finditer(r"\b(crate|super)((?:::\w+)+)", text)]
    for m in re.finditer(r"\b(crate|super)((?:::\w+)*)::\{([^}]*)\}", text):
        prefix = m.group(2).strip(":").split("::") if m.group(2) else []
        for item in m.group(3).split(","):
            item = item.strip().split(" ")[0]
            if item and item != "self":
                paths.append((m.group(1), prefix + item.split("::")))
    return paths


def graph(src):
    mods = modules(src)
    edges = defaultdict(set)
    for module, path in mods.items():
        text = open(path, encoding="utf-8").read()
        text = re.sub(r"(?m)^\s*//.*$", "", text)
        text = re.sub(r"#\[cfg\(test\)\]\s*mod tests\s*\{.*", "", text, flags=re.S)
        here = module.split("::") if module else []
        for kind, segments in named_paths(text):
            parts = segments if kind == "crate" else here[:-1] + segments
            target = next(("::".join(parts[:n]) for n in range(len(parts), 0, -1)
                           if "::".join(parts[:n]) in mods), None)
            if target and target != module and not target.startswith(module + "::" if module else "\0"):
                edges[module].add(target)
    return edges


def circles(edges):
    found, seen = [], set()

    def walk(node, stack):
        for target in sorted(edges.get(node, ())):
            if target in stack:
                circle = stack[stack.index(target):] + [target]
                if frozenset(circle) not in seen:
                    seen.add(frozenset(circle))
                    found.append(circle)
            elif len(stack) < 16:
                walk(target, stack + [target])

    for node in sorted(edges):
        walk(node, [node])
    return found


def main():
    bad = False
    for src in sys.argv[1:]:
        found = circles(graph(src))
        print(f"{src}: {len(found)} circles")
        for circle in found:
            print("   " + " -> ".join(circle))
        bad |= bool(found)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
