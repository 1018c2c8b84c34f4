#!/usr/bin/env python3
"""Checks the exported ABI (suite 'abi'): the functions declared with
PDT_API in the public headers, the symbols listed in the linker version
script, and the dynamic symbols the built shared library defines must be
the same set; the script lists names explicitly (no wildcards) and the
library exports nothing else but its version nodes.

Usage: abi_check.py --include DIR --map FILE --lib LIBRARY [--nm NM]"""
import argparse
import os
import re
import subprocess
import sys


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def declared(inc):
    names = {}
    files = [os.path.join(inc, "pdtrace.h")]
    sub = os.path.join(inc, "pdtrace")
    files += [os.path.join(sub, f) for f in sorted(os.listdir(sub))
              if f.endswith(".h")]
    for path in files:
        text = strip_comments(open(path).read())
        # Drop preprocessor lines (the PDT_API definition itself).
        text = "\n".join(l for l in text.splitlines()
                         if not l.lstrip().startswith("#"))
        for m in re.finditer(r"\bPDT_API\b([^;{]*?)\(", text):
            decl = m.group(1)
            ident = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", decl)
            if not ident:
                raise SystemExit("cannot parse a declaration in %s: %r"
                                 % (path, decl))
            name = ident[-1]
            if name in names:
                raise SystemExit("%s declared twice (%s, %s)"
                                 % (name, names[name], path))
            names[name] = os.path.relpath(path, inc)
    return names


def listed(map_path):
    text = strip_comments(open(map_path).read())
    text = re.sub(r"#[^\n]*", " ", text)
    nodes = {}
    for m in re.finditer(r"([A-Za-z_][A-Za-z0-9_.]*)\s*\{(.*?)\}\s*"
                         r"([A-Za-z_][A-Za-z0-9_.]*)?\s*;", text, flags=re.S):
        node, body = m.group(1), m.group(2)
        glob = []
        section = None
        for tok in re.findall(r"[^\s;]+:|[^\s;]+", body):
            if tok.endswith(":"):
                section = tok[:-1]
            elif section == "global":
                glob.append(tok)
            elif section == "local" and tok != "*":
                raise SystemExit("unexpected local entry %r in %s"
                                 % (tok, node))
        nodes[node] = glob
    if not nodes:
        raise SystemExit("no version node in %s" % map_path)
    return nodes


def exported(lib, nm):
    out = subprocess.run([nm, "-D", "--defined-only", lib],
                         stdout=subprocess.PIPE, universal_newlines=True,
                         check=True).stdout
    syms, versions = {}, set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        kind, name = parts[1], parts[2]
        base = name.split("@")[0]
        if kind == "A":
            versions.add(base)
            continue
        syms[base] = (kind, name)
    return syms, versions


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--include", required=True)
    ap.add_argument("--map", required=True)
    ap.add_argument("--lib", required=True)
    ap.add_argument("--nm", default=os.environ.get("NM", "nm"))
    a = ap.parse_args()

    errors = []
    decl = declared(a.include)
    nodes = listed(a.map)
    in_map = {}
    for node, names in nodes.items():
        for n in names:
            if any(c in n for c in "*?["):
                errors.append("%s: wildcard %r; list every function" %
                              (node, n))
            elif n in in_map:
                errors.append("%s listed in %s and %s" % (n, in_map[n], node))
            else:
                in_map[n] = node
    syms, versions = exported(a.lib, a.nm)

    for n in sorted(set(decl) - set(in_map)):
        errors.append("%s (declared in %s) is missing from %s"
                      % (n, decl[n], os.path.basename(a.map)))
    for n in sorted(set(in_map) - set(decl)):
        errors.append("%s is listed in the version script but declared "
                      "nowhere with PDT_API" % n)
    for n in sorted(set(decl) - set(syms)):
        errors.append("%s is declared but not exported by %s"
                      % (n, os.path.basename(a.lib)))
    for n in sorted(set(syms) - set(decl)):
        errors.append("%s is exported but not declared with PDT_API" % n)
    for n, (kind, full) in sorted(syms.items()):
        if not n.startswith("pdt_"):
            errors.append("exported symbol without the pdt_ prefix: %s" % n)
        if kind not in ("T", "W", "i"):
            errors.append("exported symbol %s is not a function (%s)"
                          % (n, kind))
        if n in in_map and "@" in full and \
                full.split("@")[-1] != in_map[n]:
            errors.append("%s has version %s, the script says %s"
                          % (n, full.split("@")[-1], in_map[n]))
    for v in sorted(versions - set(nodes)):
        errors.append("unexpected version node %s" % v)
    for n, d in sorted(decl.items()):
        if not n.startswith("pdt_"):
            errors.append("%s (%s) lacks the pdt_ prefix" % (n, d))

    print("%d declared, %d listed, %d exported" %
          (len(decl), len(in_map), len(syms)))
    for e in errors:
        print("FAIL " + e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
