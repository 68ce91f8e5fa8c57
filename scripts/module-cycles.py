"""Lists the dependency cycles between the top-level modules of each crate of the workspace.

    python3 scripts/module-cycles.py        # exit status 1 when a crate has a cycle

A module depends on another when its files name it through `crate::` (in `use` lines, braced
lists included, and in paths); a module is a `src/<name>.rs` file or `src/<name>/` directory
(`lib.rs` and `main.rs` are the crate's root, left out). Tests (`#[cfg(test)]` modules) count
too. Cycles are the strongly connected components with more than one module."""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def crates():
    for entry in sorted(os.listdir(ROOT)):
        src = os.path.join(ROOT, entry, "src")
        if os.path.isfile(os.path.join(ROOT, entry, "Cargo.toml")) and os.path.isdir(src):
            yield entry, src
    yield "photon (root)", os.path.join(ROOT, "src")


def modules(src):
    """Top-level module name -> its source files."""
    found = {}
    for entry in os.listdir(src):
        path = os.path.join(src, entry)
        if entry.endswith(".rs") and entry not in ("lib.rs", "main.rs"):
            found.setdefault(entry[:-3], []).append(path)
        elif os.path.isdir(path):
            for parent, _, files in os.walk(path):
                found.setdefault(entry, []).extend(os.path.join(parent, f) for f in files if f.endswith(".rs"))
    return found


def references(text, names):
    """The crate modules a file names."""
    named = set()
    for match in re.finditer(r"crate::(\{[^}]*\}|\w+)", text):
        target = match.group(1)
        for part in re.split(r"[{},\s]+", target):
            head = part.split("::")[0]
            if head in names:
                named.add(head)
    return named


def cycles(graph):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main():
    found_any = False
    for crate, src in crates():
        mods = modules(src)
        graph = {}
        for name, files in mods.items():
            text = "".join(open(f, encoding="utf-8").read() for f in files)
            graph[name] = references(text, mods) - {name}
        for component in cycles(graph):
            found_any = True
            edges = [f"{a} -> {b}" for a in component for b in sorted(graph[a]) if b in component]
            print(f"{crate}: cycle among {', '.join(component)} ({'; '.join(edges)})")
    if not found_any:
        print("no cycles between the top-level modules of any crate")
    return 1 if found_any else 0


if __name__ == "__main__":
    sys.exit(main())
