package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/schollz/progressbar/v3"

	"github.com/zipship/zipship/client"
)

const (
	// defaultDeployServer is the server deploy talks to without --server
	// or $ZIPSHIP_SERVER: a local `zipship serve`.
	defaultDeployServer = "http://127.0.0.1:8080"
	// uploadAttempts is how many times deploy sends the ZIP when the
	// connection fails or the server answers 408, 429 or 5xx. Every
	// attempt carries the same Idempotency-Key, so at most one build is
	// created.
	uploadAttempts = 3
)

const deployUsage = `usage: zipship deploy PATH --tenant TENANT [--server URL] [--token TOKEN] [--config FILE|JSON] [--quiet]

PATH is a project directory (zipped here, without node_modules, .git,
.next, out and dist) or a .zip file (sent as is). The live URL is printed
as the last line of stdout; progress goes to stderr.

Flags (may come before or after PATH):
`

// deployOptions is a parsed deploy command line.
type deployOptions struct {
	path   string
	tenant string
	server string
	token  string
	config []byte
	quiet  bool
}

// runDeploy implements `zipship deploy`: zip PATH (or take the .zip),
// upload it as a build of the tenant, follow the build's events and print
// the live URL as the last line of stdout. It returns 0 when the build is
// live, 1 when anything failed and 2 for a bad command line.
func runDeploy(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, code := parseDeployArgs(args, stderr)
	if o == nil {
		return code
	}
	logf := func(format string, a ...any) {
		if !o.quiet {
			fmt.Fprintf(stderr, format+"\n", a...)
		}
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "zipship deploy: "+format+"\n", a...)
		return 1
	}

	src, size, cleanup, code, err := openDeploySource(ctx, o.path, logf)
	defer cleanup()
	if err != nil {
		fmt.Fprintf(stderr, "zipship deploy: %v\n", err)
		return code
	}

	c := &client.Client{Server: o.server, Token: o.token}
	res, err := uploadWithRetry(ctx, c, o, src, size, stderr, logf)
	if err != nil {
		if ctx.Err() != nil {
			return fail("interrupted")
		}
		return fail("%v", err)
	}
	if res.Replayed {
		logf("build %s (%s) was already requested with this key: following it", res.BuildID, res.Version)
	} else {
		logf("build %s queued (%s)", res.BuildID, res.Version)
	}

	start := time.Now()
	out, err := c.Follow(ctx, o.tenant, res.BuildID, res.EventsURL, func(ev client.Event) {
		if !o.quiet {
			printDeployEvent(stderr, ev)
		}
	})
	if err != nil {
		if ctx.Err() != nil {
			return fail("interrupted (build %s goes on on the server)", res.BuildID)
		}
		return fail("%v (build %s may still finish on the server)", err, res.BuildID)
	}
	if out.Status != client.StatusSuccess {
		if out.Retryable {
			fmt.Fprintln(stderr, "  ✗ the platform failed, not the project: deploying again may work")
		}
		// The last line of stderr, in this exact form, for scripts.
		if out.Step != "" {
			fmt.Fprintf(stderr, "deploy failed at step %s: %s\n", out.Step, out.Error)
		} else {
			fmt.Fprintf(stderr, "deploy failed: %s\n", out.Error)
		}
		return 1
	}

	live := out.URL
	if live == "" {
		live = out.DeploymentURL
	}
	if out.DeploymentURL != "" && out.DeploymentURL != live {
		logf("deployed %s in %s; this version stays at %s", res.Version, formatElapsed(time.Since(start)), out.DeploymentURL)
	} else {
		logf("deployed %s in %s", res.Version, formatElapsed(time.Since(start)))
	}
	if live == "" {
		fmt.Fprintln(stderr, "zipship deploy: the build succeeded but the server reported no URL")
		return 0
	}
	fmt.Fprintln(stdout, withRootPath(live))
	return 0
}

// withRootPath writes a URL with an empty path with "/" instead
// ("https://acme.example.com" → "https://acme.example.com/"), the form a
// browser shows; it is the same address. Other URLs are left alone.
func withRootPath(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.Path != "" || u.RawQuery != "" || u.Fragment != "" {
		return s
	}
	return s + "/"
}

