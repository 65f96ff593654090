package detect

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// trickyValues are values a dotenv file must carry unchanged, named V00….
// V00 and V01 are also in the user's files of testNextEnvRoundTrip.
func trickyValues() map[string]string {
	vals := []string{
		`ours wins`,
		`ours wins too`,
		`hello $USER "quoted" #1`,
		`$HOME`,
		`${HOME}`,
		`${HOME:-fallback}`,
		`a\$b`,
		`\$`,
		`$`,
		`trailing backslash\`,
		`C:\new\table\raw`,
		`  leading and trailing spaces  `,
		``,
		`#not a comment`,
		`x # y`,
		`it's`,
		`say "hi"`,
		"back`tick",
		`it's "both"`,
		"it's `both`",
		"say \"hi\" `both`",
		"it's #1 `x` and \\q",
		`'single-wrapped'`,
		`"double-wrapped"`,
		"`back-wrapped`",
		`=`,
		`a=b=c`,
		`ünïcödé ✓ 漢字`,
		`\\server\share`,
		`$$`,
		`p@ss$w0rd!`,
	}
	m := map[string]string{}
	for i, v := range vals {
		m[fmt.Sprintf("V%02d", i)] = v
	}
	return m
}

func TestDotenvQuote(t *testing.T) {
	tests := []struct{ in, want string }{
		{`plain`, `'plain'`},
		{`$HOME`, `'\$HOME'`},
		{`it's`, "`it's`"},
		{"it's `x`", `"it's ` + "`x`" + `"`},
		{``, `''`},
	}
	for _, tt := range tests {
		if got, err := dotenvQuote(tt.in); err != nil || got != tt.want {
			t.Errorf("dotenvQuote(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"it's `x` \"y\"", "it's `x` \\n", "it's `x` \\r", "a\nb", "a\rb", "a\x00b"} {
		if got, err := dotenvQuote(bad); err != errUnquotable {
			t.Errorf("dotenvQuote(%q) = %q, %v; want errUnquotable", bad, got, err)
		}
	}
}

func TestWriteEnvProduction(t *testing.T) {
	t.Run("appends after the user's content", func(t *testing.T) {
		dir := project(t, map[string]string{EnvFile: "A=user"})
		if err := WriteEnvProduction(dir, map[string]string{"B": "2", "A": "ours", "NODE_ENV": "development"}); err != nil {
			t.Fatal(err)
		}
		want := "A=user\n# zipship: build variables (appended; later lines win)\nA='ours'\nB='2'\n"
		if got := readFile(t, filepath.Join(dir, EnvFile)); got != want {
			t.Errorf("file =\n%q\nwant\n%q", got, want)
		}
		fi, _ := os.Stat(filepath.Join(dir, EnvFile))
		if fi.Mode().Perm() != 0o644 { // the user's mode is kept
			t.Errorf("mode = %v", fi.Mode())
		}
	})
	t.Run("creates the file", func(t *testing.T) {
		dir := t.TempDir()
		if err := WriteEnvProduction(dir, map[string]string{"X": "1"}); err != nil {
			t.Fatal(err)
		}
		if got := readFile(t, filepath.Join(dir, EnvFile)); got != "# zipship: build variables (appended; later lines win)\nX='1'\n" {
			t.Errorf("file = %q", got)
		}
		if fi, _ := os.Stat(filepath.Join(dir, EnvFile)); fi.Mode().Perm() != 0o600 {
			t.Errorf("mode = %v", fi.Mode())
		}
	})
	t.Run("nothing to write", func(t *testing.T) {
		dir := t.TempDir()
		if err := WriteEnvProduction(dir, map[string]string{"NODE_ENV": "production"}); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(dir, EnvFile)); !os.IsNotExist(err) {
			t.Errorf("file written: %v", err)
		}
	})
	t.Run("an unquotable value names the variable, not the value", func(t *testing.T) {
		dir := t.TempDir()
		err := WriteEnvProduction(dir, map[string]string{"SECRETISH": "it's `x` \"s3cr3t\""})
		if err == nil || !strings.Contains(err.Error(), "variable SECRETISH:") || strings.Contains(err.Error(), "s3cr3t") {
			t.Fatalf("err = %v", err)
		}
		if _, err := os.Stat(filepath.Join(dir, EnvFile)); !os.IsNotExist(err) {
			t.Errorf("file written: %v", err)
		}
	})
	t.Run("a bad name", func(t *testing.T) {
		if err := WriteEnvProduction(t.TempDir(), map[string]string{"A-B": "x"}); err == nil {
			t.Fatal("no error")
		}
	})
	t.Run("a link is refused", func(t *testing.T) {
		outside := filepath.Join(t.TempDir(), "passwd")
		if err := os.WriteFile(outside, []byte("root:x:0:0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		if err := os.Symlink(outside, filepath.Join(dir, EnvFile)); err != nil {
			t.Fatal(err)
		}
		err := WriteEnvProduction(dir, map[string]string{"X": "1"})
		if err == nil || !IsUserError(err) || err.Error() != ".env.production.local: not a regular file (a link or a directory): zipship appends the build's variables to it; make it a regular file" {
			t.Fatalf("err = %v", err)
		}
		if got := readFile(t, outside); got != "root:x:0:0\n" {
			t.Errorf("the link's target changed: %q", got)
		}
	})
}

// TestEnvRoundTripNodeParseEnv reads the written file back with Node.js's
// own dotenv parser (util.parseEnv, which Vite 6+ uses), then applies what
// dotenv-expand does to a value with no unescaped $ (it turns \$ into $).
// @next/env is checked in TestNextExportEndToEnd.
func TestEnvRoundTripNodeParseEnv(t *testing.T) {
	values := trickyValues()
	dir := t.TempDir()
	if err := WriteEnvProduction(dir, values); err != nil {
		t.Fatal(err)
	}
	script := `const util = require('node:util'), fs = require('node:fs')
const parsed = util.parseEnv(fs.readFileSync(process.argv[1], 'utf8'))
const out = {}
for (const [k, v] of Object.entries(parsed)) {
  if (/(?<!\\)\$/.test(v)) throw new Error(k + ' has an unescaped $: an expander would rewrite it')
  out[k] = v.replace(/\\\$/g, '$')
}
process.stdout.write(JSON.stringify(out))`
	out := run(t, dir, nil, time.Minute, "node", "-e", script, filepath.Join(dir, EnvFile))
	var got map[string]string
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !reflect.DeepEqual(got, values) {
		for k, want := range values {
			if got[k] != want {
				t.Errorf("%s = %q, want %q", k, got[k], want)
			}
		}
	}
}

func TestBuildEnv(t *testing.T) {
	got := BuildEnv("b-1", "acme", map[string]string{
		"ZED": "last", "API_URL": "https://x/$y", "NODE_ENV": "development",
		"NEXT_PUBLIC_BUILD_ID": "forged", "NEXT_PUBLIC_TENANT_ID": "other", "BAD=NAME": "x", "NUL": "a\x00b", "": "empty",
	})
	want := []string{
		"NODE_ENV=production",
		"API_URL=https://x/$y",
		"NEXT_PUBLIC_BUILD_ID=b-1",
		"NEXT_PUBLIC_TENANT_ID=acme",
		"NEXT_TELEMETRY_DISABLED=1",
		"ZED=last",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("BuildEnv =\n%q\nwant\n%q", got, want)
	}
	got = BuildEnv("b", "t", map[string]string{"NEXT_TELEMETRY_DISABLED": "0"})
	if !reflect.DeepEqual(got, []string{"NODE_ENV=production", "NEXT_PUBLIC_BUILD_ID=b", "NEXT_PUBLIC_TENANT_ID=t", "NEXT_TELEMETRY_DISABLED=0"}) {
		t.Errorf("BuildEnv = %q", got)
	}
}

func TestSplitEnv(t *testing.T) {
	dir := project(t, map[string]string{
		".env":                  "# comment\nIN_ENV=1\nexport EXPORTED=1\n",
		".env.local":            "IN_LOCAL = 1\n",
		".env.production":       "IN_PROD: yes\nMULTI=\"line one\nNOT_A_KEY_BUT_LOOKS=1\"\n",
		".env.production.local": "IN_PROD_LOCAL=1",
		".env.development":      "IN_DEV=1\n", // not loaded by a production build
		".env.example":          "IN_EXAMPLE=\n",
	})
	user := map[string]string{"IN_ENV": "a", "EXPORTED": "b", "IN_LOCAL": "c", "IN_PROD": "d", "IN_PROD_LOCAL": "e",
		"NOT_A_KEY_BUT_LOOKS": "f", "IN_DEV": "g", "IN_EXAMPLE": "h", "ONLY_OURS": "i"}
	process, file, err := SplitEnv(dir, user)
	if err != nil {
		t.Fatal(err)
	}
	wantProcess := map[string]string{"IN_DEV": "g", "IN_EXAMPLE": "h", "ONLY_OURS": "i"}
	if !reflect.DeepEqual(process, wantProcess) {
		t.Errorf("process = %v, want %v", process, wantProcess)
	}
	if len(file) != 6 || file["NOT_A_KEY_BUT_LOOKS"] != "f" { // a safe over-approximation
		t.Errorf("file = %v", file)
	}

	process, file, err = SplitEnv(t.TempDir(), map[string]string{"A": "1"})
	if err != nil || len(file) != 0 || process["A"] != "1" {
		t.Errorf("no env files: %v %v %v", process, file, err)
	}
}
