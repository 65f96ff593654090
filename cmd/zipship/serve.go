package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"golang.org/x/sync/errgroup"

	"github.com/zipship/zipship/app"
	"github.com/zipship/zipship/archive"
	"github.com/zipship/zipship/auth"
	"github.com/zipship/zipship/buildlog"
	"github.com/zipship/zipship/gateway"
	"github.com/zipship/zipship/gateway/live"
	"github.com/zipship/zipship/infra/blob/fs"
	"github.com/zipship/zipship/infra/bus"
	"github.com/zipship/zipship/infra/cdn/edge"
	"github.com/zipship/zipship/infra/eventstore/sqlite"
	"github.com/zipship/zipship/projections"
	"github.com/zipship/zipship/runners"
	"github.com/zipship/zipship/runners/egress"
	"github.com/zipship/zipship/runners/sandbox"
)

// shutdownGrace bounds how long in-flight requests (uploads) may finish
// after SIGTERM.
const shutdownGrace = 30 * time.Second

// buildDrain bounds how long the builds in progress may finish after
// SIGTERM.
const buildDrain = 10 * time.Second

func runServe(ctx context.Context, args []string, stderr io.Writer) int {
	fset := flag.NewFlagSet("serve", flag.ContinueOnError)
	fset.SetOutput(stderr)
	var c config
	c.register(fset)
	var rf runnerFlags
	rf.register(fset)
	if err := fset.Parse(args); err != nil {
		return 2
	}
	if err := c.finish(); err != nil {
		fmt.Fprintln(stderr, "zipship serve:", err)
		return 2
	}
	if err := rf.finish(); err != nil {
		fmt.Fprintln(stderr, "zipship serve:", err)
		return 2
	}
	log, err := c.logger(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "zipship serve:", err)
		return 2
	}
	if err := serve(ctx, c, rf, log); err != nil {
		log.Error("serve failed", "err", err)
		return 1
	}
	return 0
}

