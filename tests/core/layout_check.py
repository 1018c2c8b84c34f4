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


# The floors of lib/ (docs/architecture.md): a file may include the
# headers of its own floor and the floors below, and an object may call
# into objects of its floor and below, never up. A module is its .c and its
# .h; files named <module>_<part> belong to <module>'s floor unless listed.
FLOORS = {
    # 0: base: errors, clocks, buffers, logging, text, ids, configuration
    'error': 0, 'common': 0, 'clock': 0, 'buf': 0, 'log': 0, 'wire': 0,
    'utf8': 0, 'propagation': 0, 'ids': 0, 'json': 0, 'config': 0,
    'handle': 0,
    # 1: records, the queue, the tracer's data, encoders, the wire out
    'rec': 1, 'queue': 1, 'tracer_data': 1, 'attr': 1, 'encode': 1,
    'metrics': 1, 'compress': 1, 'transport': 1, 'retry': 1, 'response': 1,
    'spool': 1, 'otlp_trace': 1,
    # 2: the exporter thread
    'exporter': 2,
    # 3: the tracer
    'tracer': 3,
    # 4: spans
    'span': 4,
    # 5: P/D requests
    'request': 5, 'breakdown': 5,
    # above everything: the tests' umbrella header
    'core': 6,
}
# Headers no file of lib/ may include (the tests' umbrella header).
NOT_FOR_LIB = {'core.h'}


def floor_of(name):
    """Floor of a lib/ file or object name, None if unknown."""
    stem = re.sub(r'(\.pb)?\.(c|h)(\.o)?$', '', os.path.basename(name))
    stem = re.sub(r'^meson-generated_\.\._', '', stem)
    if stem in FLOORS:
        return FLOORS[stem]
    head = stem.split('_')[0]
    return FLOORS.get(head)


def upward(graph, what):
    """Edges from a lower floor to a higher one, as messages."""
    out = []
    for a in sorted(graph):
        fa = floor_of(a)
        for b in sorted(graph[a]):
            fb = floor_of(b)
            if fa is not None and fb is not None and fb > fa:
                out.append(f'{short(a)} (floor {fa}) {what} {short(b)} '
                           f'(floor {fb})')
    return out


def doc_check(doc, src):
    """The architecture document names every file of lib/ (a file
    <module>_<part> may be covered by <module>.c), and every lib/ file it
    names exists. Returns the failure messages."""
    with open(doc, encoding='utf-8') as f:
        text = f.read()
    files = sorted(n for n in os.listdir(src)
                   if n.endswith('.c') or n.endswith('.h'))
    named = set(re.findall(r'(?<![\w.-])([a-z][a-z0-9_]*\.[ch])\b', text))
    out = []
    for n in files:
        if n in named:
            continue
        module = n.split('_')[0] + n[-2:]
        if '_' in n and module in named:
            continue
        out.append(f'{os.path.basename(doc)} does not name lib/{n}')
    for n in sorted(named - set(files)):
        out.append(f'{os.path.basename(doc)} names {n}, which is not in lib/')
    return out


def short(obj):
    """tracer.c.o -> tracer.c"""
    return re.sub(r'\.o(bj)?$', '', os.path.basename(obj))


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
    # Floors: a call from the pool up to the tracer is reported, a call
    # down is not.
    ups = upward({'rec.c.o': {'tracer.c.o', 'buf.c.o'},
                  'tracer.c.o': {'rec.c.o'}}, 'calls')
    if len(ups) != 1 or not ups[0].startswith('rec.c (floor 1)'):
        failures.append(f'floors: expected one call up from rec.c, {ups}')
    if floor_of('request_attr.c') != 5 or floor_of('tracer_data.h') != 1 \
            or floor_of('meson-generated_.._otlp_trace.pb.c.o') != 1:
        failures.append('floors: wrong floor for a split or generated file')
    for f in failures:
        print('FAIL', f)
    print('self-test:', 'ok' if not failures else f'{len(failures)} failures')
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--nm', default='nm')
    ap.add_argument('--lib')
    ap.add_argument('--src')
    ap.add_argument('--doc', help='docs/architecture.md: must name every '
                    'file of --src')
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

    ups = upward(graph, 'calls')
    for u in ups:
        rc = 1
        print('FAIL: call up a floor:', u)
        a_, b_ = u.split(' ')[0], u.split(' ')[4]
        for (x, y), syms in why.items():
            if short(x) == a_ and short(y) == b_:
                print('    symbols:', ', '.join(sorted(syms)))

    inc = include_graph(a.src)
    icycles = find_cycles(inc)
    for c in icycles:
        rc = 1
        print('FAIL: include cycle:', ' -> '.join(c))
    iups = upward(inc, 'includes')
    for u in iups:
        rc = 1
        print('FAIL: include up a floor:', u)
    for f in sorted(inc):
        for h in sorted(inc[f] & NOT_FOR_LIB):
            rc = 1
            print(f'FAIL: {f} includes {h}, which is for the tests only')
    unknown = sorted(f for f in inc if floor_of(f) is None)
    for f in unknown:
        print(f'note: {f} has no floor in layout_check.py (not checked)')
    if a.doc:
        for m in doc_check(a.doc, a.src):
            rc = 1
            print('FAIL:', m)
    print(f'files: {len(inc)}, include cycles: {len(icycles)}, '
          f'includes up a floor: {len(iups)}, calls up a floor: {len(ups)}')
    return rc


if __name__ == '__main__':
    sys.exit(main())
