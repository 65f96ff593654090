package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/zipship/zipship/infra/blob/fs"
	"github.com/zipship/zipship/infra/cdn/edge"
)

// runEdge serves tenants' sites from the data directory's blob store alone.
// It sees pointer moves made by a serve process through the pointer TTL.
func runEdge(ctx context.Context, args []string, stderr io.Writer) int {
	fset := flag.NewFlagSet("edge", flag.ContinueOnError)
	fset.SetOutput(stderr)
	var c config
	c.register(fset)
	ttl := fset.Duration("pointer-ttl", edge.DefaultPointerTTL, "how long a tenant's pointer is trusted before it is read again")
	if err := fset.Parse(args); err != nil {
		return 2
	}
	if err := c.finish(); err != nil {
		fmt.Fprintln(stderr, "zipship edge:", err)
		return 2
	}
	log, err := c.logger(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "zipship edge:", err)
		return 2
	}
	blobs, err := fs.New(c.path("blobs"))
	if err != nil {
		log.Error("open blobs", "err", err)
		return 1
	}
	srv := edge.New(blobs, edge.Options{BaseDomain: c.baseDomain, PointerTTL: *ttl, Logger: log}).
		NewFastHTTPServer(10*time.Second, 2*time.Minute)
	ln, err := net.Listen("tcp", c.edgeAddr)
	if err != nil {
		log.Error("listen", "addr", c.edgeAddr, "err", err)
		return 1
	}
	log.Info("edge serving", "addr", "http://"+ln.Addr().String(), "base", c.baseDomain)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.ShutdownWithContext(sctx)
		// A fasthttp server shut down before its Serve began would serve
		// on: its Serve returns once the listener is closed.
		ln.Close()
	}()
	if err := srv.Serve(ln); err != nil {
		log.Error("edge", "err", err)
		return 1
	}
	return 0
}
