package archive

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
)

const (
	s400 = 400
	s413 = 413
	s415 = 415
)

func TestAcceptWebProject(t *testing.T) {
	data := buildZip(t, webProject()...)
	sum, err := Validate(bytes.NewReader(data), int64(len(data)), DefaultLimits())
	if err != nil {
		t.Fatalf("Validate: %v", err)
	}
	wantNames := []string{
		"README.md", "index.html", "package.json", "public/favicon.ico",
		"public/img/logo.svg", "src/components/App.jsx", "src/main.js", "src/style.css",
	}
	if !slices.Equal(sum.Names, wantNames) {
		t.Errorf("Names = %q, want %q", sum.Names, wantNames)
	}
	if sum.Files != 8 || sum.Dirs != 3 {
		t.Errorf("Files, Dirs = %d, %d, want 8, 3", sum.Files, sum.Dirs)
	}
	var want int64
	for _, f := range webProject() {
		want += int64(len(f.Body))
	}
	if sum.TotalUncompressed != want || sum.TotalCompressed <= 0 {
		t.Errorf("TotalUncompressed, TotalCompressed = %d, %d, want %d, > 0", sum.TotalUncompressed, sum.TotalCompressed, want)
	}
}

func TestAcceptSmallCompressibleFile(t *testing.T) {
	// 512 KiB of zeros compresses ~1000x but is under RatioMinSize.
	data := buildZip(t, fixture{Header: zip.FileHeader{Name: "zeros.bin", Method: zip.Deflate}, Body: make([]byte, 512<<10)})
	if _, err := Validate(bytes.NewReader(data), int64(len(data)), Limits{}); err != nil {
		t.Fatalf("Validate: %v", err)
	}
}

func TestAcceptCaseDistinctNames(t *testing.T) {
	// Only exact duplicates are rejected: Linux file systems are case-sensitive.
	data := buildZip(t, file("A.html", "a"), file("a.html", "b"))
	if _, err := Validate(bytes.NewReader(data), int64(len(data)), Limits{}); err != nil {
		t.Fatalf("Validate: %v", err)
	}
}

func TestRejectNotZip(t *testing.T) {
	reject(t, bytes.Repeat([]byte("this is not a zip file\n"), 50), Limits{}, RuleNotZip, "", s415)
}

func TestRejectPrependedData(t *testing.T) {
	// A self-extractor or polyglot: bytes before the archive proper.
	data := append([]byte("#!/bin/sh\nexit 0\n"), buildZip(t, file("a.txt", "a"))...)
	reject(t, data, Limits{}, RuleNotZip, "", s415)
}

func TestRejectTooSmall(t *testing.T) {
	for _, n := range []int{0, 1, 21} {
		reject(t, make([]byte, n), Limits{}, RuleNotZip, "", s415)
	}
}

func TestRejectEmpty(t *testing.T) {
	data := buildZip(t)
	if len(data) != 22 {
		t.Fatalf("empty zip is %d bytes, want 22", len(data))
	}
	reject(t, data, Limits{}, RuleEmpty, "", s400)
}

func TestRejectOnlyDirs(t *testing.T) {
	reject(t, buildZip(t, dir("a/"), dir("a/b/")), Limits{}, RuleEmpty, "", s400)
}

func TestRejectEntryCount(t *testing.T) {
	data := buildZip(t, file("f0", "0"), file("f1", "1"), file("f2", "2"), file("f3", "3"), file("f4", "4"))
	reject(t, data, Limits{MaxEntries: 3}, RuleEntryCount, "f3", s413)
	if _, err := Validate(bytes.NewReader(data), int64(len(data)), Limits{MaxEntries: 5}); err != nil {
		t.Fatalf("5 entries with MaxEntries 5: %v", err)
	}
}

func TestRejectTotalSize(t *testing.T) {
	body := strings.Repeat("x", 600)
	data := buildZip(t, file("a", body), file("b", body), file("c", body))
	reject(t, data, Limits{MaxTotalUncompressed: 1000}, RuleTotalSize, "b", s413)
}

