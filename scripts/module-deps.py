#!/usr/bin/env python3
"""Lists the import cycles among a crate's modules.

Reads every `.rs` file under a crate's `src`, takes each file as one module (`a/b.rs`
and `a/b/mod.rs` are `a::b`), and records an edge for every path that names another
module of the crate (`crate::x::y`, `super::x`, `self::x` in `use` items and in
expressions). Tests (`tests.rs`, `tests/`, and `#[cfg(test)]` modules in the file) are
left out: they may look at anything. Prints each strongly connected component of more
than one module, at the chosen depth (`--depth 1`: the crate's top-level modules), and
exits with 1 if there is one.

    scripts/module-deps.py network/src            # every file a module
    scripts/module-deps.py network/src --depth 1  # top-level modules only
"""
import argparse
import pathlib
import re
import sys


def module_of(root, path):
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts.pop()
    return tuple(parts)


def strip_tests(text):
    # Drop `#[cfg(test)] mod x { ... }` blocks: tests may import anything.
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def expand_use(tree):
    """Expands a `use` tree (`a::{b, c::{d}}`) into its paths."""
    tree = re.sub(r"\s+", "", tree)
    if "{" not in tree:
        return [tree]
    head, rest = tree.split("{", 1)
    body, depth, parts, cur = rest[:-1], 0, [], ""
    for ch in body:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        cur += ch
    parts.append(cur)
    return [p for part in parts if part for p in expand_use(head + part)]


def resolve(module, path, modules):
    segs = [s for s in path.split("::") if s]
    if not segs:
        return None
    if segs[0] == "crate":
        base, segs = (), segs[1:]
    elif segs[0] in ("super", "self"):
        base = module
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                base = base[:-1]
            segs = segs[1:]
    else:
        return None
    best = None
    for k in range(len(segs) + 1):
        cand = base + tuple(segs[:k])
        if cand in modules:
            best = cand
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("--depth", type=int, default=0)
    args = ap.parse_args()
    root = pathlib.Path(args.src)
    files = {}
    for p in root.rglob("*.rs"):
        rel = p.relative_to(root).parts
        if "tests" in rel[:-1] or p.name == "tests.rs":
            continue
        files[module_of(root, p)] = strip_tests(p.read_text())
    modules = set(files)
    edges = {m: set() for m in modules}
    for m, text in files.items():
        paths = []
        for u in re.finditer(r"\buse\s+([^;]+);", text):
            paths += expand_use(u.group(1))
        paths += re.findall(r"\b((?:crate|super|self)(?:::\w+)+)", text)
        for p in paths:
            target = resolve(m, p, modules)
            if target is not None and target != m:
                edges[m].add(target)

    def cut(m):
        return m[: args.depth] if args.depth else m

    graph = {}
    for m, ts in edges.items():
        a = cut(m)
        graph.setdefault(a, set())
        for t in ts:
            b = cut(t)
            # A module and its own parent or child are one unit at this depth.
            if a != b and not (a[: len(b)] == b or b[: len(a)] == a):
                graph[a].add(b)
            graph.setdefault(b, set())

    index, low, stack, on, sccs = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    for comp in sccs:
        names = sorted("::".join(c) or "crate" for c in comp)
        print("cycle:", ", ".join(names))
        for a in sorted(comp):
            for b in sorted(graph[a] & set(comp)):
                print(f"  {'::'.join(a)} -> {'::'.join(b)}")
    print(f"{len(graph)} modules, {sum(len(v) for v in graph.values())} edges, {len(sccs)} cycles")
    sys.exit(1 if sccs else 0)


main()
