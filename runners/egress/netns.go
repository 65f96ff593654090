//go:build linux

package egress

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

const (
	// DefaultNetNSDir is where job namespaces are pinned, like
	// /run/netns for `ip netns add`.
	DefaultNetNSDir = "/run/zipship/netns"
	// ProxyListenAddr is where the proxy listens inside each job's
	// namespace. Every job has its own 127.0.0.1, so all use the same.
	ProxyListenAddr = "127.0.0.1:3128"
)

// validID keeps job ids usable as a single file name.
var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// JobNetwork is a job's network: a fresh network namespace with only a
// loopback interface, pinned at NetNSPath so that a container can join it,
// with an allow-listing Proxy listening on 127.0.0.1:3128 inside it. The
// proxy's outbound connections are made from the host namespace, so the
// proxy is the job's only way out; there is no veth, route or firewall
// rule, and nothing to leak if the runner dies besides the pin file (see
// CleanupStale).
//
// Give the container the OCI network namespace path NetNSPath() and the
// environment Env().
type JobNetwork struct {
	id       string
	path     string
	proxy    *Proxy
	serveErr chan error
	log      *slog.Logger

	closeOnce sync.Once
	closeErr  error
}

// NewJobNetwork creates the network for job id (letters, digits, ".", "_",
// "-"; unique among the jobs running on this machine): a new network
// namespace with lo up, pinned at <opts.NetNSDir>/<id>, and a Proxy
// enforcing policy listening on its 127.0.0.1:3128. The policy must be
// valid (see ParsePolicy). Close it when the job is over.
func NewJobNetwork(id string, policy Policy, opts ProxyOptions) (*JobNetwork, error) {
	if !validID.MatchString(id) {
		return nil, fmt.Errorf("egress: job network: invalid id %q", id)
	}
	if _, err := ParsePolicy(policy.Allow); err != nil {
		return nil, fmt.Errorf("egress: job network %s: %w", id, err)
	}
	dir := opts.NetNSDir
	if dir == "" {
		dir = DefaultNetNSDir
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("egress: job network %s: %w", id, err)
	}
	path := filepath.Join(dir, id)
	// O_EXCL: two runners (or a leftover) can never share a pin.
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("egress: job network %s: %s already exists (job running, or a leftover for CleanupStale)", id, path)
		}
		return nil, fmt.Errorf("egress: job network %s: create pin file: %w", id, err)
	}
	f.Close()

	ln, err := newPinnedNetNS(path)
	if err != nil {
		_ = os.Remove(path)
		return nil, fmt.Errorf("egress: job network %s: %w", id, err)
	}

	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	opts.Log = opts.Log.With("job", id)
	n := &JobNetwork{
		id:       id,
		path:     path,
		proxy:    NewProxy(policy, opts),
		serveErr: make(chan error, 1),
		log:      opts.Log,
	}
	go func() { n.serveErr <- n.proxy.Serve(ln) }()
	return n, nil
}

// ID returns the job id the network was created for.
func (n *JobNetwork) ID() string { return n.id }

// NetNSPath returns the pinned namespace's path, for the container's OCI
// network namespace (specs.LinuxNamespace{Type: "network", Path: ...}).
func (n *JobNetwork) NetNSPath() string { return n.path }

// ProxyURL returns the proxy's URL as seen from inside the namespace.
func (n *JobNetwork) ProxyURL() string { return "http://" + ProxyListenAddr }

// Env returns the environment that points npm and other HTTP clients in
// the job at the proxy. NO_PROXY keeps the job's own loopback direct.
func (n *JobNetwork) Env() []string {
	u := n.ProxyURL()
	return []string{
		"HTTPS_PROXY=" + u,
		"HTTP_PROXY=" + u,
		"https_proxy=" + u,
		"http_proxy=" + u,
		"npm_config_proxy=" + u,
		"npm_config_https_proxy=" + u,
		"NO_PROXY=localhost,127.0.0.1",
		"no_proxy=localhost,127.0.0.1",
	}
}

// Refused returns the destinations the job was refused (Proxy.Refused).
func (n *JobNetwork) Refused() []string { return n.proxy.Refused() }

// Stats returns the proxy's counters (Proxy.Stats).
func (n *JobNetwork) Stats() Stats { return n.proxy.Stats() }

