package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/containerd/v2/client"
)

// cgroupRoot is where the host's cgroup file systems are mounted.
var cgroupRoot = "/sys/fs/cgroup"

// pidsLimitHits reads how many times the task's pids cgroup refused a fork
// or clone because the job was at its limit: the "max" counter of
// pids.events. Neither containerd's cgroup v1 nor its v2 metrics carry that
// counter (only pids.current and pids.max), so the file is read directly,
// at the container's cgroups path (containerd's default is
// /<namespace>/<container id>) under the v1 pids hierarchy or the unified
// v2 one. It must be called after the task exits and before it is deleted
// (the cgroup goes with it). ok is false when the cgroup cannot be found
// from here (a systemd cgroups path, a daemon on another host or mount
// namespace) or the kernel has no such counter.
func pidsLimitHits(ctx context.Context, container client.Container) (n uint64, ok bool) {
	spec, err := container.Spec(ctx)
	if err != nil || spec == nil || spec.Linux == nil {
		return 0, false
	}
	p := spec.Linux.CgroupsPath
	if p == "" || !filepath.IsAbs(p) || strings.Contains(p, ":") {
		return 0, false // systemd's slice:prefix:name, not a path
	}
	for _, dir := range []string{
		filepath.Join(cgroupRoot, "pids", p),    // cgroup v1
		filepath.Join(cgroupRoot, p),            // cgroup v2, unified mode
		filepath.Join(cgroupRoot, "unified", p), // cgroup v2, hybrid mode
	} {
		data, err := os.ReadFile(filepath.Join(dir, "pids.events"))
		if err != nil {
			continue
		}
		if n, ok := parsePidsEvents(data); ok {
			return n, true
		}
	}
	return 0, false
}

// parsePidsEvents finds the "max N" line of a pids.events file.
func parsePidsEvents(data []byte) (uint64, bool) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "max" {
			n, err := strconv.ParseUint(f[1], 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}