func TestRejectEntrySize(t *testing.T) {
	data := buildZip(t, file("ok", "small"), file("big", strings.Repeat("x", 2000)))
	reject(t, data, Limits{MaxTotalUncompressed: 1000}, RuleEntrySize, "big", s413)
}

func TestRejectCompressionRatio(t *testing.T) {
	t.Run("real deflate bomb", func(t *testing.T) {
		// 2 MiB of zeros deflates ~1000x, above the default 200.
		data := buildZip(t, file("ok.txt", "ok"), fixture{Header: zip.FileHeader{Name: "bomb.bin", Method: zip.Deflate}, Body: make([]byte, 2<<20)})
		reject(t, data, Limits{}, RuleCompressionRatio, "bomb.bin", s400)
	})
	t.Run("no compressed data", func(t *testing.T) {
		f := fixture{Header: zip.FileHeader{Name: "nothing.bin", Method: zip.Deflate, UncompressedSize64: 2 << 20}, Raw: true}
		reject(t, buildZip(t, f), Limits{}, RuleCompressionRatio, "nothing.bin", s400)
	})
	t.Run("custom limits", func(t *testing.T) {
		data := buildZip(t, file("a.txt", strings.Repeat("ab", 5000)))
		reject(t, data, Limits{MaxEntryRatio: 2, RatioMinSize: 100}, RuleCompressionRatio, "a.txt", s400)
	})
}

func TestRejectAbsolutePath(t *testing.T) {
	for _, name := range []string{"/etc/passwd", "/", "/a/"} {
		reject(t, buildZip(t, file("ok", "ok"), stored(name, nil, nil)), Limits{}, RuleAbsolutePath, name, s400)
	}
}

func TestRejectParentPath(t *testing.T) {
	for _, name := range []string{"../x", "a/../b", "a/..", "../", "a/b/../../../c"} {
		reject(t, buildZip(t, file("ok", "ok"), stored(name, nil, nil)), Limits{}, RuleParentPath, name, s400)
	}
}

func TestRejectBackslash(t *testing.T) {
	for _, name := range []string{`a\b`, `..\..\x`, `C:\x`, `\x`} {
		reject(t, buildZip(t, file("ok", "ok"), stored(name, nil, nil)), Limits{}, RuleBackslash, name, s400)
	}
}

func TestRejectDriveLetter(t *testing.T) {
	for _, name := range []string{"C:/x", "c:x", "C:", "foo:bar/x", "file.txt:stream"} {
		reject(t, buildZip(t, file("ok", "ok"), stored(name, nil, nil)), Limits{}, RuleDriveLetter, name, s400)
	}
	// ":" later in the path is an ordinary Linux file name character.
	data := buildZip(t, file("a/b:c", "ok"))
	if _, err := Validate(bytes.NewReader(data), int64(len(data)), Limits{}); err != nil {
		t.Fatalf("a/b:c: %v", err)
	}
}

func TestRejectSymlink(t *testing.T) {
	data := buildZip(t, file("ok", "ok"), withMode(file("link", "/etc/passwd"), fs.ModeSymlink|0o777))
	reject(t, data, Limits{}, RuleSymlink, "link", s400)
}

func TestRejectSpecialFile(t *testing.T) {
	unknownType := stored("weird", nil, func(h *zip.FileHeader) {
		h.CreatorVersion = creatorUnix << 8
		h.ExternalAttrs = 0o160644 << 16 // S_IFWHT
	})
	windowsUnixExt := stored("sock", nil, func(h *zip.FileHeader) {
		h.CreatorVersion = 11 << 8            // NTFS, with 7-Zip's Unix mode in the high bits
		h.ExternalAttrs = 0o140644<<16 | 0x20 // S_IFSOCK, archive bit
	})
	for name, f := range map[string]fixture{
		"fifo":        withMode(file("fifo", ""), fs.ModeNamedPipe|0o644),
		"char device": withMode(file("tty", ""), fs.ModeDevice|fs.ModeCharDevice|0o600),
		"block dev":   withMode(file("sda", ""), fs.ModeDevice|0o600),
		"socket":      withMode(file("sock", ""), fs.ModeSocket|0o600),
		"unknown":     unknownType,
		"ntfs+unix":   windowsUnixExt,
	} {
		t.Run(name, func(t *testing.T) {
			reject(t, buildZip(t, file("ok", "ok"), f), Limits{}, RuleSpecialFile, f.Header.Name, s400)
		})
	}
}