// Close stops the proxy, closing every tunnel, and unpins and removes the
// namespace file. The namespace itself disappears once no process is left
// in it. Safe to call more than once.
func (n *JobNetwork) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		if err := n.proxy.Close(); err != nil {
			errs = append(errs, err)
		}
		if err := <-n.serveErr; err != nil {
			errs = append(errs, err)
		}
		if err := unpin(n.path); err != nil {
			errs = append(errs, err)
		}
		if err := errors.Join(errs...); err != nil {
			n.closeErr = fmt.Errorf("egress: close job network %s: %w", n.id, err)
		}
	})
	return n.closeErr
}

// CleanupStale unpins and removes every file left in dir (DefaultNetNSDir
// in production) by a runner that died without closing its networks. Call
// it at start-up, before creating any JobNetwork in dir, and only when no
// other runner uses dir. A missing dir is not an error.
func CleanupStale(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("egress: clean up %s: %w", dir, err)
	}
	var errs []error
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		if err := unpin(filepath.Join(dir, e.Name())); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("egress: clean up %s: %w", dir, err)
	}
	return nil
}

// unpin unmounts path (every stacked mount, lazily: a container may still
// be in the namespace) and removes it. A path that is not mounted or does
// not exist is fine.
func unpin(path string) error {
	for i := 0; ; i++ {
		err := unix.Unmount(path, unix.MNT_DETACH)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			break // not (or no longer) a mount point
		}
		if err != nil {
			return fmt.Errorf("unmount %s: %w", path, err)
		}
		if i == 16 {
			return fmt.Errorf("unmount %s: still mounted after %d unmounts", path, i+1)
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}

// newPinnedNetNS creates a network namespace on a dedicated, locked OS
// thread, brings its lo up, opens a TCP listener on ProxyListenAddr in it,
// pins it by bind-mounting the thread's namespace onto path (an existing
// file) and switches the thread back. The listener's socket belongs to the
// new namespace for its whole life, whichever thread later accepts on it.
func newPinnedNetNS(path string) (net.Listener, error) {
	type result struct {
		ln  net.Listener
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		ln, restored, err := enterNewNetNS(path)
		ch <- result{ln, err}
		if restored {
			runtime.UnlockOSThread()
		}
		// Otherwise the thread is still in the job's namespace: return
		// with it locked, and the runtime terminates it instead of
		// reusing it for other goroutines.
	}()
	r := <-ch
	return r.ln, r.err
}

// enterNewNetNS does newPinnedNetNS's work on the calling, locked thread.
// restored reports whether the thread is back in its original namespace
// (or never left it).
func enterNewNetNS(path string) (ln net.Listener, restored bool, err error) {
	const self = "/proc/thread-self/ns/net"
	orig, err := unix.Open(self, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, true, fmt.Errorf("open current network namespace: %w", err)
	}
	defer unix.Close(orig)
	var origStat unix.Stat_t
	if err := unix.Fstat(orig, &origStat); err != nil {
		return nil, true, fmt.Errorf("stat current network namespace: %w", err)
	}
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return nil, true, fmt.Errorf("unshare network namespace: %w", err)
	}

	ln, err = setUpNetNS(path)

	serr := unix.Setns(orig, unix.CLONE_NEWNET)
	if serr == nil {
		var now unix.Stat_t
		if serr = unix.Stat(self, &now); serr == nil && (now.Dev != origStat.Dev || now.Ino != origStat.Ino) {
			serr = errors.New("still in another namespace after setns")
		}
	}
	if serr != nil {
		if ln != nil {
			ln.Close()
			_ = unix.Unmount(path, unix.MNT_DETACH)
		}
		return nil, false, errors.Join(err, fmt.Errorf("return to the original network namespace: %w", serr))
	}
	return ln, true, err
}

// setUpNetNS runs in the new namespace: lo up, listener, pin.
func setUpNetNS(path string) (net.Listener, error) {
	if err := linkUp("lo"); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp4", ProxyListenAddr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s in the job namespace: %w", ProxyListenAddr, err)
	}
	if err := unix.Mount("/proc/thread-self/ns/net", path, "", unix.MS_BIND, ""); err != nil {
		ln.Close()
		return nil, fmt.Errorf("pin network namespace at %s: %w", path, err)
	}
	return ln, nil
}

// linkUp sets IFF_UP on the interface name in the calling thread's
// network namespace.
func linkUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bring %s up: socket: %w", name, err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Errorf("bring %s up: %w", name, err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring %s up: get flags: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring %s up: set flags: %w", name, err)
	}
	return nil
}
