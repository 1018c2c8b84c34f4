#!/usr/bin/env python3
"""Checks that the documentation covers the API and is current.

- every PDT_API function in include/pdtrace/*.h has a doc comment and a
  page docs/reference/<name>.md;
- every symbol the built shared library exports has a page (skipped when
  the library is not built). The library is given by --lib PATH, or the
  PDTRACE_LIB environment variable, else build/lib/libpdtrace.so;
- docs/reference/ is exactly what docs/gen_reference.py produces from the
  current headers (regenerated into a temporary directory and compared);
- relative links in docs/ point to files that exist;
- every pdt_*() call and every OTEL_* / PDTRACE_* variable named in the
  guides exists in the headers or in lib/.

Runs under pytest, or alone: `python3 tests/docs/test_docs.py [--lib PATH]`
(exits non-zero on failure).
"""
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INCLUDE = os.path.join(ROOT, "include")
DOCS = os.path.join(ROOT, "docs")
REF = os.path.join(DOCS, "reference")

class Skipped(Exception):
    """A skipped check when running without pytest."""


def skip(reason):
    if __name__ != "__main__" and "pytest" in sys.modules:
        import pytest
        pytest.skip(reason)
    raise Skipped(reason)


def lib_path():
    for i, a in enumerate(sys.argv):
        if a == "--lib" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if a.startswith("--lib="):
            return a[len("--lib="):]
    if os.environ.get("PDTRACE_LIB"):
        return os.environ["PDTRACE_LIB"]
    return os.path.join(ROOT, "build", "lib", "libpdtrace.so")


def load_generator():
    spec = importlib.util.spec_from_file_location(
        "gen_reference", os.path.join(DOCS, "gen_reference.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def header_functions():
    """PDT_API function names, found with a plain regex (independent of
    the generator's parser)."""
    names = set()
    hdir = os.path.join(INCLUDE, "pdtrace")
    for n in sorted(os.listdir(hdir)):
        if not n.endswith(".h"):
            continue
        with open(os.path.join(hdir, n), encoding="utf-8") as f:
            text = re.sub(r"/\*.*?\*/", " ", f.read(), flags=re.S)
        for m in re.finditer(r"\bPDT_API\b[^;]*?\b(pdt_\w+)\s*\(", text):
            names.add(m.group(1))
    return names


def test_headers_declare_functions():
    assert len(header_functions()) > 10


def test_every_function_has_a_page():
    missing = sorted(n for n in header_functions()
                     if not os.path.isfile(os.path.join(REF, n + ".md")))
    assert not missing, "no page in docs/reference for: " + ", ".join(missing)


def test_every_function_has_a_doc_comment():
    gen = load_generator()
    api = gen.load(INCLUDE, os.path.join(ROOT, "lib", "pdtrace.map"))
    assert set(api.funcs) == header_functions(), \
        "the generator and the plain scan disagree on the function list"
    bare = sorted(n for n, f in api.funcs.items() if not f.comment.strip())
    assert not bare, "PDT_API declarations without a comment above: " + ", ".join(bare)


def test_exported_symbols_have_pages():
    lib = lib_path()
    if not os.path.isfile(lib):
        skip("shared library not built: " + lib)
    if shutil.which("nm") is None:
        skip("nm not found")
    out = subprocess.run(["nm", "-D", "--defined-only", lib], check=True,
                         stdout=subprocess.PIPE, universal_newlines=True).stdout
    syms = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        kind, name = parts[-2], parts[-1].split("@")[0]
        if kind in ("A", "a"):  # version nodes such as PDTRACE_0.1
            continue
        syms.add(name)
    assert syms, "no symbols found in " + lib
    missing = sorted(s for s in syms if not os.path.isfile(os.path.join(REF, s + ".md")))
    assert not missing, "exported but undocumented: " + ", ".join(missing)


def test_reference_is_up_to_date():
    gen = os.path.join(DOCS, "gen_reference.py")
    tmp = tempfile.mkdtemp(prefix="pdtrace-ref-")
    try:
        subprocess.run([sys.executable, gen, "--out", tmp], check=True)
        fresh = sorted(os.listdir(tmp))
        committed = sorted(n for n in os.listdir(REF) if n.endswith(".md"))
        assert fresh == committed, (
            "docs/reference has a different set of pages than the headers "
            "give; run python3 docs/gen_reference.py (missing: %s; extra: %s)"
            % (sorted(set(fresh) - set(committed)), sorted(set(committed) - set(fresh))))
        stale = []
        for n in fresh:
            with open(os.path.join(tmp, n), encoding="utf-8") as a, \
                    open(os.path.join(REF, n), encoding="utf-8") as b:
                if a.read() != b.read():
                    stale.append(n)
        assert not stale, ("stale pages (run python3 docs/gen_reference.py): "
                           + ", ".join(stale))
    finally:
        shutil.rmtree(tmp)


def doc_files():
    out = []
    for d, _, files in os.walk(DOCS):
        out += [os.path.join(d, f) for f in sorted(files) if f.endswith(".md")]
    return sorted(out)


def test_relative_links_resolve():
    bad = []
    for path in doc_files():
        with open(path, encoding="utf-8") as f:
            text = f.read()
        text = re.sub(r"```.*?```", "", text, flags=re.S)
        for m in re.finditer(r"\]\(([^)\s]+)\)", text):
            target = m.group(1).split("#")[0]
            if not target or re.match(r"^[a-z]+:", target):
                continue
            if not os.path.exists(os.path.join(os.path.dirname(path), target)):
                bad.append("%s -> %s" % (os.path.relpath(path, ROOT), m.group(1)))
    assert not bad, "broken links: " + "; ".join(bad)


def source_text():
    chunks = []
    for d in (os.path.join(ROOT, "lib"), os.path.join(INCLUDE, "pdtrace")):
        for n in sorted(os.listdir(d)):
            if n.endswith((".c", ".h")):
                with open(os.path.join(d, n), encoding="utf-8") as f:
                    chunks.append(f.read())
    # Build-time switches live in the bindings' build scripts.
    for n in ("build_ffi.py", "setup.py"):
        p = os.path.join(ROOT, "bindings", "python", n)
        if os.path.exists(p):
            with open(p, encoding="utf-8") as f:
                chunks.append(f.read())
    return "\n".join(chunks)


def test_guides_name_only_real_functions_and_variables():
    funcs = header_functions()
    src = source_text()
    bad = []
    for path in doc_files():
        if os.path.dirname(path) == REF:
            continue
        with open(path, encoding="utf-8") as f:
            text = f.read()
        rel = os.path.relpath(path, ROOT)
        for m in set(re.findall(r"\b(pdt_[a-z0-9_]+)\s*\(", text)):
            if m not in funcs:
                bad.append("%s: %s()" % (rel, m))
        for m in set(re.findall(r"\b((?:OTEL|PDTRACE)_[A-Z][A-Z0-9_]*[A-Z0-9])\b", text)):
            if m not in src:
                bad.append("%s: %s" % (rel, m))
    assert not bad, "named in the docs but not in the code: " + ", ".join(sorted(bad))


def main():
    tests = [(n, f) for n, f in sorted(globals().items())
             if n.startswith("test_") and callable(f)]
    failed = 0
    for name, fn in tests:
        try:
            fn()
            print("PASS", name)
        except AssertionError as e:
            failed += 1
            print("FAIL", name + ":", e)
        except Skipped as e:
            print("SKIP", name + ":", e)
        except Exception as e:  # noqa: BLE001 - report and go on
            failed += 1
            print("ERROR", name + ":", repr(e))
    print("%d tests, %d failed" % (len(tests), failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