func TestRejectDuplicateName(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries []fixture
		entry   string
	}{
		{"exact", []fixture{file("a", "1"), file("b", "2"), file("a", "3")}, "a"},
		{"file then dir", []fixture{file("a", "1"), dir("a/")}, "a/"},
		{"dir then file", []fixture{dir("a/"), file("a", "1")}, "a"},
		{"dir twice", []fixture{dir("a/"), dir("a/"), file("x", "1")}, "a/"},
		{"file used as directory", []fixture{file("a", "1"), file("a/b", "2")}, "a/b"},
		{"directory implied before file", []fixture{file("a/b/c", "1"), file("a/b", "2")}, "a/b"},
		{"nested", []fixture{file("x/y", "1"), file("x/y/z/w", "2")}, "x/y/z/w"},
		{"first of several", []fixture{file("p", "1"), file("q", "1"), file("q", "2"), file("p", "2")}, "q"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reject(t, buildZip(t, tc.entries...), Limits{}, RuleDuplicateName, tc.entry, s400)
		})
	}
}

func TestRejectEncrypted(t *testing.T) {
	flagged := stored("secret.txt", []byte("ciphertext"), func(h *zip.FileHeader) { h.Flags |= 0x1 })
	aes := stored("aes.txt", []byte("ciphertext"), func(h *zip.FileHeader) { h.Method = 99 })
	reject(t, buildZip(t, file("ok", "ok"), flagged), Limits{}, RuleEncrypted, "secret.txt", s400)
	reject(t, buildZip(t, file("ok", "ok"), aes), Limits{}, RuleEncrypted, "aes.txt", s400)
}

func TestRejectOverlap(t *testing.T) {
	t.Run("shared local header (Fifield)", func(t *testing.T) {
		reject(t, fifieldZip(), Limits{}, RuleOverlap, "b", s400)
	})
	t.Run("entry inside another", func(t *testing.T) {
		reject(t, nestedOverlapZip(), Limits{}, RuleOverlap, "b", s400)
	})
	t.Run("data past central directory", func(t *testing.T) {
		data := []byte("five!")
		var z handZip
		off := z.Raw(localRecord("a", zip.Store, 0, 5, 5, data))
		z.Add(cdEntry{Name: "a", Method: zip.Store, CSize: 1000, USize: 1000, Offset: off})
		reject(t, z.Bytes(), Limits{}, RuleOverlap, "a", s400)
	})
	t.Run("many entries sharing one stream", func(t *testing.T) {
		data := bytes.Repeat([]byte{'z'}, 64)
		var z handZip
		off := z.Raw(localRecord("x", zip.Store, 0, 64, 64, data))
		for _, n := range []string{"x", "y", "z"} {
			z.Add(cdEntry{Name: n, Method: zip.Store, CSize: 64, USize: 64, Offset: off})
		}
		reject(t, z.Bytes(), Limits{}, RuleOverlap, "y", s400)
	})
}

func TestRejectUnsupportedMethod(t *testing.T) {
	for _, m := range []uint16{1, 12, 14, 93, 95} {
		f := stored("data.bin", []byte("payload"), func(h *zip.FileHeader) { h.Method = m })
		reject(t, buildZip(t, file("ok", "ok"), f), Limits{}, RuleUnsupportedMethod, "data.bin", s400)
	}
}

func TestRejectInvalidName(t *testing.T) {
	for _, name := range []string{
		"",
		"a\x00b",
		"a\nb",
		"tab\there",
		"del\x7f",
		"c1\u0085",
		"bad\xffutf8",
		"./a",
		"a/./b",
		"a//b",
		"a//",
		strings.Repeat("s", 256),
		"dir/" + strings.Repeat("s", 256) + "/x",
		strings.Repeat("abcdefg/", 128) + "x", // 1025 bytes
	} {
		reject(t, buildZip(t, file("ok", "ok"), stored(name, nil, nil)), Limits{}, RuleNameInvalid, name, s400)
	}
	reject(t, buildZip(t, file(strings.Repeat("n", 20), "x")), Limits{MaxNameLength: 19}, RuleNameInvalid, strings.Repeat("n", 20), s400)
}

