package bus_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/zipship/zipship/infra/bus"
)

func TestFileCheckpoint(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cp := bus.FileCheckpoint(filepath.Join(dir, "relay.checkpoint"))

	if n, err := cp.Load(ctx); err != nil || n != 0 {
		t.Fatalf("missing file: Load = %d, %v; want 0, nil", n, err)
	}
	for _, pos := range []int64{1, 42, 7, 1 << 40} {
		if err := cp.Save(ctx, pos); err != nil {
			t.Fatalf("Save(%d): %v", pos, err)
		}
		if n, err := cp.Load(ctx); err != nil || n != pos {
			t.Fatalf("Load after Save(%d) = %d, %v", pos, n, err)
		}
	}
	// Saves replace the file atomically and leave no temp files.
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "relay.checkpoint" {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %v", names)
	}
	// A second value reads the same file.
	if n, err := bus.FileCheckpoint(filepath.Join(dir, "relay.checkpoint")).Load(ctx); err != nil || n != 1<<40 {
		t.Errorf("fresh Load = %d, %v", n, err)
	}
}

func TestFileCheckpointCorrupt(t *testing.T) {
	for name, content := range map[string]string{
		"text":    "abc\n",
		"empty":   "",
		"float":   "1.5\n",
		"two":     "1 2\n",
		"garbage": "\x00\x01",
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "cp")
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			if n, err := bus.FileCheckpoint(p).Load(context.Background()); err == nil {
				t.Fatalf("Load of %q = %d, nil; want an error", content, n)
			}
		})
	}
	// Surrounding whitespace is tolerated (a hand-edited file).
	p := filepath.Join(t.TempDir(), "cp")
	if err := os.WriteFile(p, []byte("  12 \n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if n, err := bus.FileCheckpoint(p).Load(context.Background()); err != nil || n != 12 {
		t.Errorf("Load = %d, %v", n, err)
	}
}

func TestFileCheckpointErrors(t *testing.T) {
	missingDir := bus.FileCheckpoint(filepath.Join(t.TempDir(), "no", "such", "dir", "cp"))
	if err := missingDir.Save(context.Background(), 1); err == nil {
		t.Error("Save into a missing directory succeeded")
	}
	// A directory where the file should be is an error, not position 0.
	dir := t.TempDir()
	if _, err := bus.FileCheckpoint(dir).Load(context.Background()); err == nil {
		t.Error("Load of a directory succeeded")
	}
}
