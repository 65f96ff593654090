// Command upload benchmarks zipship's upload path end to end: it builds the
// zipship binary, starts `zipship serve` as a child process over a temp data
// directory, and POSTs a ~100 MB ZIP to /api/builds/{tenant} several times,
// timing each upload until its 202. Run it as `go run ./bench/upload`
// (`make bench`).
//
// Two baselines run interleaved with the uploads (zipship, disk, http,
// zipship, ...): the same file copied to disk with io.Copy and fsync (what
// the disk alone costs) and the same multipart body POSTed to a trivial
// in-process net/http server that discards it (what HTTP alone costs).
//
// The server's memory is read from /proc/<pid>/status: VmRSS before the
// first upload, VmRSS sampled every 20 ms during the uploads, and VmHWM
// (peak) after the last. The goal is a peak growth under 64 MB: uploads are
// streamed to disk, never held in memory.
//
// It prints a table and the memory lines, and exits non-zero if anything
// fails: a non-202 answer, a build that does not succeed, a server that does
// not stop cleanly, or a missed memory goal.
package main

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/zipship/zipship/bench/internal/harness"
)

const (
	tenantID = "bench"
	user     = "bench"
	// entries stored entries of entrySize random bytes make the ZIP.
	entries   = 100
	entrySize = 1 << 20
	// mb is the unit of every size printed.
	mb = 1 << 20
	// memGoal is the largest acceptable growth of the server's RSS.
	memGoal = 64 * mb
	// sampleEvery is the VmRSS sampling period.
	sampleEvery = 20 * time.Millisecond
	// buildTimeout bounds the wait for one build to finish.
	buildTimeout = 3 * time.Minute
)

// config is the command line.
type config struct {
	rounds int
	keep   bool
}

// caseName names one measured case; the table lists them in this order.
type caseName string

const (
	caseZipship caseName = "zipship upload (202)"
	caseHTTP    caseName = "raw HTTP POST (discard)"
	caseDisk    caseName = "disk copy (io.Copy+fsync)"
)

func main() {
	var cfg config
	flag.IntVar(&cfg.rounds, "n", 3, "uploads (and runs of each baseline), interleaved")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the temp directory (binary, ZIP, data dir)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench/upload:", err)
		os.Exit(1)
	}
}

// run sets everything up, measures, prints, and tears down; the server's
// shutdown error is reported too.
func run(ctx context.Context, cfg config, out io.Writer) (err error) {
	if cfg.rounds < 1 {
		return errors.New("-n must be at least 1")
	}
	tmp, removeTmp, err := harness.TempDir(out, "zipship-bench-upload-", cfg.keep)
	if err != nil {
		return err
	}
	defer removeTmp()

	bin, err := harness.BuildZipship(ctx, tmp)
	if err != nil {
		return err
	}
	zipPath := filepath.Join(tmp, "site.zip")
	size, err := writeZip(zipPath)
	if err != nil {
		return err
	}
	dataDir := filepath.Join(tmp, "data")
	srv, err := harness.StartServe(ctx, bin, harness.ServeOptions{
		DataDir:       dataDir,
		Args:          []string{"--max-upload-size", "200mb"},
		Env:           []string{"ZIPSHIP_LOG_LEVEL=warn"},
		HealthTimeout: 20 * time.Second,
	})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, srv.Stop()) }()

	token, err := srv.Token(ctx, user)
	if err != nil {
		return err
	}
	api := &apiClient{&harness.Client{Base: srv.URL, Token: token, HTTP: &http.Client{}}}
	if err := api.CreateTenant(ctx, tenantID, "Upload benchmark"); err != nil {
		return err
	}
	rawURL, stopRaw, err := startRawHTTP()
	if err != nil {
		return err
	}
	defer stopRaw()

	fmt.Fprintf(out, "%d uploads of a %.1f MB ZIP (%d stored entries of random bytes + index.html), interleaved zipship/disk/http; MB = 2^20 bytes; %d CPUs\n",
		cfg.rounds, float64(size)/mb, entries, runtime.NumCPU())
	results, mem, err := measure(ctx, cfg.rounds, srv, api, rawURL, zipPath, tmp)
	if err != nil {
		return err
	}
	if err := printTable(out, size, results); err != nil {
		return err
	}
	return printMemory(out, srv.PID(), mem)
}

// results holds each case's durations.
type results map[caseName][]time.Duration

// measure runs the interleaved rounds while sampling the server's memory.
func measure(ctx context.Context, rounds int, srv *harness.Server, api *apiClient, rawURL, zipPath, tmp string) (results, memory, error) {
	mem, err := startMemory(srv.PID())
	if err != nil {
		return nil, memory{}, err
	}
	res, err := runRounds(ctx, rounds, api, rawURL, zipPath, tmp)
	m, merr := mem.stop()
	if err != nil {
		return nil, memory{}, err
	}
	return res, m, merr
}

