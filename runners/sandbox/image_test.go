package sandbox_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/zipship/zipship/runners/sandbox"
	"github.com/zipship/zipship/runners/sandbox/sandboxtest"
)

// ociArchive builds an OCI image layout tar with one layer holding the
// files of dir, named ref: what `ctr images import` of a debootstrap would
// give, without a registry.
func ociArchive(t *testing.T, dir, ref string) []byte {
	t.Helper()
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "./", Mode: 0o755})
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			link, _ = os.Readlink(p)
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		h.Name, h.Uid, h.Gid, h.Uname, h.Gname = rel, 0, 0, "", ""
		if fi.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			_, err = tw.Write(b)
			return err
		}
		return nil
	})
	if err != nil || tw.Close() != nil {
		t.Fatalf("layer: %v", err)
	}
	blobs := map[string][]byte{}
	add := func(b []byte) string {
		sum := sha256.Sum256(b)
		d := "sha256:" + hex.EncodeToString(sum[:])
		blobs[d] = b
		return d
	}
	layerDigest := add(layer.Bytes())
	mustJSON := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	config := mustJSON(map[string]any{
		"architecture": runtime.GOARCH, "os": "linux",
		"config": map[string]any{"Env": []string{"PATH=/usr/bin:/bin"}, "Cmd": []string{"/bin/sh"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	})
	configDigest := add(config)
	manifest := mustJSON(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": configDigest, "size": len(config)},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layerDigest, "size": layer.Len()}},
	})
	manifestDigest := add(manifest)
	index := mustJSON(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
		"manifests": []any{map[string]any{
			"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifestDigest, "size": len(manifest),
			"platform":    map[string]string{"architecture": runtime.GOARCH, "os": "linux"},
			"annotations": map[string]string{"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": "v1"},
		}},
	})
	var out bytes.Buffer
	aw := tar.NewWriter(&out)
	write := func(name string, b []byte) {
		if err := aw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := aw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	write("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	write("index.json", index)
	for d, b := range blobs {
		write("blobs/sha256/"+strings.TrimPrefix(d, "sha256:"), b)
	}
	if err := aw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func TestImageRootFS(t *testing.T) {
	addr := sandboxtest.Start(t)
	ctx := context.Background()
	c, err := client.New(addr, client.WithDefaultNamespace(sandbox.DefaultNamespace))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const ref = "zipship.test/sandbox-rootfs:v1"
	imgs, err := c.Import(ctx, bytes.NewReader(ociArchive(t, sandboxtest.RootFS(t), ref)))
	if err != nil {
		t.Fatalf("import: %v", err)
	}
	t.Cleanup(func() { _ = c.ImageService().Delete(context.WithoutCancel(ctx), ref) })
	t.Logf("imported %d image(s): %s", len(imgs), imgs[0].Name)

	sb := newSandbox(t, func(cfg *sandbox.Config) {
		cfg.RootFS = ""
		cfg.Image = ref
		cfg.ReadOnlyBinds = sandbox.DefaultReadOnlyBinds() // the test image has no /usr of its own
	})
	ws := t.TempDir()
	start := time.Now()
	res, o := run(t, sb, sandbox.Job{
		ID:        "image-job",
		Args:      sh(`id -u; echo x > /workspace/f; echo x > /etc/probe 2>/dev/null && echo ROOTFS-WRITABLE; echo ok`),
		Workspace: ws,
	})
	t.Logf("image job took %v", time.Since(start))
	if res.ExitCode != 0 || o.stdout.String() != "10000\nok\n" {
		t.Fatalf("%+v %q %q", res, o.stdout.String(), o.stderr.String())
	}
	if _, err := os.Stat(filepath.Join(ws, "f")); err != nil {
		t.Fatal(err)
	}
	assertGone(t, sb, "image-job")
	// The view snapshot went with the container.
	var left []string
	if err := c.SnapshotService("").Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if strings.HasPrefix(info.Name, "zs-image-job-") {
			left = append(left, info.Name)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(left) > 0 {
		t.Fatalf("snapshots left: %v", left)
	}
}
