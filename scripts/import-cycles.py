#!/usr/bin/env python3
"""Lists import cycles between the crate's source files (`crate::`/`super::`
paths resolved to files). Exit 1 when there is one. Run from the repo root."""
import os, re, sys

SRC = "src"
files = {}
for root, _, names in os.walk(SRC):
    for n in names:
        if n.endswith(".rs") and not n.endswith("_tests.rs") and n != "tests.rs":
            files[os.path.join(root, n)] = None

def module_of(path):
    rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    if rel in (["lib"], ["main"]):
        return []
    return rel

mods = {tuple(module_of(f)): f for f in files}

def resolve(parts):
    # longest prefix that names a file
    for i in range(len(parts), 0, -1):
        f = mods.get(tuple(parts[:i]))
        if f:
            return f
    return None

def strip_tests(text):
    i = text.find("#[cfg(test)]\nmod tests {")
    return text if i < 0 else text[:i]

edges = {f: set() for f in files}
for f in files:
    me = module_of(f)
    text = strip_tests(open(f).read())
    text = re.sub(r"(?m)^\s*//.*$", "", text)  # comments and doc comments are not imports
    for m in re.finditer(r"\b(crate|super)((?:::\w+)+)", text):
        parts = m.group(2).strip(":").split("::")
        if m.group(1) == "crate":
            target = resolve(parts)
        else:
            base = me[:-1] if not f.endswith("mod.rs") else me[:-1]
            target = resolve(base + parts)
        if target and target != f:
            edges[f].add(target)
    # `use super::{a, b}` groups
    for m in re.finditer(r"use (crate|super)::\{([^}]*)\}", text):
        for item in m.group(2).split(","):
            item = item.strip().split("::")[0].strip()
            if not item or not re.match(r"^\w+$", item):
                continue
            base = [] if m.group(1) == "crate" else me[:-1]
            target = resolve(base + [item])
            if target and target != f:
                edges[f].add(target)

    # a parent's uses of its own child modules (`shape::Peek`) are imports too
    for child, cf in mods.items():
        if len(child) == len(me) + 1 and list(child[:-1]) == me and cf != f:
            body = re.sub(r"(?m)^\s*(pub )?mod \w+;", "", text)
            if re.search(r"\b%s::" % child[-1], body):
                edges[f].add(cf)

def is_child(a, b):
    return False

cycles = set()
for a in files:
    for b in edges[a]:
        if is_child(a, b):
            continue
        # is there a path b -> a?
        seen, stack = set(), [b]
        while stack:
            x = stack.pop()
            if x == a:
                cycles.add(tuple(sorted((a, b))))
                break
            if x in seen:
                continue
            seen.add(x)
            stack.extend(y for y in edges[x] if not is_child(x, y))
for a, b in sorted(cycles):
    print(f"cycle: {a} <-> {b}")
sys.exit(1 if cycles else 0)