// runRounds runs every case once per round, in the table's order.
func runRounds(ctx context.Context, rounds int, api *apiClient, rawURL, zipPath, tmp string) (results, error) {
	cases := []struct {
		name caseName
		run  func() (time.Duration, error)
	}{
		{caseZipship, func() (time.Duration, error) { return api.uploadAndBuild(ctx, zipPath) }},
		{caseDisk, func() (time.Duration, error) { return diskCopy(zipPath, tmp) }},
		{caseHTTP, func() (time.Duration, error) { return rawPost(ctx, rawURL, zipPath) }},
	}
	res := results{}
	for i := range rounds {
		for _, c := range cases {
			d, err := c.run()
			if err != nil {
				return nil, fmt.Errorf("%s, round %d: %w", c.name, i+1, err)
			}
			res[c.name] = append(res[c.name], d)
		}
	}
	return res, nil
}

// writeZip writes a static site the server accepts and the runner can
// publish: index.html and entries stored (uncompressed) files of random,
// incompressible bytes, so no compression-ratio rule is near. It returns the
// ZIP's size.
func writeZip(path string) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, fmt.Errorf("create zip: %w", err)
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	zw := zip.NewWriter(bw)
	if err := addEntry(zw, "index.html", []byte("<!doctype html><title>upload benchmark</title><p>ok</p>\n")); err != nil {
		return 0, err
	}
	rng := rand.NewChaCha8([32]byte{'z', 'i', 'p', 's', 'h', 'i', 'p'})
	buf := make([]byte, entrySize)
	for i := range entries {
		if _, err := rng.Read(buf); err != nil {
			return 0, fmt.Errorf("random bytes: %w", err)
		}
		if err := addEntry(zw, fmt.Sprintf("assets/blob-%03d.bin", i), buf); err != nil {
			return 0, err
		}
	}
	if err := zw.Close(); err != nil {
		return 0, fmt.Errorf("write zip: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return 0, fmt.Errorf("write zip: %w", err)
	}
	if err := f.Close(); err != nil {
		return 0, fmt.Errorf("write zip: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("stat zip: %w", err)
	}
	return fi.Size(), nil
}

// addEntry stores one file, uncompressed.
func addEntry(zw *zip.Writer, name string, data []byte) error {
	w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store, Modified: time.Now()})
	if err != nil {
		return fmt.Errorf("zip entry %s: %w", name, err)
	}
	if _, err := w.Write(data); err != nil {
		return fmt.Errorf("zip entry %s: %w", name, err)
	}
	return nil
}

// apiClient calls the zipship API with a bearer token.
type apiClient struct{ *harness.Client }

// buildAnswer is the part of the upload and build answers read here.
type buildAnswer struct {
	Data struct {
		Build struct {
			ID     string `json:"id"`
			Status string `json:"status"`
		} `json:"build"`
	} `json:"data"`
}

// uploadAndBuild uploads the ZIP, timing it until the 202, then waits (not
// timed) for its build to finish, so that no build runs during the next
// measurement.
func (a *apiClient) uploadAndBuild(ctx context.Context, zipPath string) (time.Duration, error) {
	var ans buildAnswer
	d, err := a.upload(ctx, zipPath, &ans)
	if err != nil {
		return 0, err
	}
	if ans.Data.Build.ID == "" {
		return 0, errors.New("202 without a build id")
	}
	if err := a.waitBuild(ctx, ans.Data.Build.ID); err != nil {
		return 0, err
	}
	return d, nil
}