func TestRejectCorrupt(t *testing.T) {
	t.Run("bad local header", func(t *testing.T) {
		var z handZip
		z.Raw([]byte("garbage, not a local header at all"))
		z.Add(cdEntry{Name: "a", Method: zip.Store, Offset: 0})
		reject(t, z.Bytes(), Limits{}, RuleCorrupt, "a", s400)
	})
	t.Run("stored sizes differ", func(t *testing.T) {
		f := stored("a", []byte("abc"), func(h *zip.FileHeader) { h.UncompressedSize64 = 10 })
		reject(t, buildZip(t, f), Limits{}, RuleCorrupt, "a", s400)
	})
	t.Run("directory with content", func(t *testing.T) {
		var z handZip
		off := z.Raw(localRecord("d/", zip.Store, 0, 3, 3, []byte("abc")))
		z.Add(cdEntry{Name: "d/", Method: zip.Store, CSize: 3, USize: 3, Offset: off})
		reject(t, z.Bytes(), Limits{}, RuleCorrupt, "d/", s400)
	})
}

// TestFirstInCentralDirectoryOrder checks determinism: the first entry,
// in central-directory order, that breaks any rule is reported, and a
// pairwise rule counts for the later entry of the pair.
func TestFirstInCentralDirectoryOrder(t *testing.T) {
	t.Run("per-entry rules", func(t *testing.T) {
		data := buildZip(t, file("ok", "ok"), file("../x", "1"), file("/abs", "2"), withMode(file("l", "x"), fs.ModeSymlink))
		reject(t, data, Limits{}, RuleParentPath, "../x", s400)
	})
	t.Run("duplicate before later name error", func(t *testing.T) {
		data := buildZip(t, file("a", "1"), file("a", "2"), file("../x", "3"))
		reject(t, data, Limits{}, RuleDuplicateName, "a", s400)
	})
	t.Run("name error before later duplicate", func(t *testing.T) {
		data := buildZip(t, file("a", "1"), file("../x", "3"), file("a", "2"))
		reject(t, data, Limits{}, RuleParentPath, "../x", s400)
	})
	t.Run("overlap before later name error", func(t *testing.T) {
		data := bytes.Repeat([]byte("d"), 16)
		var z handZip
		off := z.Raw(localRecord("a", zip.Store, 0, 16, 16, data))
		z.Add(cdEntry{Name: "a", Method: zip.Store, CSize: 16, USize: 16, Offset: off})
		z.Add(cdEntry{Name: "b", Method: zip.Store, CSize: 16, USize: 16, Offset: off})
		z.Add(cdEntry{Name: "../c", Method: zip.Store, Offset: off})
		reject(t, z.Bytes(), Limits{}, RuleOverlap, "b", s400)
	})
	t.Run("name error before later overlap", func(t *testing.T) {
		data := bytes.Repeat([]byte("d"), 16)
		var z handZip
		off := z.Raw(localRecord("a", zip.Store, 0, 16, 16, data))
		z.Add(cdEntry{Name: "a", Method: zip.Store, CSize: 16, USize: 16, Offset: off})
		z.Add(cdEntry{Name: "b\\c", Method: zip.Store, CSize: 16, USize: 16, Offset: off})
		z.Add(cdEntry{Name: "c", Method: zip.Store, CSize: 16, USize: 16, Offset: off})
		reject(t, z.Bytes(), Limits{}, RuleBackslash, "b\\c", s400)
	})
	t.Run("stable across runs", func(t *testing.T) {
		data := buildZip(t, file("q", "1"), file("p", "1"), file("p", "2"), file("q", "2"))
		for range 20 {
			reject(t, data, Limits{}, RuleDuplicateName, "p", s400)
		}
	})
}

