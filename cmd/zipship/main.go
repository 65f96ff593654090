// Command zipship is the whole platform in one binary: `serve` runs every
// role in one process with embedded defaults, `edge` runs the built-in CDN
// alone, and the client commands (`deploy`, `token`, `projections`) talk to
// a server or its data directory.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `zipship: upload a ZIP, get a live website.

Usage:
  zipship serve [flags]                  run every role in one process (gateway, runner, relay, projector, edge)
  zipship edge [flags]                   run the built-in edge server alone, over the same data directory
  zipship deploy PATH --tenant T [flags] zip a folder (or send a .zip), build it, print the live URL
  zipship token --user U [flags]         mint a bearer token for user U
  zipship projections rebuild [flags]    rebuild the read models from the event store (serve stopped)
  zipship version                        print the version

Run 'zipship COMMAND -h' for a command's flags.
`

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run dispatches a command line; it returns the process exit code (0 ok,
// 1 failure, 2 usage error).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return runServe(ctx, args[1:], stderr)
	case "edge":
		return runEdge(ctx, args[1:], stderr)
	case "deploy":
		return runDeploy(ctx, args[1:], stdout, stderr)
	case "token":
		return runToken(args[1:], stdout, stderr)
	case "projections":
		return runProjections(ctx, args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "zipship", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "zipship: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}
