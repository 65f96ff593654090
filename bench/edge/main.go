// Command edge benchmarks zipship's built-in CDN against nginx serving the
// same files from a plain directory, with wrk, so that a change to the
// edge can be judged against a well-known baseline. Run it as
// `go run ./bench/edge` (`make bench`); it needs wrk and nginx on PATH.
//
// For each case (a ~2 KB index.html and a 1 MiB hashed asset) it runs wrk
// against the edge and nginx alternately, for several rounds, keeps each
// server's best requests/s and best 99th percentile latency, and prints a
// table. The edge is served by its fasthttp front end, as zipship serves it;
// -front fasthttp,nethttp measures its net/http front end too, as another
// row. It exits non-zero if anything fails, including any non-2xx answer.
package main

import (
	"bytes"
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
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"

	"github.com/zipship/zipship/bench/internal/harness"
	"github.com/zipship/zipship/infra/blob"
	"github.com/zipship/zipship/infra/blob/fs"
	"github.com/zipship/zipship/infra/cdn/edge"
)

const (
	tenant    = "demo"
	assetPath = "assets/app-3f9a1c2b.js"
)

// config is the command line.
type config struct {
	duration    time.Duration
	connections int
	threads     int
	rounds      int
	keep        bool
	cpuProfile  string
	only        string
	fronts      []string // edge front ends to measure: "nethttp", "fasthttp"
}

// result is what one wrk run measured.
type result struct {
	rps float64
	p99 time.Duration
}

// benchCase is one URL benchmarked on both servers.
type benchCase struct {
	name string
	path string
	body []byte
}

// selected reports whether the -case filter only selects c.
func (c benchCase) selected(only string) bool {
	return strings.Contains(strings.ToLower(c.name), strings.ToLower(only))
}