// serve runs every role in this process until ctx ends, then shuts down:
// stop accepting, let in-flight uploads finish (an acknowledged upload is
// already stored), stop the runner (an interrupted build is redelivered on
// the next start), close the stores.
func serve(ctx context.Context, c config, rf runnerFlags, log *slog.Logger) error {
	for _, d := range []string{c.dataDir, c.path("work")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	// Leftovers of a crash: workspaces. (The blob store removes its own
	// stale temporary files.)
	ents, _ := os.ReadDir(c.path("work"))
	for _, e := range ents {
		os.RemoveAll(c.path("work", e.Name()))
	}
	secret, err := auth.LoadSecret(os.Getenv("ZIPSHIP_JWT_SECRET"), c.dataDir, true)
	if err != nil {
		return err
	}
	events, err := sqlite.Open(c.path("events.db"))
	if err != nil {
		return err
	}
	defer events.Close()
	blobs, err := fs.New(c.path("blobs"))
	if err != nil {
		return err
	}
	rm, err := projections.Open(c.path("readmodels.db"))
	if err != nil {
		return err
	}
	defer rm.Close()

	a := app.New(events, blobs, log)
	logs := buildlog.NewBroker(blobs, log.With("component", "buildlog"))
	edgeSrv := edge.New(blobs, edge.Options{BaseDomain: c.baseDomain, Logger: log.With("component", "edge")})
	projector := projections.NewProjector(events, rm, log)
	hub := live.NewHub(events, c.urls(), log.With("component", "live"))
	hub.WaitForReadModels(projector)
	hub.WithLogs(logs)
	gw := gateway.New(a, rm, projector, hub, gateway.Config{
		Secret: secret, MaxUploadSize: c.maxUploadSize, ZipLimits: archive.DefaultLimits(),
		URLs: c.urls(), Refresher: edgeSrv, Logs: logs, Log: log.With("component", "gateway"),
	})
	sb, stopSandbox, err := startSandbox(ctx, c, rf, log)
	if err != nil {
		return err
	}
	defer stopSandbox()
	runner := runners.New(a, runners.Config{WorkDir: c.path("work"), ZipLimits: archive.DefaultLimits(),
		Refresher: edgeSrv, Log: log.With("component", "runner"),
		Sandbox: sb, Logs: logs, NetNSDir: c.path("netns"),
		InstallAllow: rf.installAllowList, InstallAllowPrivate: rf.installAllowPrivate, BuildAllow: rf.buildAllowList,
		InstallTimeout: rf.installTimeout, BuildTimeout: rf.buildTimeout, MemoryBytes: rf.memoryBytes,
		Corepack: sb != nil && hostHasCorepack()})
	sched := runners.NewScheduler(runner, rf.concurrencyN)

	pubsub := bus.NewInProcess(log.With("component", "bus"))
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 5 * time.Second}, bus.Logger(log.With("component", "router")))
	if err != nil {
		return fmt.Errorf("router: %w", err)
	}
	router.AddConsumerHandler("runner", bus.EventsTopic, pubsub, sched.HandleMessage)
	relay := bus.NewRelay(events, pubsub, bus.FileCheckpoint(c.path("relay.checkpoint")), log)

	apiLn, err := net.Listen("tcp", c.addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", c.addr, err)
	}
	edgeLn, err := net.Listen("tcp", c.edgeAddr)
	if err != nil {
		apiLn.Close()
		return fmt.Errorf("listen %s: %w", c.edgeAddr, err)
	}
	apiSrv := &http.Server{Handler: gw.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	// The edge's fasthttp front end: it serves small files at nginx's rate,
	// which net/http cannot reach (see bench/edge).
	siteSrv := edgeSrv.NewFastHTTPServer(10*time.Second, 2*time.Minute)

	// Background roles stop when bg is cancelled, after the HTTP servers.
	// The relay has its own context: it must stop before the router, or it
	// would publish to a bus nobody listens to any more and move its
	// checkpoint past events no runner saw. The scheduler acknowledges a
	// request once queued; what it had not finished is resumed from the
	// event store at the next start, before the relay runs.
	bg, stopBG := context.WithCancel(context.Background())
	defer stopBG()
	relayCtx, stopRelay := context.WithCancel(bg)
	defer stopRelay()
	relayDone := make(chan struct{})
	g, gctx := errgroup.WithContext(bg)
	g.Go(func() error { return projector.Run(gctx) })
	g.Go(func() error { return router.Run(gctx) })
	g.Go(func() error { return sched.Run(gctx) })
	g.Go(func() error {
		defer close(relayDone)
		select {
		case <-router.Running():
		case <-gctx.Done():
			return nil
		}
		// In request order, before any new request from the bus: a
		// tenant's builds then run in request order across a restart.
		if err := resumeBuilds(relayCtx, a, rm, projector, sched, log); err != nil || relayCtx.Err() != nil {
			return err
		}
		return relay.Run(relayCtx)
	})
	g.Go(func() error { return repairPointers(gctx, a, rm, projector, edgeSrv, log) })
	g.Go(func() error { return serveHTTP(apiSrv, apiLn) })
	g.Go(func() error { return siteSrv.Serve(edgeLn) })
	live, _ := c.urls()("example", "")
	log.Info("zipship serving", "api", "http://"+apiLn.Addr().String(), "edge", "http://"+edgeLn.Addr().String(),
		"sites", live, "data", c.dataDir, "version", version)

	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case <-gctx.Done():
		log.Error("a component stopped; shutting down")
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := apiSrv.Shutdown(sctx); err != nil {
		log.Warn("gateway shutdown", "err", err)
	}
	if err := siteSrv.ShutdownWithContext(sctx); err != nil {
		log.Warn("edge shutdown", "err", err)
	}
	// A fasthttp server shut down before its Serve began would serve on:
	// its Serve returns once the listener is closed.
	edgeLn.Close()
	// No new requests; the builds in hand may finish for a while, then they
	// are interrupted and, with the queued ones, resumed after a restart.
	stopRelay()
	select {
	case <-relayDone:
	case <-time.After(buildDrain):
		log.Warn("relay still publishing; closing the bus", "waited", buildDrain)
	}
	router.Close()
	<-relayDone
	dctx, cancelDrain := context.WithTimeout(context.Background(), buildDrain)
	if !sched.Drain(dctx) {
		log.Warn("builds still running; interrupting them", "waited", buildDrain, "running", sched.Running())
	}
	cancelDrain()
	if n := sched.Queued(); n > 0 {
		log.Info("queued builds left for the next start", "queued", n)
	}
	stopBG()
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	log.Info("stopped")
	return err
}