func TestInsecurePathGodebug(t *testing.T) {
	// With zipinsecurepath=0 archive/zip returns ErrInsecurePath together
	// with a usable reader; our rules still decide.
	t.Setenv("GODEBUG", "zipinsecurepath=0")
	bad := buildZip(t, file("ok", "ok"), file("a/../../b", "x"))
	if _, err := zip.NewReader(bytes.NewReader(bad), int64(len(bad))); !errors.Is(err, zip.ErrInsecurePath) {
		t.Skipf("archive/zip did not pick up GODEBUG (err %v)", err)
	}
	reject(t, bad, Limits{}, RuleParentPath, "a/../../b", s400)
	good := buildZip(t, webProject()...)
	if _, err := Validate(bytes.NewReader(good), int64(len(good)), Limits{}); err != nil {
		t.Fatalf("clean archive: %v", err)
	}
}

func TestRuleErrorFormat(t *testing.T) {
	err := error(&RuleError{Rule: RuleParentPath, Entry: "a/../b", Message: `path contains ".."`})
	if got, want := err.Error(), `entry "a/../b": path contains ".." (rule parent_path)`; got != want {
		t.Errorf("Error() = %s, want %s", got, want)
	}
	err = &RuleError{Rule: RuleNotZip, Message: "reading central directory", Err: zip.ErrFormat}
	if got, want := err.Error(), `reading central directory: zip: not a valid zip file (rule not_zip)`; got != want {
		t.Errorf("Error() = %s, want %s", got, want)
	}
	if !errors.Is(err, zip.ErrFormat) {
		t.Error("RuleError does not unwrap to its cause")
	}
	wrapped := errors.Join(errors.New("upload"), &RuleError{Rule: RuleSymlink})
	if !IsRule(wrapped, RuleSymlink) || IsRule(wrapped, RuleEmpty) || IsRule(errors.New("x"), RuleSymlink) || IsRule(nil, RuleSymlink) {
		t.Error("IsRule mismatch")
	}
}

func TestRuleStatus(t *testing.T) {
	want := map[Rule]int{
		RuleNotZip: 415, RuleTotalSize: 413, RuleEntrySize: 413, RuleEntryCount: 413,
		RuleEmpty: 400, RuleCompressionRatio: 400, RuleAbsolutePath: 400, RuleParentPath: 400,
		RuleBackslash: 400, RuleDriveLetter: 400, RuleSymlink: 400, RuleSpecialFile: 400,
		RuleDuplicateName: 400, RuleEncrypted: 400, RuleOverlap: 400, RuleUnsupportedMethod: 400,
		RuleNameInvalid: 400, RuleCorrupt: 400,
	}
	for r, s := range want {
		if got := r.Status(); got != s {
			t.Errorf("%s.Status() = %d, want %d", r, got, s)
		}
	}
}

func TestLimitsDefaults(t *testing.T) {
	d := DefaultLimits()
	if d != (Limits{MaxEntries: 20000, MaxTotalUncompressed: 1 << 30, MaxEntryRatio: 200, RatioMinSize: 1 << 20, MaxNameLength: 1024}) {
		t.Errorf("DefaultLimits() = %+v", d)
	}
	if got := (Limits{}).withDefaults(); got != d {
		t.Errorf("zero Limits = %+v, want defaults", got)
	}
	if got := (Limits{MaxEntries: -1, MaxEntryRatio: -3}).withDefaults(); got != d {
		t.Errorf("negative Limits = %+v, want defaults", got)
	}
}

// --- Extract ---