func main() {
	var cfg config
	flag.DurationVar(&cfg.duration, "duration", 5*time.Second, "length of each wrk run (whole seconds)")
	flag.IntVar(&cfg.connections, "connections", 32, "wrk connections")
	flag.IntVar(&cfg.threads, "threads", 2, "wrk threads")
	flag.IntVar(&cfg.rounds, "rounds", 2, "edge/nginx rounds per case; the best of each is reported")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the temp directory (site, store, nginx config and logs)")
	flag.StringVar(&cfg.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run (the edge runs in this process) to `file`")
	flag.StringVar(&cfg.only, "case", "", "run only the cases whose name contains `text` (html, asset)")
	front := flag.String("front", "fasthttp", "edge front end(s) to measure, comma-separated: `fasthttp,nethttp`")
	flag.Parse()
	for f := range strings.SplitSeq(*front, ",") {
		if f = strings.TrimSpace(f); f != "" {
			cfg.fronts = append(cfg.fronts, f)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := run(ctx, cfg, log, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench/edge:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config, log *slog.Logger, out io.Writer) error {
	if cfg.duration < time.Second || cfg.connections < 1 || cfg.threads < 1 || cfg.rounds < 1 {
		return errors.New("-duration must be at least 1s, -connections, -threads and -rounds at least 1")
	}
	if len(cfg.fronts) == 0 {
		return errors.New("-front names no front end")
	}
	for _, f := range cfg.fronts {
		if f != "nethttp" && f != "fasthttp" {
			return fmt.Errorf("-front %q: want nethttp or fasthttp", f)
		}
	}
	if cfg.threads > cfg.connections {
		cfg.threads = cfg.connections // wrk refuses more threads than connections
	}
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		return errors.New("wrk is not on PATH: install it with `apt-get install -y wrk nginx`")
	}
	nginx, err := exec.LookPath("nginx")
	if err != nil {
		return errors.New("nginx is not on PATH: install it with `apt-get install -y wrk nginx`")
	}

	tmp, removeTmp, err := harness.TempDir(out, "zipship-bench-edge-", cfg.keep)
	if err != nil {
		return err
	}
	defer removeTmp()

	cases := []benchCase{
		{name: "small HTML (index.html)", path: "/", body: indexHTML()},
		{name: "1 MiB asset (" + assetPath + ")", path: "/" + assetPath, body: asset()},
	}
	selected := 0
	for _, c := range cases {
		if c.selected(cfg.only) {
			selected++
		}
	}
	if selected == 0 {
		return fmt.Errorf("-case %q matches no case", cfg.only)
	}
	site := filepath.Join(tmp, "site")
	if err := writeSite(site, cases); err != nil {
		return err
	}

	edgeURLs, stopEdge, err := startEdge(ctx, filepath.Join(tmp, "store"), site, cfg.fronts, log)
	if err != nil {
		return err
	}
	defer stopEdge()

	nginxURL, stopNginx, err := startNginx(ctx, nginx, filepath.Join(tmp, "nginx"), site)
	if err != nil {
		return err
	}
	defer stopNginx()

	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}

	edgeHost := tenant + "." + edge.DefaultBaseDomain
	for _, c := range cases {
		for i, u := range edgeURLs {
			if err := check(ctx, u+c.path, edgeHost, c.body); err != nil {
				return fmt.Errorf("edge (%s): %w", cfg.fronts[i], err)
			}
		}
		if err := check(ctx, nginxURL+c.path, "", c.body); err != nil {
			return fmt.Errorf("nginx: %w", err)
		}
	}

	fmt.Fprintf(out, "wrk -t%d -c%d -d%ds --latency, %d rounds (edge, nginx alternately), best of each; %d CPUs, edge GOMAXPROCS=%d\n",
		cfg.threads, cfg.connections, int(cfg.duration.Seconds()), cfg.rounds, runtime.NumCPU(), runtime.GOMAXPROCS(0))
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
	fmt.Fprintln(tw, "case\tedge front end\tedge req/s\tnginx req/s\tratio (edge/nginx)\tedge p99\tnginx p99\t")
	for _, c := range cases {
		if !c.selected(cfg.only) {
			continue
		}
		bestEdge := make([]result, len(edgeURLs))
		var bestNginx result
		for round := range cfg.rounds {
			for i, u := range edgeURLs {
				r, err := runWrk(ctx, wrk, cfg, u+c.path, edgeHost)
				if err != nil {
					return fmt.Errorf("%s, edge (%s), round %d: %w", c.name, cfg.fronts[i], round+1, err)
				}
				bestEdge[i] = best(bestEdge[i], r)
			}
			r, err := runWrk(ctx, wrk, cfg, nginxURL+c.path, "")
			if err != nil {
				return fmt.Errorf("%s, nginx, round %d: %w", c.name, round+1, err)
			}
			bestNginx = best(bestNginx, r)
		}
		for i, e := range bestEdge {
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.0f\t%.2f\t%v\t%v\t\n", c.name, cfg.fronts[i], e.rps, bestNginx.rps,
				e.rps/bestNginx.rps, e.p99, bestNginx.p99)
		}
	}
	return tw.Flush()
}

// best keeps the highest requests/s and the lowest p99 seen.
func best(a, b result) result {
	if b.rps > a.rps {
		a.rps = b.rps
	}
	if a.p99 == 0 || (b.p99 > 0 && b.p99 < a.p99) {
		a.p99 = b.p99
	}
	return a
}

// indexHTML is a ~2 KB page.
func indexHTML() []byte {
	var b bytes.Buffer
	b.WriteString("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>zipship edge benchmark</title>\n")
	b.WriteString("<script type=\"module\" src=\"/" + assetPath + "\"></script>\n</head>\n<body>\n")
	for i := 0; b.Len() < 2000; i++ {
		fmt.Fprintf(&b, "<p>Paragraph %d of a small static page served by the benchmark.</p>\n", i)
	}
	b.WriteString("</body>\n</html>\n")
	return b.Bytes()
}

// asset is 1 MiB of JavaScript-looking text.
func asset() []byte {
	line := []byte("export const value = \"zipship edge benchmark asset\"; // padding padding padding\n")
	b := bytes.Repeat(line, (1<<20)/len(line)+1)
	return b[:1<<20]
}

// writeSite writes every case's body at its path under dir: this is both
// the directory Publish reads and nginx's root.
func writeSite(dir string, cases []benchCase) error {
	for _, c := range cases {
		name := strings.TrimPrefix(c.path, "/")
		if name == "" {
			name = "index.html"
		}
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("write site: %w", err)
		}
		if err := os.WriteFile(p, c.body, 0o644); err != nil {
			return fmt.Errorf("write site: %w", err)
		}
	}
	return nil
}

// startEdge publishes site into a filesystem store under storeDir, points
// the tenant at it and serves the edge with each front end on a free
// loopback port, returning their base URLs in the order of fronts.
func startEdge(ctx context.Context, storeDir, site string, fronts []string, log *slog.Logger) ([]string, func(), error) {
	store, err := fs.New(storeDir)
	if err != nil {
		return nil, nil, fmt.Errorf("edge: %w", err)
	}
	build := uuid.NewString()
	if _, _, err := blob.Publish(ctx, store, tenant, build, site); err != nil {
		store.Close()
		return nil, nil, fmt.Errorf("edge: %w", err)
	}
	err = blob.WritePointer(ctx, store, blob.Pointer{
		Tenant:      tenant,
		BuildID:     build,
		Version:     fmt.Sprintf("v%d", time.Now().UnixMilli()),
		ManifestKey: blob.ManifestKey(tenant, build),
		ActivatedAt: time.Now().UTC(),
	})
	if err != nil {
		store.Close()
		return nil, nil, fmt.Errorf("edge: %w", err)
	}
	srv := edge.New(store, edge.Options{Logger: log})
	var (
		urls  []string
		stops []func()
	)
	stop := func() {
		for _, f := range stops {
			f()
		}
		store.Close()
	}
	for _, front := range fronts {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			stop()
			return nil, nil, fmt.Errorf("edge: listen: %w", err)
		}
		urls = append(urls, "http://"+ln.Addr().String())
		done := make(chan error, 1)
		switch front {
		case "fasthttp":
			fs := srv.NewFastHTTPServer(10*time.Second, 2*time.Minute)
			go func() { done <- fs.Serve(ln) }()
			stops = append(stops, func() {
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = fs.ShutdownWithContext(sctx)
				<-done
			})
		default:
			hs := &http.Server{
				Handler:           srv,
				ReadHeaderTimeout: 10 * time.Second,
				ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
			}
			go func() { done <- hs.Serve(ln) }()
			stops = append(stops, func() {
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = hs.Shutdown(sctx)
				<-done
			})
		}
	}
	return urls, stop, nil
}