// upload POSTs the ZIP to /api/builds/{tenant} and times it until the 202
// has been read.
func (a *apiClient) upload(ctx context.Context, zipPath string, ans *buildAnswer) (time.Duration, error) {
	req, err := newUploadRequest(ctx, a.Base+"/api/builds/"+tenantID, zipPath)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if err := a.Call(req, http.StatusAccepted, ans); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// waitBuild polls the build until it succeeds; a failed build is an error.
func (a *apiClient) waitBuild(ctx context.Context, id string) error {
	deadline := time.Now().Add(buildTimeout)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.Base+"/api/builds/"+tenantID+"/"+id, nil)
		if err != nil {
			return fmt.Errorf("build %s: %w", id, err)
		}
		var ans buildAnswer
		if err := a.Call(req, http.StatusOK, &ans); err != nil {
			return fmt.Errorf("build %s: %w", id, err)
		}
		switch ans.Data.Build.Status {
		case "success":
			return nil
		case "failed":
			return fmt.Errorf("build %s failed", id)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("build %s still %q after %v", id, ans.Data.Build.Status, buildTimeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// newUploadRequest builds a POST whose multipart body (a single `file`
// field) is streamed from the file through an io.Pipe, with its
// Content-Length computed beforehand from the part headers and the file
// size.
func newUploadRequest(ctx context.Context, url, zipPath string) (*http.Request, error) {
	f, err := os.Open(zipPath)
	if err != nil {
		return nil, fmt.Errorf("open zip: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat zip: %w", err)
	}
	boundary := multipart.NewWriter(io.Discard).Boundary()
	overhead, err := multipartOverhead(boundary)
	if err != nil {
		f.Close()
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		defer f.Close()
		pw.CloseWithError(writeMultipart(pw, boundary, f))
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, pr)
	if err != nil {
		pr.Close()
		return nil, fmt.Errorf("upload request: %w", err)
	}
	req.ContentLength = overhead + fi.Size()
	req.Header.Set("Content-Type", "multipart/form-data; boundary="+boundary)
	return req, nil
}

// writeMultipart writes the multipart body: the `file` part holding r,
// then the closing boundary.
func writeMultipart(w io.Writer, boundary string, r io.Reader) error {
	mw := multipart.NewWriter(w)
	if err := mw.SetBoundary(boundary); err != nil {
		return fmt.Errorf("multipart boundary: %w", err)
	}
	part, err := mw.CreateFormFile("file", "site.zip")
	if err != nil {
		return fmt.Errorf("multipart part: %w", err)
	}
	if _, err := io.Copy(part, r); err != nil {
		return fmt.Errorf("multipart body: %w", err)
	}
	if err := mw.Close(); err != nil {
		return fmt.Errorf("multipart close: %w", err)
	}
	return nil
}

// multipartOverhead is the size of the multipart body minus the file.
func multipartOverhead(boundary string) (int64, error) {
	var buf bytes.Buffer
	if err := writeMultipart(&buf, boundary, bytes.NewReader(nil)); err != nil {
		return 0, err
	}
	return int64(buf.Len()), nil
}

// startRawHTTP serves, on a free loopback port in this process, a handler
// that reads and discards the body and answers 202: the cost of HTTP alone.
func startRawHTTP() (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("raw HTTP server: listen: %w", err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, err := io.Copy(io.Discard, r.Body); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			w.WriteHeader(http.StatusAccepted)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	done := make(chan struct{})
	go func() {
		srv.Serve(ln)
		close(done)
	}()
	stop := func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		<-done
	}
	return "http://" + ln.Addr().String() + "/upload", stop, nil
}

// rawPost POSTs the same multipart body to the raw server, timed until its
// 202 has been read.
func rawPost(ctx context.Context, url, zipPath string) (time.Duration, error) {
	req, err := newUploadRequest(ctx, url, zipPath)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("POST %s: %w", url, err)
	}
	_, err = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if err != nil {
		return 0, fmt.Errorf("POST %s: read answer: %w", url, err)
	}
	if res.StatusCode != http.StatusAccepted {
		return 0, fmt.Errorf("POST %s: status %d, want 202", url, res.StatusCode)
	}
	return time.Since(start), nil
}

// diskCopy copies the ZIP to a new file in dir through a user-space buffer
// and fsyncs it, as the server's spool-and-store path moves the bytes (the
// wrappers hide ReaderFrom/WriterTo, so no copy_file_range shortcut).
func diskCopy(src, dir string) (time.Duration, error) {
	start := time.Now()
	in, err := os.Open(src)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", src, err)
	}
	defer in.Close()
	out, err := os.CreateTemp(dir, "copy-*.zip")
	if err != nil {
		return 0, fmt.Errorf("create copy: %w", err)
	}
	defer os.Remove(out.Name())
	defer out.Close()
	if _, err := io.Copy(struct{ io.Writer }{out}, struct{ io.Reader }{in}); err != nil {
		return 0, fmt.Errorf("copy to %s: %w", out.Name(), err)
	}
	if err := out.Sync(); err != nil {
		return 0, fmt.Errorf("fsync %s: %w", out.Name(), err)
	}
	if err := out.Close(); err != nil {
		return 0, fmt.Errorf("close %s: %w", out.Name(), err)
	}
	return time.Since(start), nil
}

// memory is what was measured of the server's memory, in bytes.
type memory struct {
	baseline   int64 // VmRSS before the first upload
	sampled    int64 // highest VmRSS sampled during the uploads
	samples    int
	hwm        int64 // VmHWM after the last upload
	hwmIsReset bool  // the peak was reset before the first upload
}

// sampler samples a process's VmRSS every sampleEvery until stopped.
type sampler struct {
	pid  int
	m    memory
	err  error
	quit chan struct{}
	done chan struct{}
}

// startMemory resets the process's peak RSS where the kernel allows it
// (so VmHWM covers the uploads, not the start-up), reads the baseline
// VmRSS and starts sampling.
func startMemory(pid int) (*sampler, error) {
	s := &sampler{pid: pid, quit: make(chan struct{}), done: make(chan struct{})}
	s.m.hwmIsReset = resetPeak(pid) == nil
	st, err := procStatus(pid)
	if err != nil {
		return nil, err
	}
	s.m.baseline, s.m.sampled = st["VmRSS"], st["VmRSS"]
	go s.loop()
	return s, nil
}

func (s *sampler) loop() {
	defer close(s.done)
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
		}
		st, err := procStatus(s.pid)
		if err != nil {
			s.err = err
			return
		}
		s.m.sampled = max(s.m.sampled, st["VmRSS"])
		s.m.samples++
	}
}

