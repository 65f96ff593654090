package sandbox

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
)

// rootFSDirs are the directories of the tiny rootfs: mount points for the
// host binds (usr, etc/ssl), the kernel filesystems (proc, dev, sys), the
// tmpfs mounts (tmp, run, home/build) and the job's workspace. They stay
// empty on the host; everything in them comes from mounts at run time.
var rootFSDirs = []struct {
	path string
	mode os.FileMode
}{
	{"usr", 0o755},
	{"tmp", os.ModeSticky | 0o777},
	{"proc", 0o555},
	{"dev", 0o755},
	{"sys", 0o555},
	{"workspace", 0o755},
	{"run", 0o755},
	{"home", 0o755},
	{"home/build", 0o700},
	{"etc", 0o755},
	{"etc/ssl", 0o755},
	{"root", 0o700},
}

// rootFSLinks make the merged-/usr layout of Debian work with only /usr
// bound from the host: /bin/sh resolves to /usr/bin/sh and so on.
var rootFSLinks = []struct{ name, target string }{
	{"bin", "usr/bin"},
	{"lib", "usr/lib"},
	{"lib64", "usr/lib64"},
	{"sbin", "usr/sbin"},
}

// rootFSFiles are the only regular files of the rootfs: just enough for
// libc, node and npm to resolve the build user, localhost and nothing else.
func rootFSFiles() []struct {
	name string
	data string
} {
	return []struct {
		name string
		data string
	}{
		{"etc/passwd", fmt.Sprintf(
			"root:x:0:0:root:/root:/usr/sbin/nologin\n"+
				"build:x:%d:%d:zipship build:/home/build:/bin/sh\n"+
				"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
			DefaultUID, DefaultGID)},
		{"etc/group", fmt.Sprintf(
			"root:x:0:\nbuild:x:%d:\nnogroup:x:65534:\n", DefaultGID)},
		{"etc/hosts", "127.0.0.1\tlocalhost build\n::1\tlocalhost ip6-localhost ip6-loopback\n"},
		{"etc/hostname", "build\n"},
		{"etc/nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"},
		// There is no DNS inside a job: the build step has no network and
		// the install step reaches the registry through an HTTP proxy, which
		// resolves names itself. Pointing the resolver at 127.0.0.1 makes a
		// stray lookup fail at once (connection refused on the job's own
		// loopback) instead of waiting for timeouts, and lets a runner that
		// pins the job's network namespace answer DNS there if it ever wants.
		{"etc/resolv.conf", "# zipship build sandbox: no DNS inside jobs (package installs use an HTTP proxy)\n" +
			"nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"},
	}
}

// PrepareRootFS creates, in dir, the tiny read-only root filesystem that
// jobs run in when no image is configured: empty mount points, symlinks
// bin, lib, lib64 and sbin into usr (the host's /usr is bound there
// read-only at run time) and a minimal etc with the build user (uid and
// gid 10000, home /home/build). It exists so that builds need neither an
// image registry nor a debootstrap. It is idempotent: running it again
// repairs a damaged tree and leaves a correct one untouched, so it is safe
// to call at every start of a runner.
func PrepareRootFS(dir string) error {
	if dir == "" {
		return fmt.Errorf("prepare rootfs: empty directory")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("prepare rootfs %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return fmt.Errorf("prepare rootfs: %w", err)
	}
	// The rootfs directory becomes "/" inside the job: the build user must
	// be able to traverse it even when it was made by os.MkdirTemp (0700).
	if err := os.Chmod(abs, 0o755); err != nil {
		return fmt.Errorf("prepare rootfs: %w", err)
	}
	for _, d := range rootFSDirs {
		p := filepath.Join(abs, d.path)
		if fi, err := os.Lstat(p); err == nil && !fi.IsDir() {
			if err := os.Remove(p); err != nil {
				return fmt.Errorf("prepare rootfs: replace %s: %w", p, err)
			}
		}
		if err := os.MkdirAll(p, d.mode); err != nil {
			return fmt.Errorf("prepare rootfs: %w", err)
		}
		// MkdirAll is subject to the umask and skips existing directories.
		if err := os.Chmod(p, d.mode); err != nil {
			return fmt.Errorf("prepare rootfs: %w", err)
		}
	}
	for _, l := range rootFSLinks {
		p := filepath.Join(abs, l.name)
		if cur, err := os.Readlink(p); err == nil && cur == l.target {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("prepare rootfs: replace %s: %w", p, err)
		}
		if err := os.Symlink(l.target, p); err != nil {
			return fmt.Errorf("prepare rootfs: %w", err)
		}
	}
	for _, f := range rootFSFiles() {
		if err := writeFileIfChanged(filepath.Join(abs, f.name), []byte(f.data), 0o644); err != nil {
			return fmt.Errorf("prepare rootfs: %w", err)
		}
	}
	return nil
}

// writeFileIfChanged writes data to name atomically (temp file + rename),
// unless name already is a regular file with exactly that content and mode,
// so that jobs running from the same rootfs never see a half-written file.
func writeFileIfChanged(name string, data []byte, mode os.FileMode) error {
	if fi, err := os.Lstat(name); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm() == mode {
		if cur, err := os.ReadFile(name); err == nil && bytes.Equal(cur, data) {
			return nil
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(name), ".tmp-"+filepath.Base(name)+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if fi, err := os.Lstat(name); err == nil && fi.IsDir() {
		if err := os.RemoveAll(name); err != nil {
			return fmt.Errorf("replace %s: %w", name, err)
		}
	}
	if err := os.Rename(tmp.Name(), name); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}
