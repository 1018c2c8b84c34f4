#!/usr/bin/env python3
"""Checks that lib/ is layered: no cycle between its object files, and no
cycle between its headers.

The call graph comes from the built objects, not from the headers: for
every symbol an object leaves undefined, `nm` tells which other object of
the library defines it, and that makes an edge. A call back up to a higher
layer therefore shows as a cycle even when no header declares it.

  layout_check.py --nm NM --lib libpdtrace_internal.a --src lib/
  layout_check.py --self-test

Exit status 0 when both graphs are acyclic, 1 with each cycle printed.
"""
import argparse
import os
import re
import subprocess
import sys


def find_cycles(graph):
    """Strongly connected components with more than one node (or a node
    with an edge to itself), each as one concrete cycle path [a, b, ..., a].
    Iterative Tarjan, so deep graphs cannot exhaust the recursion limit."""
    index = {}
    low = {}
    on_stack = set()
    stack = []
    sccs = []
    counter = 0
    nodes = sorted(set(graph) | {m for ns in graph.values() for m in ns})
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            advanced = False
            for nxt in it:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1 or node in graph.get(node, ()):
                    sccs.append(sorted(comp))
    return [cycle_in(graph, comp) for comp in sccs]


def cycle_in(graph, comp):
    """One cycle through the first node of a strongly connected component
    (breadth-first, so the shortest one)."""
    members = set(comp)
    start = comp[0]
    if start in graph.get(start, ()):
        return [start, start]
    prev = {start: None}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in members:
                continue
            if nxt == start:
                path = [node]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                path.reverse()
                return path + [start]
            if nxt not in prev:
                prev[nxt] = node
                queue.append(nxt)
    return comp + [start]  # not reached for a real component


def object_graph(nm, lib):
    """{object: {objects it needs}} and {(a, b): [symbols]} from nm."""
    out = subprocess.run([nm, '-A', '--format=posix', lib], check=True,
                         capture_output=True, text=True).stdout
    defined = {}
    undefined = {}
    objs = set()
    pat = re.compile(r'^(?:.*\[)?([^\[\]:]+?)\]?:\s+(\S+)\s+([A-Za-z])\b')
    for line in out.splitlines():
        m = pat.match(line)
        if not m:
            continue
        obj, sym, kind = m.group(1), m.group(2), m.group(3)
        objs.add(obj)
        if kind == 'U':
            undefined.setdefault(obj, set()).add(sym)
        elif kind.isupper() or kind in 'vw':
            defined.setdefault(sym, obj)
    graph = {o: set() for o in objs}
    why = {}
    for obj, syms in undefined.items():
        for sym in syms:
            owner = defined.get(sym)
            if owner is None or owner == obj:
                continue
            graph[obj].add(owner)
            why.setdefault((obj, owner), []).append(sym)
    return graph, why


def include_graph(src):
    """{file: {lib/ headers it includes}} for lib/*.c and lib/*.h."""
    graph = {}
    names = sorted(os.listdir(src))
    headers = {n for n in names if n.endswith('.h')}
    inc = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
    for n in names:
        if not (n.endswith('.c') or n.endswith('.h')):
            continue
        with open(os.path.join(src, n), encoding='utf-8') as f:
            text = f.read()
        graph[n] = {h for h in inc.findall(text) if h in headers}
    return graph


def short(obj):
    """lib_tracer.c.o -> tracer.c"""
    name = os.path.basename(obj)
    name = re.sub(r'\.o(bj)?$', '', name)
    return re.sub(r'^.*?_(?=[^_]*\.c$)', '', name) if '_' in name else name


def self_test():
    """The detector on tiny graphs whose answer is known."""
    failures = []

    def expect(graph, n_cycles, label):
        got = find_cycles(graph)
        if len(got) != n_cycles:
            failures.append(f'{label}: expected {n_cycles} cycles, got {got}')
        for c in got:
            if c[0] != c[-1]:
                failures.append(f'{label}: {c} is not closed')
            for a, b in zip(c, c[1:]):
                if b not in graph.get(a, ()):
                    failures.append(f'{label}: {a} -> {b} is not an edge')
        return got

    expect({}, 0, 'empty')
    expect({'a': {'b'}, 'b': {'c'}, 'c': set()}, 0, 'chain')
    expect({'a': {'b', 'c'}, 'b': {'d'}, 'c': {'d'}, 'd': set()}, 0,
           'diamond')
    expect({'a': {'a'}}, 1, 'self edge')
    got = expect({'span': {'tracer'}, 'tracer': {'exporter'},
                  'exporter': {'tracer', 'rec'}, 'rec': set()}, 1,
                 'back call')
    if got and set(got[0]) != {'tracer', 'exporter'}:
        failures.append(f'back call: wrong cycle {got}')
    expect({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'x': {'y'}, 'y': {'x'}}, 2,
           'two cycles')
    # A long chain closed at the end: one cycle through all of it.
    long_graph = {i: {i + 1} for i in range(5000)}
    long_graph[5000] = {0}
    got = expect(long_graph, 1, 'long ring')
    if got and len(got[0]) != 5002:
        failures.append(f'long ring: cycle of {len(got[0])} nodes')
    for f in failures:
        print('FAIL', f)
    print('self-test:', 'ok' if not failures else f'{len(failures)} failures')
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--nm', default='nm')
    ap.add_argument('--lib')
    ap.add_argument('--src')
    ap.add_argument('--self-test', action='store_true')
    ap.add_argument('--print-graph', action='store_true')
    a = ap.parse_args()
    if a.self_test:
        return self_test()
    if not a.lib or not a.src:
        ap.error('--lib and --src are required')
    rc = 0

    graph, why = object_graph(a.nm, a.lib)
    if len(graph) < 5:
        print(f'FAIL: only {len(graph)} objects read from {a.lib}')
        return 1
    cycles = find_cycles(graph)
    if a.print_graph:
        for o in sorted(graph):
            print(short(o), '->', ' '.join(sorted(short(x)
                                                  for x in graph[o])))
    for c in cycles:
        rc = 1
        print('FAIL: call cycle between objects:',
              ' -> '.join(short(o) for o in c))
        for x, y in zip(c, c[1:]):
            print(f'    {short(x)} uses {", ".join(sorted(why[(x, y)]))} '
                  f'from {short(y)}')
    print(f'objects: {len(graph)}, edges: '
          f'{sum(len(v) for v in graph.values())}, call cycles: '
          f'{len(cycles)}')

    inc = include_graph(a.src)
    icycles = find_cycles(inc)
    for c in icycles:
        rc = 1
        print('FAIL: include cycle:', ' -> '.join(c))
    print(f'files: {len(inc)}, include cycles: {len(icycles)}')
    return rc


if __name__ == '__main__':
    sys.exit(main())