// repairPointers makes every tenant's pointer object agree with its site
// stream once the read models caught up: a crash between a pointer move's
// event and its pointer write is repaired at the next start.
func repairPointers(ctx context.Context, a *app.App, rm *projections.DB, p *projections.Projector, cdn *edge.Server, log *slog.Logger) error {
	head, err := a.Events().Head(ctx)
	if err != nil {
		return fmt.Errorf("repair pointers: %w", err)
	}
	if err := p.WaitFor(ctx, head); err != nil {
		return nil // shutting down
	}
	tenants, err := rm.LiveTenants(ctx)
	if err != nil {
		return fmt.Errorf("repair pointers: %w", err)
	}
	for _, t := range tenants {
		if _, err := a.SyncPointer(ctx, t, cdn); err != nil {
			log.Error("repair pointer", "tenant", t, "err", err)
		}
	}
	log.Info("pointers checked", "tenants", len(tenants))
	return nil
}

// resumeBuilds enqueues, in request order, every build the event store
// says is unfinished once the read models caught up with it: requests
// acknowledged on the bus but not finished when the process stopped
// (crash, or SIGTERM before they ended). A redelivered request for one of
// them is then a no-op.
func resumeBuilds(ctx context.Context, a *app.App, rm *projections.DB, p *projections.Projector, sched *runners.Scheduler, log *slog.Logger) error {
	head, err := a.Events().Head(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil // shutting down
		}
		return fmt.Errorf("resume builds: %w", err)
	}
	if err := p.WaitFor(ctx, head); err != nil {
		if ctx.Err() != nil {
			return nil // shutting down
		}
		return fmt.Errorf("resume builds: %w", err)
	}
	builds, err := rm.UnfinishedBuilds(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("resume builds: %w", err)
	}
	for _, b := range builds {
		sched.Enqueue(b.TenantID, b.ID)
	}
	log.Info("unfinished builds resumed", "builds", len(builds), "concurrency", sched.Workers())
	return nil
}