// parseDeployArgs parses the command line. PATH may come before, between
// or after the flags. It returns nil and the exit code (0 for -h, 2 for a
// usage error, reported on stderr) when deploy should stop.
func parseDeployArgs(args []string, stderr io.Writer) (*deployOptions, int) {
	fset := flag.NewFlagSet("deploy", flag.ContinueOnError)
	fset.SetOutput(stderr)
	fset.Usage = func() {
		fmt.Fprint(stderr, deployUsage)
		fset.PrintDefaults()
	}
	server := os.Getenv("ZIPSHIP_SERVER")
	if server == "" {
		server = defaultDeployServer
	}
	o := &deployOptions{}
	var config string
	fset.StringVar(&o.tenant, "tenant", "", "tenant to deploy to (required)")
	fset.StringVar(&o.server, "server", server, "zipship server URL (env ZIPSHIP_SERVER)")
	// No default shown: -h must not print the token.
	fset.StringVar(&o.token, "token", "", "bearer token (env ZIPSHIP_TOKEN, which is safer: flags show up in ps)")
	fset.StringVar(&config, "config", "", "build config: a JSON file, or JSON text starting with '{'")
	fset.BoolVar(&o.quiet, "quiet", false, "print only errors and the URL")

	usageErr := func(format string, a ...any) (*deployOptions, int) {
		fmt.Fprintf(stderr, "zipship deploy: "+format+"\n", a...)
		fmt.Fprint(stderr, strings.SplitN(deployUsage, "\n", 2)[0]+"\n")
		return nil, 2
	}
	parse := func(a []string) (done bool, code int) {
		if err := fset.Parse(a); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return true, 0
			}
			return true, 2 // the flag package has said why
		}
		return false, 0
	}
	if done, code := parse(args); done {
		return nil, code
	}
	if fset.NArg() == 0 {
		return usageErr("PATH is required")
	}
	o.path = fset.Arg(0)
	if done, code := parse(fset.Args()[1:]); done {
		return nil, code
	}
	if fset.NArg() > 0 {
		return usageErr("unexpected argument %q: give one PATH", fset.Arg(0))
	}

	if o.tenant == "" {
		return usageErr("--tenant is required")
	}
	if u, err := url.Parse(o.server); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageErr("--server %q is not an http(s) URL", o.server)
	}
	if o.token == "" {
		o.token = os.Getenv("ZIPSHIP_TOKEN")
	}
	if o.token == "" {
		return usageErr("no token: pass --token or set ZIPSHIP_TOKEN (zipship token --user USER mints one)")
	}
	if config != "" {
		cfg, err := loadBuildConfig(config)
		if err != nil {
			return usageErr("--config: %v", err)
		}
		o.config = cfg
	}
	return o, 0
}

// loadBuildConfig returns the build config JSON given as text (starting
// with '{') or as the name of a file holding it.
func loadBuildConfig(v string) ([]byte, error) {
	data := []byte(v)
	if !strings.HasPrefix(strings.TrimSpace(v), "{") {
		b, err := os.ReadFile(v)
		if err != nil {
			return nil, err
		}
		data = b
	}
	data = bytes.TrimSpace(data)
	if !json.Valid(data) {
		return nil, errors.New("not valid JSON")
	}
	return data, nil
}

// openDeploySource returns the ZIP to upload and its size: PATH itself if
// it is a .zip file, or a temporary ZIP of the directory PATH. cleanup
// must always be called. code is the exit code to use with err.
func openDeploySource(ctx context.Context, path string, logf func(string, ...any)) (zip *os.File, size int64, cleanup func(), code int, err error) {
	cleanup = func() {}
	info, err := os.Stat(path)
	if err != nil {
		return nil, 0, cleanup, 1, err
	}
	if !info.IsDir() {
		if !info.Mode().IsRegular() || !strings.EqualFold(filepath.Ext(path), ".zip") {
			return nil, 0, cleanup, 2, fmt.Errorf("%s: PATH must be a directory or a .zip file", path)
		}
		f, err := os.Open(path)
		if err != nil {
			return nil, 0, cleanup, 1, err
		}
		return f, info.Size(), func() { _ = f.Close() }, 0, nil
	}

	f, err := os.CreateTemp("", "zipship-deploy-*.zip")
	if err != nil {
		return nil, 0, cleanup, 1, fmt.Errorf("temporary file: %w", err)
	}
	cleanup = func() {
		_ = f.Close()
		_ = os.Remove(f.Name())
	}
	n, err := client.ZipDir(ctx, path, f)
	if err != nil {
		return nil, 0, cleanup, 1, err
	}
	if n == 0 {
		return nil, 0, cleanup, 1, fmt.Errorf("nothing to deploy: %s has no files (node_modules, .git, .next, out and dist are left out)", path)
	}
	size, err = f.Seek(0, io.SeekCurrent)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		return nil, 0, cleanup, 1, fmt.Errorf("temporary file: %w", err)
	}
	logf("zipped %d files (%s)", n, formatSize(size))
	return f, size, cleanup, 0, nil
}

