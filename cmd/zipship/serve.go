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
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"golang.org/x/sync/errgroup"

	"github.com/zipship/zipship/app"
	"github.com/zipship/zipship/archive"
	"github.com/zipship/zipship/auth"
	"github.com/zipship/zipship/gateway"
	"github.com/zipship/zipship/gateway/live"
	"github.com/zipship/zipship/infra/blob/fs"
	"github.com/zipship/zipship/infra/bus"
	"github.com/zipship/zipship/infra/cdn/edge"
	"github.com/zipship/zipship/infra/eventstore/sqlite"
	"github.com/zipship/zipship/projections"
	"github.com/zipship/zipship/runners"
)

// shutdownGrace bounds how long in-flight requests (uploads) may finish
// after SIGTERM.
const shutdownGrace = 30 * time.Second

// buildDrain bounds how long a build in progress may finish after SIGTERM.
const buildDrain = 10 * time.Second

func runServe(ctx context.Context, args []string, stderr io.Writer) int {
	fset := flag.NewFlagSet("serve", flag.ContinueOnError)
	fset.SetOutput(stderr)
	var c config
	c.register(fset)
	if err := fset.Parse(args); err != nil {
		return 2
	}
	if err := c.finish(); err != nil {
		fmt.Fprintln(stderr, "zipship serve:", err)
		return 2
	}
	log, err := c.logger(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "zipship serve:", err)
		return 2
	}
	if err := serve(ctx, c, log); err != nil {
		log.Error("serve failed", "err", err)
		return 1
	}
	return 0
}

// serve runs every role in this process until ctx ends, then shuts down:
// stop accepting, let in-flight uploads finish (an acknowledged upload is
// already stored), stop the runner (an interrupted build is redelivered on
// the next start), close the stores.
func serve(ctx context.Context, c config, log *slog.Logger) error {
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
	edgeSrv := edge.New(blobs, edge.Options{BaseDomain: c.baseDomain, Logger: log.With("component", "edge")})
	projector := projections.NewProjector(events, rm, log)
	hub := live.NewHub(events, c.urls(), log.With("component", "live"))
	hub.WaitForReadModels(projector)
	gw := gateway.New(a, rm, projector, hub, gateway.Config{
		Secret: secret, MaxUploadSize: c.maxUploadSize, ZipLimits: archive.DefaultLimits(),
		URLs: c.urls(), Refresher: edgeSrv, Log: log.With("component", "gateway"),
	})
	runner := runners.New(a, runners.Config{WorkDir: c.path("work"), ZipLimits: archive.DefaultLimits(),
		Refresher: edgeSrv, Log: log.With("component", "runner")})

	pubsub := bus.NewInProcess(log.With("component", "bus"))
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 5 * time.Second}, bus.Logger(log.With("component", "router")))
	if err != nil {
		return fmt.Errorf("router: %w", err)
	}
	router.AddConsumerHandler("runner", bus.EventsTopic, pubsub, runner.HandleMessage)
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
	// checkpoint past events no runner saw.
	bg, stopBG := context.WithCancel(context.Background())
	defer stopBG()
	relayCtx, stopRelay := context.WithCancel(bg)
	defer stopRelay()
	relayDone := make(chan struct{})
	g, gctx := errgroup.WithContext(bg)
	g.Go(func() error { return projector.Run(gctx) })
	g.Go(func() error { return router.Run(gctx) })
	g.Go(func() error {
		defer close(relayDone)
		select {
		case <-router.Running():
		case <-gctx.Done():
			return nil
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
	// Let the build in hand finish for a while; then the runner is
	// cancelled and the interrupted request is redelivered after a restart.
	stopRelay()
	select {
	case <-relayDone:
	case <-time.After(buildDrain):
		log.Warn("build still running; interrupting it", "waited", buildDrain)
	}
	router.Close()
	<-relayDone
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

func serveHTTP(srv *http.Server, ln net.Listener) error {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