func serveHTTP(srv *http.Server, ln net.Listener) error {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// runnerFlags are serve's settings of the build runner and its sandbox.
// Every flag has an environment variable; a flag given on the command line
// wins.
type runnerFlags struct {
	sandbox             string
	sandboxImage        string
	memory              string
	pids, cpus          string
	installAllow        string
	buildAllow          string
	installAllowPrivate bool
	installTimeoutS     string
	buildTimeoutS       string
	concurrency         string

	memoryBytes                  int64
	pidsN                        int64
	cpusN                        float64
	installAllowList             []string
	buildAllowList               []string
	installTimeout, buildTimeout time.Duration
	concurrencyN                 int
}

func (f *runnerFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.sandbox, "sandbox", env("ZIPSHIP_SANDBOX", "auto"), "build sandbox (containerd): auto (use it when containerd can be reached or started, else serve static sites only), on (required) or off (env ZIPSHIP_SANDBOX)")
	fs.StringVar(&f.sandboxImage, "sandbox-image", env("ZIPSHIP_SANDBOX_IMAGE", ""), "OCI image (already in containerd, e.g. imported with ctr -n zipship images import) to run builds in, with its own node; empty: a read-only rootfs over the host's /usr (env ZIPSHIP_SANDBOX_IMAGE)")
	fs.StringVar(&f.memory, "memory", env("ZIPSHIP_MEMORY", "2gb"), "memory+swap limit of each install or build command (env ZIPSHIP_MEMORY)")
	fs.StringVar(&f.pids, "pids", env("ZIPSHIP_PIDS", "512"), "process and thread limit of each install or build command (env ZIPSHIP_PIDS)")
	fs.StringVar(&f.cpus, "cpus", env("ZIPSHIP_CPUS", "1"), "CPU quota of each install or build command, in CPUs (env ZIPSHIP_CPUS)")
	fs.StringVar(&f.installAllow, "install-allow", env("ZIPSHIP_INSTALL_ALLOW", egress.NPMRegistry), "comma-separated hosts (host[:port], *.domain) the install step may reach through the egress proxy (env ZIPSHIP_INSTALL_ALLOW)")
	fs.BoolVar(&f.installAllowPrivate, "install-allow-private", env("ZIPSHIP_INSTALL_ALLOW_PRIVATE", "") != "", "let the install step's allowed hosts resolve to non-public addresses (a registry mirror on the internal network, or a network that intercepts the registry) (env ZIPSHIP_INSTALL_ALLOW_PRIVATE, any value)")
	fs.StringVar(&f.buildAllow, "build-allow", env("ZIPSHIP_BUILD_ALLOW", ""), "comma-separated hosts every build step may reach through the egress proxy, on top of each build's buildConfig.egressAllow; none by default: no network (env ZIPSHIP_BUILD_ALLOW)")
	fs.StringVar(&f.installTimeoutS, "install-timeout", env("ZIPSHIP_INSTALL_TIMEOUT", runners.DefaultInstallTimeout.String()), "time limit of the install step (env ZIPSHIP_INSTALL_TIMEOUT)")
	fs.StringVar(&f.buildTimeoutS, "build-timeout", env("ZIPSHIP_BUILD_TIMEOUT", runners.DefaultBuildTimeout.String()), "time limit of the build step (env ZIPSHIP_BUILD_TIMEOUT)")
	fs.StringVar(&f.concurrency, "concurrency", env("ZIPSHIP_BUILD_CONCURRENCY", "1"), "builds run at once; one tenant's builds always run one at a time, in request order (env ZIPSHIP_BUILD_CONCURRENCY)")
}

// finish validates the parsed flags.
func (f *runnerFlags) finish() error {
	switch f.sandbox {
	case "auto", "on", "off":
	default:
		return fmt.Errorf("--sandbox %q: use auto, on or off", f.sandbox)
	}
	n, err := gateway.ParseSize(f.memory)
	if err != nil {
		return fmt.Errorf("--memory: %w", err)
	}
	f.memoryBytes = n
	if f.pidsN, err = strconv.ParseInt(f.pids, 10, 64); err != nil || f.pidsN < 1 {
		return fmt.Errorf("--pids %q: a positive number", f.pids)
	}
	if f.concurrencyN, err = strconv.Atoi(f.concurrency); err != nil || f.concurrencyN < 1 || f.concurrencyN > 1024 {
		return fmt.Errorf("--concurrency %q: a number of builds from 1 to 1024", f.concurrency)
	}
	if f.cpusN, err = strconv.ParseFloat(f.cpus, 64); err != nil || !(f.cpusN >= 0.01 && f.cpusN <= 1024) {
		return fmt.Errorf("--cpus %q: a number of CPUs, e.g. 1 or 0.5", f.cpus)
	}
	for _, d := range []struct {
		name string
		s    string
		v    *time.Duration
	}{{"--install-timeout", f.installTimeoutS, &f.installTimeout}, {"--build-timeout", f.buildTimeoutS, &f.buildTimeout}} {
		t, err := time.ParseDuration(d.s)
		if err != nil || t <= 0 {
			return fmt.Errorf("%s %q: a positive duration, e.g. 10m", d.name, d.s)
		}
		*d.v = t
	}
	for _, l := range []struct {
		name string
		s    string
		v    *[]string
	}{{"--install-allow", f.installAllow, &f.installAllowList}, {"--build-allow", f.buildAllow, &f.buildAllowList}} {
		var entries []string
		for _, e := range strings.Split(l.s, ",") {
			if e = strings.TrimSpace(e); e != "" {
				entries = append(entries, e)
			}
		}
		p, err := egress.ParsePolicy(entries)
		if err != nil {
			return fmt.Errorf("%s: %w", l.name, err)
		}
		*l.v = p.Allow
	}
	if f.installAllowList == nil {
		f.installAllowList = []string{} // none: not the runner's default
	}
	return nil
}

