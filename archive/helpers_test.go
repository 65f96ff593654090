package archive

import (
	"bytes"
	"errors"
	"testing"

	"github.com/zipship/zipship/archive/ziptest"
)

// Short names for the shared builders in archive/ziptest.
type (
	fixture = ziptest.Entry
	handZip = ziptest.Hand
	cdEntry = ziptest.CDEntry
)

var (
	file             = ziptest.File
	dir              = ziptest.Dir
	withMode         = ziptest.WithMode
	stored           = ziptest.Stored
	deflatedRaw      = ziptest.DeflatedRaw
	deflate          = ziptest.Deflate
	buildZip         = ziptest.Build
	localRecord      = ziptest.LocalRecord
	fifieldZip       = ziptest.FifieldOverlap
	nestedOverlapZip = ziptest.NestedOverlap
)

// webProject is a normal nested web project.
func webProject() []fixture {
	return []fixture{
		file("package.json", `{"name":"site","scripts":{"build":"vite build"}}`),
		file("index.html", "<!doctype html><script type=module src=/src/main.js></script>"),
		dir("src/"),
		file("src/main.js", "import './style.css'\nconsole.log('hi')\n"),
		file("src/style.css", "body { margin: 0 }\n"),
		dir("src/components/"),
		file("src/components/App.jsx", "export default () => <h1>Hello</h1>\n"),
		file("public/favicon.ico", string([]byte{0, 0, 1, 0, 1, 0, 16, 16, 0xff, 0xfe})),
		file("public/img/logo.svg", `<svg xmlns="http://www.w3.org/2000/svg"/>`),
		file("README.md", "# site\n"),
		dir("empty/"),
	}
}

// wantRule fails unless err is a *RuleError for rule naming entry, whose
// status is status.
func wantRule(t *testing.T, err error, rule Rule, entry string, status int) {
	t.Helper()
	var re *RuleError
	if !errors.As(err, &re) {
		t.Fatalf("error = %v (%T), want *RuleError %s", err, err, rule)
	}
	if re.Rule != rule || re.Entry != entry {
		t.Fatalf("got rule %s entry %q (%v), want rule %s entry %q", re.Rule, re.Entry, err, rule, entry)
	}
	if got := re.Rule.Status(); got != status {
		t.Fatalf("status = %d, want %d", got, status)
	}
	if !IsRule(err, rule) {
		t.Fatalf("IsRule(%v, %s) = false", err, rule)
	}
}

// reject validates data and checks the rejection.
func reject(t *testing.T, data []byte, lim Limits, rule Rule, entry string, status int) {
	t.Helper()
	sum, err := Validate(bytes.NewReader(data), int64(len(data)), lim)
	if err == nil {
		t.Fatalf("Validate accepted (%+v), want rule %s on %q", sum, rule, entry)
	}
	if sum != nil {
		t.Fatalf("Validate returned a summary with an error")
	}
	wantRule(t, err, rule, entry, status)
}
