package sandbox

// Exported for the external tests only.
var (
	EnsureContainerdWith = ensureContainerd
	ContainerID          = containerID
)