// startSandbox prepares the build sandbox as --sandbox says: the rootfs
// under the data directory, a containerd (a running one, or its own
// supervised under the data directory), no leftovers of a crash (pinned
// network namespaces, containers). With auto, a sandbox that cannot be had
// is a warning: static sites still deploy, npm projects fail at detect.
// stop closes the sandbox and stops the containerd it started.
func startSandbox(ctx context.Context, c config, f runnerFlags, log *slog.Logger) (*sandbox.Sandbox, func(), error) {
	if f.sandbox == "off" {
		log.Info("build sandbox off: projects with a package.json fail at detect; static sites deploy")
		return nil, func() {}, nil
	}
	sb, stop, err := openSandbox(ctx, c, f, log)
	if err != nil {
		if f.sandbox == "on" {
			return nil, nil, fmt.Errorf("build sandbox (--sandbox on): %w", err)
		}
		log.Warn("no build sandbox: projects with a package.json fail at detect; static sites deploy (--sandbox on makes this fatal)", "err", err)
		return nil, func() {}, nil
	}
	return sb, stop, nil
}

func openSandbox(ctx context.Context, c config, f runnerFlags, log *slog.Logger) (*sandbox.Sandbox, func(), error) {
	if err := egress.CleanupStale(c.path("netns")); err != nil {
		return nil, nil, err
	}
	rootfs := c.path("rootfs")
	if err := sandbox.PrepareRootFS(rootfs); err != nil {
		return nil, nil, err
	}
	addr, stopContainerd, err := sandbox.EnsureContainerd(ctx, c.dataDir, log.With("component", "containerd"))
	if err != nil {
		return nil, nil, err
	}
	cfg := sandbox.Config{Address: addr, RootFS: rootfs, MemoryBytes: f.memoryBytes,
		Pids: f.pidsN, CPUs: f.cpusN, Log: log.With("component", "sandbox")}
	if f.sandboxImage != "" {
		// The image brings its own /usr: no host binds over it.
		cfg.Image, cfg.RootFS, cfg.ReadOnlyBinds = f.sandboxImage, "", []sandbox.Bind{}
	}
	sb, err := sandbox.New(ctx, cfg)
	if err != nil {
		stopContainerd()
		return nil, nil, err
	}
	// Containers a crash left behind. A containerd of our own runs only our
	// jobs: all of them go. A shared one may run other runners' jobs: only
	// those older than any job can be.
	olderThan := time.Duration(0)
	if addr == sandbox.DefaultAddress || addr == os.Getenv(sandbox.AddressEnv) {
		olderThan = max(f.installTimeout, f.buildTimeout) + 10*time.Minute
	}
	if n, err := sb.Prune(ctx, olderThan); err != nil {
		log.Warn("sandbox: removing leftover containers", "removed", n, "err", err)
	}
	log.Info("build sandbox ready", "containerd", addr, "memory", gateway.FormatSize(f.memoryBytes), "pids", f.pidsN,
		"cpus", f.cpusN, "install_allow", strings.Join(f.installAllowList, ","), "build_allow", strings.Join(f.buildAllowList, ","))
	return sb, func() {
		sb.Close()
		if err := stopContainerd(); err != nil {
			log.Warn("stop containerd", "err", err)
		}
	}, nil
}

// hostHasCorepack tells whether the sandbox, which runs the host's /usr,
// can run corepack (pnpm and yarn projects).
func hostHasCorepack() bool {
	p, err := exec.LookPath("corepack")
	return err == nil && strings.HasPrefix(p, "/usr/")
}
