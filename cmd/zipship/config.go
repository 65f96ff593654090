package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/zipship/zipship/gateway"
	"github.com/zipship/zipship/infra/cdn/edge"
)

// config is the settings shared by the server roles. Every flag has an
// environment variable; a flag given on the command line wins.
type config struct {
	dataDir       string
	addr          string
	edgeAddr      string
	baseDomain    string
	maxUpload     string
	maxUploadSize int64
	logLevel      string
	logFormat     string
}

func env(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

// register adds the shared flags to fs.
func (c *config) register(fs *flag.FlagSet) {
	fs.StringVar(&c.dataDir, "data-dir", env("ZIPSHIP_DATA_DIR", ".zipship"), "data directory: events, read models, blobs, secret (env ZIPSHIP_DATA_DIR)")
	fs.StringVar(&c.addr, "addr", env("ZIPSHIP_ADDR", "127.0.0.1:8080"), "API gateway listen address (env ZIPSHIP_ADDR)")
	fs.StringVar(&c.edgeAddr, "edge-addr", env("ZIPSHIP_EDGE_ADDR", "127.0.0.1:8081"), "edge (sites) listen address (env ZIPSHIP_EDGE_ADDR)")
	fs.StringVar(&c.baseDomain, "base-domain", env("ZIPSHIP_BASE_DOMAIN", edge.DefaultBaseDomain), "sites are served at {tenant}.{base-domain} (env ZIPSHIP_BASE_DOMAIN)")
	fs.StringVar(&c.maxUpload, "max-upload-size", env("ZIPSHIP_MAX_UPLOAD_SIZE", "100mb"), "largest ZIP accepted, e.g. 100mb (env ZIPSHIP_MAX_UPLOAD_SIZE)")
	fs.StringVar(&c.logLevel, "log-level", env("ZIPSHIP_LOG_LEVEL", "info"), "debug, info, warn or error (env ZIPSHIP_LOG_LEVEL)")
	fs.StringVar(&c.logFormat, "log-format", env("ZIPSHIP_LOG_FORMAT", "text"), "text or json (env ZIPSHIP_LOG_FORMAT)")
}

// finish validates the parsed flags.
func (c *config) finish() error {
	n, err := gateway.ParseSize(c.maxUpload)
	if err != nil {
		return fmt.Errorf("--max-upload-size: %w", err)
	}
	c.maxUploadSize = n
	abs, err := filepath.Abs(c.dataDir)
	if err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	c.dataDir = abs
	for _, a := range []string{c.addr, c.edgeAddr} {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("listen address %q: %w", a, err)
		}
	}
	return nil
}

// logger builds the process logger on w.
func (c *config) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(c.logFormat) {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text or json", c.logFormat)
}

// urls returns the live and permanent URL builders for sites served by the
// edge on edgeAddr.
func (c *config) urls() func(tenant, buildID string) (string, string) {
	_, port, _ := net.SplitHostPort(c.edgeAddr)
	return func(tenant, buildID string) (string, string) {
		live := edge.LiveURL("http", c.baseDomain, port, tenant) + "/"
		if buildID == "" {
			return live, ""
		}
		return live, edge.DeploymentURL("http", c.baseDomain, port, tenant, buildID) + "/"
	}
}

// paths inside the data directory.
func (c *config) path(parts ...string) string {
	return filepath.Join(append([]string{c.dataDir}, parts...)...)
}
