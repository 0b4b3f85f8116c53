#!/usr/bin/env python3
"""The import graph of cubbi_tools and the server (cubbi_server = server/),
read with ast: module-level and function-level (lazy) imports alike.

    python3 bench/import_graph.py [ROOT] [-v]

prints the modules, the edges, the import circles (strongly connected
components of more than one module) and the private names (`_x`) one
module takes from another (`from m import _x`, or `m._x` on an imported
module).  tests/test_architecture.py checks the same graph against the
layer table of ARCHITECTURE.md.
"""

import ast
import sys
from pathlib import Path

PACKAGES = (("cubbi_tools", "cubbi_tools"), ("server", "cubbi_server"))


def modules(root):
    """{dotted module name: path} of every .py file of the packages."""
    out = {}
    for folder, pkg in PACKAGES:
        for path in sorted((Path(root) / folder).rglob("*.py")):
            rel = path.relative_to(Path(root) / folder).with_suffix("")
            out[".".join([pkg] + [p for p in rel.parts if p != "__init__"])] = path
    return out


def _owner(mods, name):
    """The module of MODS that NAME is, or is inside of; None when outside."""
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def _targets(mods, mod, node):
    """[(imported module, name taken from it or None, bound local name)]."""
    if isinstance(node, ast.Import):
        return [(a.name, None, a.asname or a.name.split(".")[0]) for a in node.names]
    pkg = mod.split(".")
    if mods[mod].name != "__init__.py":
        pkg = pkg[:-1]
    if node.level:
        base = ".".join(pkg[:len(pkg) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module
    out = []
    for a in node.names:
        sub = f"{base}.{a.name}"
        if sub in mods:  # from pkg import module
            out.append((sub, None, a.asname or a.name))
        else:
            out.append((base, a.name, a.asname or a.name))
    return out


def graph(root="."):
    """(mods, edges, lazy, privates): edges {module: {imported module}}, lazy
    the subset imported inside a function, privates [(module, line, text)]."""
    mods = modules(root)
    edges = {m: set() for m in mods}
    lazy = {m: set() for m in mods}
    privates = []
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        top = {id(n) for n in tree.body}
        bound = {}  # local name -> module of ours it names
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target, name, local in _targets(mods, mod, node):
                owner = _owner(mods, target)
                if owner is None or owner == mod:
                    continue
                edges[mod].add(owner)
                if id(node) not in top:
                    lazy[mod].add(owner)
                if name is None and target in mods:
                    bound[local] = target
                if name and name.startswith("_") and not name.startswith("__"):
                    privates.append((mod, node.lineno, f"from {target} import {name}"))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in bound and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                privates.append((mod, node.lineno, f"{bound[node.value.id]}.{node.attr}"))
    return mods, edges, lazy, privates


def circles(edges):
    """The strongly connected components with more than one module."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
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
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main(argv):
    root = next((a for a in argv if not a.startswith("-")), ".")
    mods, edges, lazy, privates = graph(root)
    print(f"modules {len(mods)}, imports {sum(map(len, edges.values()))} "
          f"(of which lazy {sum(map(len, lazy.values()))})")
    comps = circles(edges)
    print(f"import circles: {len(comps)}")
    for comp in comps:
        print(f"  {len(comp)}: {' '.join(comp)}")
    print(f"private names across modules: {len(privates)}")
    for mod, line, text in privates:
        print(f"  {mod}:{line}: {text}")
    try:
        sys.path.insert(0, str(Path(root) / "tests"))
        import test_architecture as arch

        up = arch.violations(edges)
        print(f"imports against the layer table (upward): {len(up)}")
        for text in up:
            print(f"  {text}")
    except ImportError:
        pass
    if "-v" in argv:
        for mod in sorted(edges):
            print(mod, "->", " ".join(sorted(edges[mod])))


if __name__ == "__main__":
    main(sys.argv[1:])