// uploadWithRetry uploads zip, sending it again (same Idempotency-Key) up
// to uploadAttempts times when the failure is temporary.
func uploadWithRetry(ctx context.Context, c *client.Client, o *deployOptions, zip *os.File, size int64, stderr io.Writer, logf func(string, ...any)) (*client.UploadResult, error) {
	key := uuid.NewString()
	for attempt := 1; ; attempt++ {
		if _, err := zip.Seek(0, io.SeekStart); err != nil {
			return nil, fmt.Errorf("rewind zip: %w", err)
		}
		progress, finish := uploadProgress(stderr, size, o.quiet)
		start := time.Now()
		res, err := c.Upload(ctx, o.tenant, zip, size, o.config, key, progress)
		finish()
		if err == nil {
			logf("uploaded %s in %s", formatSize(size), formatElapsed(time.Since(start)))
			return res, nil
		}
		if attempt == uploadAttempts || !client.IsTemporary(err) {
			return nil, err
		}
		delay := time.Duration(attempt) * time.Second
		logf("%v; retrying in %s", err, delay)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// uploadProgress returns the progress callback for Upload and a function
// to call once it returned. On a terminal it draws a byte progress bar,
// cleared at the end; elsewhere (and with --quiet) it draws nothing.
func uploadProgress(stderr io.Writer, size int64, quiet bool) (progress func(int64), finish func()) {
	if quiet || size <= 0 || !isTerminal(stderr) {
		return nil, func() {}
	}
	bar := progressbar.NewOptions64(size,
		progressbar.OptionSetWriter(stderr),
		progressbar.OptionSetDescription("uploading"),
		progressbar.OptionShowBytes(true),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(80*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
	return func(sent int64) { _ = bar.Set64(sent) }, func() { _ = bar.Finish() }
}

// isTerminal reports whether w is a character device such as a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	info, err := f.Stat()
	return err == nil && info.Mode()&os.ModeCharDevice != 0
}

// printDeployEvent prints one line for the events a person wants to see:
// finished steps and retries. Failure and success are printed by the
// caller from the outcome.
func printDeployEvent(w io.Writer, ev client.Event) {
	v, err := ev.Decode()
	if err != nil {
		return
	}
	switch e := v.(type) {
	case *client.BuildStep:
		if e.Status != client.StepFinished {
			return
		}
		line := fmt.Sprintf("  ✓ %-10s %6s", e.Step, formatMillis(e.DurationMs))
		if e.Detail != "" {
			line += "  " + e.Detail
		}
		fmt.Fprintln(w, line)
	case *client.BuildRetrying:
		fmt.Fprintf(w, "  ↻ %s failed (attempt %d): %s; retrying in %s\n", e.Step, e.Attempt, e.Error, formatMillis(e.RetryInMs))
	}
}

// formatMillis formats a step duration: 12ms, 3.4s, 2m05s.
func formatMillis(ms int64) string {
	return formatElapsed(time.Duration(ms) * time.Millisecond)
}

// formatElapsed formats a duration for people: 12ms, 3.4s, 2m05s.
func formatElapsed(d time.Duration) string {
	switch {
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	default:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
}

// formatSize formats a byte count in KB below a megabyte, else in MB.
func formatSize(n int64) string {
	if n < 1<<20 {
		return fmt.Sprintf("%.1f KB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
}
