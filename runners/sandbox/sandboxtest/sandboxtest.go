// Package sandboxtest gives tests a real containerd and a prepared rootfs,
// so that the sandbox is tested against what production runs, not a fake.
// The daemon is started once per test binary and shared by all its tests;
// call Stop from TestMain after m.Run to end it (otherwise it ends with
// the test binary, through its parent-death signal).
package sandboxtest

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/zipship/zipship/runners/sandbox"
)

var (
	once     sync.Once
	address  string
	stopFn   func() error
	dataDir  string
	startErr error
)

// Start returns the address of a containerd that answers: the system's (or
// $ZIPSHIP_CONTAINERD_ADDRESS) when one runs, otherwise a private one
// started for this test binary. It fails the test, never skips it, when
// containerd or runc is missing, with the message saying how to install
// them.
func Start(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		dir, err := os.MkdirTemp("", "zipship-containerd-")
		if err != nil {
			startErr = err
			return
		}
		dataDir = dir
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		address, stopFn, startErr = sandbox.EnsureContainerd(ctx, dir, log)
	})
	if startErr != nil {
		t.Fatalf("sandboxtest: no containerd for the test: %v", startErr)
	}
	return address
}

// Stop ends the private containerd started by Start, if any, and removes
// its data directory. Call it from TestMain after m.Run; it is safe to call
// when Start never ran.
func Stop() {
	if stopFn != nil {
		if err := stopFn(); err != nil {
			slog.Warn("sandboxtest: stop containerd", "err", err)
		}
	}
	if dataDir != "" {
		_ = os.RemoveAll(dataDir)
	}
}

// RootFS prepares a rootfs directory (sandbox.PrepareRootFS) in a temporary
// directory removed after the test, and returns its path.
func RootFS(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := sandbox.PrepareRootFS(dir); err != nil {
		t.Fatalf("sandboxtest: %v", err)
	}
	return dir
}
