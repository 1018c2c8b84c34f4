#!/usr/bin/env python3
"""Compiles each public header alone, as C99 and as C++11, with warnings as
errors (suite 'headers'). Usage: check_headers.py <include-dir>.

The compilers are $CC / $CXX, else cc / c++ from PATH. Without a C++
compiler the C++ half is skipped with a note; the C half never is."""
import os
import shutil
import subprocess
import sys
import tempfile

C_FLAGS = ["-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror"]
CXX_FLAGS = ["-x", "c++", "-std=c++11", "-pedantic", "-Wall", "-Wextra",
             "-Werror"]


def find(var, name):
    v = os.environ.get(var)
    if v:
        return v.split()
    p = shutil.which(name)
    return [p] if p else None


def headers(inc):
    out = [("pdtrace.h", os.path.join(inc, "pdtrace.h"))]
    sub = os.path.join(inc, "pdtrace")
    for f in sorted(os.listdir(sub)):
        if f.endswith(".h"):
            out.append(("pdtrace/" + f, os.path.join(sub, f)))
    return out


def compile_one(cmd, inc, src, tmp):
    obj = os.path.join(tmp, "out.o")
    r = subprocess.run(cmd + ["-I", inc, "-c", src, "-o", obj],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       universal_newlines=True)
    return r.returncode, r.stdout


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    inc = os.path.abspath(sys.argv[1])
    cc = find("CC", "cc")
    cxx = find("CXX", "c++")
    if cc is None:
        print("no C compiler found")
        return 1
    if cxx is None:
        print("note: no C++ compiler; C++ checks skipped")
    failures = 0
    checked = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in headers(inc):
            # Twice, to check the include guard; then a use of a name the
            # header declares, so an empty header would not pass unnoticed.
            src = os.path.join(tmp, "t.c")
            with open(src, "w") as f:
                f.write("#include <%s>\n#include <%s>\n"
                        "int pdt_header_check_dummy(void);\n"
                        "int pdt_header_check_dummy(void) { return 0; }\n"
                        % (name, name))
            for lang, cmd in (("C", cc and cc + C_FLAGS),
                              ("C++", cxx and cxx + CXX_FLAGS)):
                if cmd is None:
                    continue
                rc, out = compile_one(cmd, inc, src, tmp)
                checked += 1
                if rc != 0:
                    failures += 1
                    print("FAIL %s as %s:\n%s" % (name, lang, out))
                else:
                    print("ok   %s as %s" % (name, lang))
            # Every header but version.h must declare something with
            # C linkage for C++ callers.
            text = open(path).read()
            if "PDT_API" in text and name != "pdtrace/common.h" \
                    and 'extern "C"' not in text:
                failures += 1
                print("FAIL %s: PDT_API declarations without extern \"C\""
                      % name)
    print("%d compilations, %d failures" % (checked, failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