// readTree returns every regular file under dir, by slash path.
func readTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			files[filepath.ToSlash(rel)] = string(b)
		case d.IsDir():
		default:
			t.Errorf("unexpected %s: %s", d.Type(), rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestExtractWebProject(t *testing.T) {
	fixtures := webProject()
	data := buildZip(t, fixtures...)
	dest := t.TempDir()
	sum, err := Extract(context.Background(), bytes.NewReader(data), int64(len(data)), dest, Limits{})
	if err != nil {
		t.Fatalf("Extract: %v", err)
	}
	want := map[string]string{}
	for _, f := range fixtures {
		if !strings.HasSuffix(f.Header.Name, "/") {
			want[f.Header.Name] = string(f.Body)
		}
	}
	got := readTree(t, dest)
	if len(got) != len(want) {
		t.Errorf("extracted %d files, want %d", len(got), len(want))
	}
	for name, body := range want {
		if got[name] != body {
			t.Errorf("%s = %q, want %q", name, got[name], body)
		}
	}
	if sum.Files != len(want) {
		t.Errorf("Summary.Files = %d, want %d", sum.Files, len(want))
	}
	for _, d := range []string{"src/components", "empty", "public/img"} {
		if fi, err := os.Stat(filepath.Join(dest, d)); err != nil || !fi.IsDir() {
			t.Errorf("directory %s: %v", d, err)
		}
	}
	fi, err := os.Stat(filepath.Join(dest, "index.html"))
	if err != nil || fi.Mode().Perm()&^0o644 != 0 || fi.Mode()&fs.ModeType != 0 {
		t.Errorf("index.html mode %v, err %v; want regular, at most 0644", fi.Mode(), err)
	}
}

func TestExtractRejectsLikeValidate(t *testing.T) {
	dest := t.TempDir()
	data := fifieldZip()
	_, err := Extract(context.Background(), bytes.NewReader(data), int64(len(data)), dest, Limits{})
	wantRule(t, err, RuleOverlap, "b", s400)
	if got := readTree(t, dest); len(got) != 0 {
		t.Errorf("files written for an invalid archive: %v", got)
	}
}

// fileSize returns the size of dest/name, or 0 if it does not exist.
func fileSize(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func TestExtractLyingHeader(t *testing.T) {
	// 16 MiB of zeros deflates to ~16 KiB; the headers (central directory
	// and local) declare much less, so the ratio check cannot see it.
	zeros := make([]byte, 16<<20)
	for _, declared := range []uint64{1024, 2 << 20} {
		data := buildZip(t, file("ok.txt", "ok"), deflatedRaw(t, "liar.bin", zeros, declared))
		if _, err := Validate(bytes.NewReader(data), int64(len(data)), Limits{}); err != nil {
			t.Fatalf("declared %d: Validate rejected the lying archive (%v); the test needs it accepted", declared, err)
		}
		dest := t.TempDir()
		_, err := Extract(context.Background(), bytes.NewReader(data), int64(len(data)), dest, Limits{})
		wantRule(t, err, RuleEntrySize, "liar.bin", s413)
		if n := fileSize(t, filepath.Join(dest, "liar.bin")); n > int64(declared)+copyBufferSize {
			t.Errorf("declared %d: %d bytes on disk, more than declared + one buffer", declared, n)
		}
	}
}

func TestExtractTotalBudget(t *testing.T) {
	// Validate keeps the declared sizes within the total, and each entry
	// is held to its declared size, so the total check in the limiter is
	// defence in depth; exercise it directly.
	budget := int64(100)
	var out bytes.Buffer
	e := &entry{f: &zip.File{FileHeader: zip.FileHeader{Name: "x", UncompressedSize64: 1000}}}
	w := &limitWriter{ctx: context.Background(), w: &out, entry: e, left: 1000, budget: &budget, crc: crc32.NewIEEE()}
	if _, err := w.Write(make([]byte, 60)); err != nil {
		t.Fatal(err)
	}
	_, err := w.Write(make([]byte, 60))
	wantRule(t, err, RuleTotalSize, "x", s413)
	if out.Len() != 60 || budget != 40 {
		t.Errorf("wrote %d, budget %d; want 60, 40", out.Len(), budget)
	}
}

func TestExtractCorrupt(t *testing.T) {
	payload := []byte(strings.Repeat("payload ", 100))
	for _, tc := range []struct {
		name string
		f    fixture
	}{
		{"crc mismatch", stored("a.txt", payload, func(h *zip.FileHeader) { h.CRC32 ^= 1 })},
		{"crc mismatch deflate", func() fixture {
			f := deflatedRaw(t, "a.txt", payload, uint64(len(payload)))
			f.Header.CRC32 ^= 0xffff
			return f
		}()},
		{"invalid deflate", fixture{Header: zip.FileHeader{Name: "a.txt", Method: zip.Deflate, CompressedSize64: 8, UncompressedSize64: 8}, Body: []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, Raw: true}},
		{"short stream", deflatedRaw(t, "a.txt", payload, uint64(len(payload))+10)},
		{"truncated stream", func() fixture {
			f := deflatedRaw(t, "a.txt", payload, uint64(len(payload)))
			f.Body = f.Body[:len(f.Body)/2]
			f.Header.CompressedSize64 = uint64(len(f.Body))
			return f
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := buildZip(t, tc.f)
			_, err := Extract(context.Background(), bytes.NewReader(data), int64(len(data)), t.TempDir(), Limits{})
			wantRule(t, err, RuleCorrupt, "a.txt", s400)
		})
	}
}

// countingReaderAt counts ReadAt calls and runs hook after each.
type countingReaderAt struct {
	r     io.ReaderAt
	calls atomic.Int64
	hook  func(n int64)
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	calls := c.calls.Add(1)
	if c.hook != nil {
		c.hook(calls)
	}
	return n, err
}

func TestExtractContextCanceled(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB, stored
	data := buildZip(t, file("a.txt", "a"), stored("big.bin", big, nil), file("z.txt", "z"))

	t.Run("before start", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		dest := t.TempDir()
		_, err := Extract(ctx, bytes.NewReader(data), int64(len(data)), dest, Limits{})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if got := readTree(t, dest); len(got) != 0 {
			t.Errorf("wrote %v", got)
		}
	})
	t.Run("during copy", func(t *testing.T) {
		// Count the reads validation makes, then cancel a few reads into
		// the big entry's data.
		probe := &countingReaderAt{r: bytes.NewReader(data)}
		if _, err := Validate(probe, int64(len(data)), Limits{}); err != nil {
			t.Fatal(err)
		}
		validationReads := probe.calls.Load()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		r := &countingReaderAt{r: bytes.NewReader(data), hook: func(n int64) {
			if n == validationReads+6 {
				cancel()
			}
		}}
		dest := t.TempDir()
		_, err := Extract(ctx, r, int64(len(data)), dest, Limits{})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if IsRule(err, RuleCorrupt) {
			t.Errorf("cancellation reported as corruption: %v", err)
		}
		if n := fileSize(t, filepath.Join(dest, "big.bin")); n >= int64(len(big)) {
			t.Errorf("big.bin fully written (%d bytes) despite cancellation", n)
		}
		if _, err := os.Stat(filepath.Join(dest, "z.txt")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("z.txt extracted after cancellation: %v", err)
		}
	})
}

func TestExtractPlantedSymlink(t *testing.T) {
	for _, tc := range []struct{ name, target string }{
		{"absolute", "ABS"},
		{"relative", "../outside"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			dest := filepath.Join(base, "dest")
			outside := filepath.Join(base, "outside")
			for _, d := range []string{dest, outside} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			target := tc.target
			if target == "ABS" {
				target = outside
			}
			if err := os.Symlink(target, filepath.Join(dest, "site")); err != nil {
				t.Fatal(err)
			}
			data := buildZip(t, file("site/index.html", "pwned"), file("site/sub/x.js", "pwned"))
			_, err := Extract(context.Background(), bytes.NewReader(data), int64(len(data)), dest, Limits{})
			if err == nil {
				t.Fatal("Extract followed a symlink out of dest without error")
			}
			if got := readTree(t, outside); len(got) != 0 {
				t.Fatalf("wrote outside dest: %v", got)
			}
			entries, _ := os.ReadDir(outside)
			if len(entries) != 0 {
				t.Fatalf("created entries outside dest: %v", entries)
			}
		})
	}
}

func TestExtractExistingFile(t *testing.T) {
	dest := t.TempDir()
	if err := os.WriteFile(filepath.Join(dest, "a.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	data := buildZip(t, file("a.txt", "theirs"))
	_, err := Extract(context.Background(), bytes.NewReader(data), int64(len(data)), dest, Limits{})
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("err = %v, want fs.ErrExist", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "a.txt")); string(b) != "mine" {
		t.Errorf("existing file overwritten: %q", b)
	}
}
