package pdtrace

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

// TestCSourcesInSync fails when the module's copy of libpdtrace (csrc/ and
// the csrc_*.c files) differs from the repository's lib/ and include/: run
// bindings/go/sync_csrc.sh after changing lib/. Outside a checkout (the
// module cache, a vendor directory) there is nothing to compare with.
func TestCSourcesInSync(t *testing.T) {
	script, _ := filepath.Abs(filepath.Join("..", "sync_csrc.sh"))
	if _, err := os.Stat(filepath.Join("..", "..", "..", "lib", "otlp_trace.proto")); err != nil {
		t.Skip("not inside a libpdtrace checkout")
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash not found")
	}
	if _, err := exec.LookPath("nanopb_generator.py"); err != nil {
		if _, err := exec.LookPath("nanopb_generator"); err != nil {
			t.Skip("nanopb_generator.py not found")
		}
	}
	out, err := exec.Command("bash", script, "--check").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --check: %v\n%s", script, err, out)
	}
}

// TestCopiedVersion checks that the version compiled into the package is
// the one of the repository's include/pdtrace/version.h, the single source
// of the version of the library, the Python wheel and this module.
func TestCopiedVersion(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "..", "..", "include", "pdtrace", "version.h"))
	if err != nil {
		t.Skip("not inside a libpdtrace checkout")
	}
	m := regexp.MustCompile(`PDT_VERSION_STRING "([^"]+)"`).FindSubmatch(src)
	if m == nil {
		t.Fatal("no PDT_VERSION_STRING in include/pdtrace/version.h")
	}
	if HeaderVersion != string(m[1]) {
		t.Fatalf("HeaderVersion %s, include/pdtrace/version.h %s", HeaderVersion, m[1])
	}
	if v, _ := Version(); v != string(m[1]) {
		t.Fatalf("Version() %s, include/pdtrace/version.h %s", v, m[1])
	}
}
