package detect

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// listDir returns the names of the regular files at dir's top.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestPrepareNextExport(t *testing.T) {
	const userJS = "module.exports = { trailingSlash: true }\n"
	tests := []struct {
		name       string
		files      map[string]string
		wantFiles  []string          // top-level names afterwards (besides package.json)
		wantImport string            // in the wrapper
		wrapper    string            // the wrapper's name
		unchanged  map[string]string // name → content that must survive
		detail     string            // substring of the detail
		wantErr    string
	}{
		{
			name:      "no config",
			wantFiles: []string{"next.config.mjs"}, wrapper: "next.config.mjs",
			detail: "no next.config: wrote next.config.mjs",
		},
		{
			name:      "js (CommonJS)",
			files:     map[string]string{"next.config.js": userJS},
			wantFiles: []string{"next.config.mjs", "next.config.user.js"}, wrapper: "next.config.mjs", wantImport: "import * as userModule from './next.config.user.js'",
			unchanged: map[string]string{"next.config.user.js": userJS},
			detail:    "next.config.mjs wrapped (yours is now next.config.user.js)",
		},
		{
			name:      "mjs",
			files:     map[string]string{"next.config.mjs": "export default {}\n"},
			wantFiles: []string{"next.config.mjs", "next.config.user.mjs"}, wrapper: "next.config.mjs", wantImport: "from './next.config.user.mjs'",
			unchanged: map[string]string{"next.config.user.mjs": "export default {}\n"},
			detail:    "next.config.mjs wrapped (yours is now next.config.user.mjs)",
		},
		{
			name:      "ts",
			files:     map[string]string{"next.config.ts": "export default {}\n"},
			wantFiles: []string{"next.config.ts", "next.config.user.ts"}, wrapper: "next.config.ts", wantImport: "import * as userModule from './next.config.user'",
			detail: "next.config.ts wrapped (yours is now next.config.user.ts)",
		},
		{
			name:      "js wins; an ignored mjs is moved away",
			files:     map[string]string{"next.config.js": userJS, "next.config.mjs": "export default {basePath: '/x'}\n", "next.config.ts": "export default {}\n"},
			wantFiles: []string{"next.config.ignored.mjs", "next.config.mjs", "next.config.ts", "next.config.user.js"}, wrapper: "next.config.mjs", wantImport: "from './next.config.user.js'",
			unchanged: map[string]string{"next.config.ignored.mjs": "export default {basePath: '/x'}\n", "next.config.ts": "export default {}\n"},
			detail:    "next.config.mjs (ignored by Next.js) moved to next.config.ignored.mjs; next.config.ts ignored, as Next.js does",
		},
		{
			name:      "mjs wins over ts",
			files:     map[string]string{"next.config.mjs": "export default {}\n", "next.config.ts": "export default {}\n"},
			wantFiles: []string{"next.config.mjs", "next.config.ts", "next.config.user.mjs"}, wrapper: "next.config.mjs",
			detail: "; next.config.ts ignored, as Next.js does",
		},
		{
			name:      "a cjs beside a js is ignored, as Next.js does",
			files:     map[string]string{"next.config.js": userJS, "next.config.cjs": userJS},
			wantFiles: []string{"next.config.cjs", "next.config.mjs", "next.config.user.js"}, wrapper: "next.config.mjs",
		},
		{
			name:    "cjs alone",
			files:   map[string]string{"next.config.cjs": userJS},
			wantErr: "next.config.cjs: Next.js does not load next.config.cjs/.mts (nor .cts, .json, .jsx, .tsx): rename it to next.config.js, next.config.mjs or next.config.ts",
		},
		{
			name:    "mts alone",
			files:   map[string]string{"next.config.mts": "export default {}"},
			wantErr: "next.config.mts: Next.js does not load next.config.cjs/.mts (nor .cts, .json, .jsx, .tsx): rename it to next.config.js, next.config.mjs or next.config.ts",
		},
		{
			name:    "the user name is taken",
			files:   map[string]string{"next.config.js": userJS, "next.config.user.js": "x"},
			wantErr: "next.config.user.js: zipship needs this name for your next.config.js while it forces a static export: rename the file",
		},
		{
			name:    "the ignored name is taken",
			files:   map[string]string{"next.config.js": userJS, "next.config.mjs": "x", "next.config.ignored.mjs": "y"},
			wantErr: "next.config.mjs: Next.js ignores it (next.config.js wins) and next.config.ignored.mjs exists: remove one of them",
		},
		{
			name:    "a directory named like the config",
			files:   map[string]string{"next.config.js/x": ""},
			wantErr: "next.config.js: not a regular file (a link or a directory): make it a regular file",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := map[string]string{"package.json": pkgNext}
			for k, v := range tt.files {
				files[k] = v
			}
			dir := project(t, files)
			detail, err := PrepareNextExport(dir)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr || !IsUserError(err) {
					t.Fatalf("err =\n%v\nwant user error\n%s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(detail, tt.detail) {
				t.Errorf("detail = %q, want it to contain %q", detail, tt.detail)
			}
			want := append([]string{"package.json"}, tt.wantFiles...)
			sort.Strings(want)
			if got := listDir(t, dir); strings.Join(got, " ") != strings.Join(want, " ") {
				t.Errorf("files = %v, want %v", got, want)
			}
			w := readFile(t, filepath.Join(dir, tt.wrapper))
			if !strings.HasPrefix(w, wrapperMarker) || !strings.Contains(w, tt.wantImport) || !strings.Contains(w, "output: 'export'") {
				t.Errorf("wrapper %s =\n%s", tt.wrapper, w)
			}
			for name, content := range tt.unchanged {
				if got := readFile(t, filepath.Join(dir, name)); got != content {
					t.Errorf("%s = %q, want %q", name, got, content)
				}
			}

			// A second run (a retried step) leaves everything alone.
			before := listDir(t, dir)
			detail, err = PrepareNextExport(dir)
			if err != nil || !strings.HasPrefix(detail, "already prepared") {
				t.Fatalf("second run = %q, %v", detail, err)
			}
			if after := listDir(t, dir); strings.Join(after, " ") != strings.Join(before, " ") {
				t.Errorf("second run changed the files: %v → %v", before, after)
			}
		})
	}
}

func TestPrepareNextExportRefusesALinkedConfig(t *testing.T) {
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "secret.js"), []byte("module.exports = {}"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := project(t, map[string]string{"package.json": pkgNext})
	if err := os.Symlink(filepath.Join(outside, "secret.js"), filepath.Join(dir, "next.config.js")); err != nil {
		t.Fatal(err)
	}
	_, err := PrepareNextExport(dir)
	if err == nil || err.Error() != "next.config.js: not a regular file (a link or a directory): make it a regular file" {
		t.Fatalf("err = %v", err)
	}
}