// nginxConf is a minimal nginx configuration comparable to the edge:
// static files, sendfile, no access log. %[1]s is nginx's own directory,
// %[2]s the site, %[3]s the listen address, %[4]s the user line.
const nginxConf = `%[4]s
daemon off;
master_process on;
worker_processes 2;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events {
    worker_connections 1024;
}
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    types {
        text/html html;
        text/javascript js;
    }
    default_type application/octet-stream;
    server {
        listen %[3]s;
        root %[2]s;
        index index.html;
    }
}
`

// startNginx writes a config under dir and starts nginx in the foreground
// on a free loopback port, in its own process group so that stopping it
// stops its workers too.
func startNginx(ctx context.Context, nginx, dir, site string) (string, func(), error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", nil, fmt.Errorf("nginx: %w", err)
	}
	addr, err := harness.FreeAddr()
	if err != nil {
		return "", nil, fmt.Errorf("nginx: %w", err)
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // workers would otherwise switch to nobody, who may not read the temp dir
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, nginxConf, dir, site, addr, user), 0o644); err != nil {
		return "", nil, fmt.Errorf("nginx: %w", err)
	}
	// -e sets the startup error log, which would otherwise be
	// /var/log/nginx/error.log before the config is read.
	cmd := exec.Command(nginx, "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log"))
	var stderr bytes.Buffer
	cmd.Stdout = os.Stdout
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("nginx: start: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			return "http://" + addr, stop, nil
		}
		select {
		case err := <-exited:
			logTail, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			return "", nil, fmt.Errorf("nginx exited at start (%v): %s %s", err, stderr.String(), logTail)
		case <-ctx.Done():
			stop()
			return "", nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return "", nil, fmt.Errorf("nginx did not listen on %s within 10s: %s", addr, stderr.String())
		}
	}
}

// check fetches url once and compares the body, so that the benchmark
// measures servers that answer correctly.
func check(ctx context.Context, url, host string, want []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if host != "" {
		req.Host = host
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	if res.StatusCode != http.StatusOK || !bytes.Equal(body, want) {
		return fmt.Errorf("GET %s (Host %q): status %d, %d bytes, want 200 with the %d bytes written", url, host, res.StatusCode, len(body), len(want))
	}
	return nil
}

// runWrk runs one wrk measurement of url.
func runWrk(ctx context.Context, wrk string, cfg config, url, host string) (result, error) {
	args := []string{
		"-t" + strconv.Itoa(cfg.threads),
		"-c" + strconv.Itoa(cfg.connections),
		"-d" + strconv.Itoa(int(cfg.duration.Seconds())) + "s",
		"--latency",
	}
	if host != "" {
		args = append(args, "-H", "Host: "+host)
	}
	args = append(args, url)
	cmd := exec.CommandContext(ctx, wrk, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return result{}, fmt.Errorf("wrk %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return parseWrk(stdout.String())
}

// parseWrk extracts requests/s and the 99th percentile latency from wrk's
// --latency output, failing on non-2xx answers or socket errors.
func parseWrk(out string) (result, error) {
	var (
		r               result
		haveRPS, have99 bool
	)
	for line := range strings.Lines(out) {
		line = strings.TrimSpace(line)
		f := strings.Fields(line)
		switch {
		case strings.HasPrefix(line, "Non-2xx or 3xx responses:"), strings.HasPrefix(line, "Socket errors:"):
			return result{}, fmt.Errorf("wrk: %s:\n%s", line, out)
		case strings.HasPrefix(line, "Requests/sec:") && len(f) == 2:
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return result{}, fmt.Errorf("wrk requests/s %q: %w", f[1], err)
			}
			r.rps, haveRPS = v, true
		case len(f) == 2 && f[0] == "99%":
			// wrk prints 850.00us, 1.23ms, 1.01s, 1.50m: all
			// time.ParseDuration units.
			d, err := time.ParseDuration(f[1])
			if err != nil {
				return result{}, fmt.Errorf("wrk 99%% latency %q: %w", f[1], err)
			}
			r.p99, have99 = d.Round(time.Microsecond), true
		}
	}
	if !haveRPS || !have99 {
		return result{}, fmt.Errorf("no Requests/sec or 99%% latency in wrk output:\n%s", out)
	}
	return r, nil
}
