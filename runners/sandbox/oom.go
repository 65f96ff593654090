package sandbox

import (
	"context"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/typeurl/v2"
)

// oomKillCount reads how many processes the kernel OOM-killed in the task's
// memory cgroup (cgroup v1 memory.oom_control "oom_kill", cgroup v2
// memory.events "oom_kill"), through containerd's task metrics so that it
// works wherever the runner itself runs. It must be called before the task
// is deleted (the cgroup goes with it). ok is false when the daemon or
// kernel does not report the counter.
func oomKillCount(ctx context.Context, task client.Task) (n uint64, ok bool) {
	m, err := task.Metrics(ctx)
	if err != nil || m == nil || m.Data == nil {
		return 0, false
	}
	v, err := typeurl.UnmarshalAny(m.Data)
	if err != nil {
		return 0, false
	}
	switch s := v.(type) {
	case *v1.Metrics:
		if s.MemoryOomControl != nil {
			return s.MemoryOomControl.OomKill, true
		}
	case *v2.Metrics:
		if s.MemoryEvents != nil {
			return s.MemoryEvents.OomKill, true
		}
	}
	return 0, false
}