// stop ends sampling and reads VmHWM.
func (s *sampler) stop() (memory, error) {
	close(s.quit)
	<-s.done
	if s.err != nil {
		return memory{}, s.err
	}
	st, err := procStatus(s.pid)
	if err != nil {
		return memory{}, err
	}
	s.m.hwm = st["VmHWM"]
	return s.m, nil
}

// resetPeak resets the process's VmHWM to its current RSS (Linux 4.0+).
func resetPeak(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// procStatus reads the kB fields of /proc/<pid>/status, in bytes.
func procStatus(pid int) (map[string]int64, error) {
	path := fmt.Sprintf("/proc/%d/status", pid)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	st := map[string]int64{}
	for line := range strings.Lines(string(data)) {
		name, rest, ok := strings.Cut(line, ":")
		f := strings.Fields(rest)
		if !ok || len(f) != 2 || f[1] != "kB" {
			continue
		}
		if v, err := strconv.ParseInt(f[0], 10, 64); err == nil {
			st[name] = v << 10
		}
	}
	if st["VmRSS"] == 0 || st["VmHWM"] == 0 {
		return nil, fmt.Errorf("%s: no VmRSS or VmHWM", path)
	}
	return st, nil
}

// stats returns the best (shortest) and median durations.
func stats(ds []time.Duration) (best, median time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	median = s[len(s)/2]
	if len(s)%2 == 0 {
		median = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[0], median
}

// rate is size bytes over d in MB/s.
func rate(size int64, d time.Duration) float64 {
	return float64(size) / mb / d.Seconds()
}

// printTable prints each case's throughput and its ratios to the baselines
// (of the medians).
func printTable(out io.Writer, size int64, res results) error {
	_, httpMed := stats(res[caseHTTP])
	_, diskMed := stats(res[caseDisk])
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight|tabwriter.Debug)
	fmt.Fprintln(tw, "case\tMB/s (best / median)\tratio vs raw HTTP\tratio vs disk copy\t")
	for _, c := range []caseName{caseZipship, caseHTTP, caseDisk} {
		best, med := stats(res[c])
		fmt.Fprintf(tw, "%s\t%.0f / %.0f\t%.2f\t%.2f\t\n", c, rate(size, best), rate(size, med),
			rate(size, med)/rate(size, httpMed), rate(size, med)/rate(size, diskMed))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("print table: %w", err)
	}
	return nil
}

// printMemory prints the memory lines and fails if the growth misses the
// goal.
func printMemory(out io.Writer, pid int, m memory) error {
	peak := max(m.hwm, m.sampled)
	growth := peak - m.baseline
	verdict := "PASS"
	if growth >= memGoal {
		verdict = "FAIL"
	}
	scope := "since start-up (peak reset unsupported)"
	if m.hwmIsReset {
		scope = "since the first upload"
	}
	fmt.Fprintf(out, "zipship serve memory (pid %d, builds included):\n", pid)
	fmt.Fprintf(out, "  baseline VmRSS before the first upload  %6.1f MB\n", float64(m.baseline)/mb)
	fmt.Fprintf(out, "  peak VmRSS sampled every %-4v           %6.1f MB  (%d samples)\n", sampleEvery, float64(m.sampled)/mb, m.samples)
	fmt.Fprintf(out, "  peak VmHWM after the last upload        %6.1f MB  (%s)\n", float64(m.hwm)/mb, scope)
	fmt.Fprintf(out, "  peak growth                             %6.1f MB  goal < %d MB: %s\n", float64(growth)/mb, memGoal/mb, verdict)
	if verdict == "FAIL" {
		return fmt.Errorf("memory goal missed: peak growth %.1f MB, goal < %d MB", float64(growth)/mb, memGoal/mb)
	}
	return nil
}
