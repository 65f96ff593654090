package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/zipship/zipship/auth"
)

// runToken mints a bearer token and prints it alone on stdout, so that
// `TOKEN=$(zipship token --user alice)` works.
func runToken(args []string, stdout, stderr io.Writer) int {
	fset := flag.NewFlagSet("token", flag.ContinueOnError)
	fset.SetOutput(stderr)
	user := fset.String("user", "", "user id to put in the token's subject (required)")
	dataDir := fset.String("data-dir", env("ZIPSHIP_DATA_DIR", ".zipship"), "data directory holding the generated secret (env ZIPSHIP_DATA_DIR)")
	ttl := fset.Duration("ttl", 24*time.Hour, "how long the token is valid")
	if err := fset.Parse(args); err != nil {
		return 2
	}
	if *user == "" || fset.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: zipship token --user USER [--data-dir DIR] [--ttl 24h]")
		return 2
	}
	if *ttl <= 0 {
		fmt.Fprintln(stderr, "zipship token: --ttl must be positive")
		return 2
	}
	// The secret is created here too, so a token can be minted before the
	// first serve; serve then uses the same file.
	secret, err := auth.LoadSecret(os.Getenv("ZIPSHIP_JWT_SECRET"), *dataDir, true)
	if err != nil {
		fmt.Fprintln(stderr, "zipship token:", err)
		return 1
	}
	tok, err := auth.Sign(secret, *user, *ttl, time.Now())
	if err != nil {
		fmt.Fprintln(stderr, "zipship token:", err)
		return 1
	}
	fmt.Fprintln(stdout, tok)
	return 0
}
