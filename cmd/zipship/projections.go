package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/zipship/zipship/infra/eventstore/sqlite"
	"github.com/zipship/zipship/projections"
)

// runProjections handles `zipship projections rebuild`: the read models are
// emptied and replayed from event position 0. Run it with serve stopped.
func runProjections(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "rebuild" {
		fmt.Fprintln(stderr, "usage: zipship projections rebuild [--data-dir DIR]")
		return 2
	}
	fset := flag.NewFlagSet("projections rebuild", flag.ContinueOnError)
	fset.SetOutput(stderr)
	var c config
	c.register(fset)
	if err := fset.Parse(args[1:]); err != nil {
		return 2
	}
	if err := c.finish(); err != nil {
		fmt.Fprintln(stderr, "zipship projections:", err)
		return 2
	}
	events, err := sqlite.Open(c.path("events.db"))
	if err != nil {
		fmt.Fprintln(stderr, "zipship projections:", err)
		return 1
	}
	defer events.Close()
	rm, err := projections.Open(c.path("readmodels.db"))
	if err != nil {
		fmt.Fprintln(stderr, "zipship projections:", err)
		return 1
	}
	defer rm.Close()
	start := time.Now()
	n, err := projections.Rebuild(ctx, events, rm)
	if err != nil {
		fmt.Fprintln(stderr, "zipship projections: rebuild:", err)
		return 1
	}
	fmt.Fprintf(stdout, "rebuilt read models from %d events in %s\n", n, time.Since(start).Round(time.Millisecond))
	return 0
}
