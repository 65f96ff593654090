package detect

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// maxScannedFile is the largest source file CheckNextStaticExport reads;
// larger ones (generated bundles, data) are skipped.
const maxScannedFile = 1 << 20

// maxProblems caps how many problems one check reports.
const maxProblems = 20

var (
	reConfigKey = regexp.MustCompile(`(?m)(?:^|[\s{,])(?:async\s+)?["']?(rewrites|redirects|headers|i18n)["']?\s*(?:\(|:)`)

	reDynamicForce = regexp.MustCompile(`export\s+const\s+dynamic\s*=\s*["']force-dynamic["']`)
	reRevalidate   = regexp.MustCompile(`export\s+const\s+revalidate\s*=\s*([^;\n]+)`)
	reNextHeaders  = regexp.MustCompile(`from\s*["']next/headers["']|require\(\s*["']next/headers["']\s*\)`)
	reHeadersCall  = regexp.MustCompile(`\b(headers|cookies|draftMode)\s*\(`)
	reUseServer    = regexp.MustCompile(`(?m)^\s*["']use server["']`)

	reMethodExport = regexp.MustCompile(`export\s+(?:async\s+)?function\s+(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS)\b|export\s+(?:const|let|var)\s+(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS)\b|export\s*\{[^}]*\b(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS)\b[^}]*\}`)
	// The first parameter of an exported GET handler.
	reGetParam = regexp.MustCompile(`export\s+(?:async\s+)?function\s+GET\s*\(\s*([A-Za-z_$][\w$]*)|export\s+(?:const|let|var)\s+GET\s*=\s*(?:async\s*)?(?:\(\s*([A-Za-z_$][\w$]*)|([A-Za-z_$][\w$]*)\s*=>)`)

	reGSSP           = regexp.MustCompile(`\bgetServerSideProps\b`)
	reGSP            = regexp.MustCompile(`\bgetStaticProps\b`)
	rePagesRevalid   = regexp.MustCompile(`\brevalidate\s*:\s*([^,}\n]+)`)
	scannedExtension = map[string]bool{".js": true, ".jsx": true, ".ts": true, ".tsx": true, ".mjs": true}
)

// CheckNextStaticExport refuses, before the build, what a Next.js static
// export cannot serve from static files. Every problem found is a
// *UserError "<file>: <what> is not supported by static export: <what to
// change>"; several are returned together as UserErrors.
//
// The checks read the source as text, with comments removed: they are
// heuristics, made to catch the common forms without running the code.
//
//   - middleware or proxy (Next.js 16) at the project root or in src/;
//   - rewrites, redirects, headers or i18n in the Next.js configuration
//     (the key found in the file: a configuration computing them some other
//     way is not seen);
//   - in app/: route handlers other than GET, a GET handler that reads its
//     request, headers()/cookies()/draftMode() from next/headers,
//     export const dynamic = 'force-dynamic', export const revalidate with
//     a value other than false or Infinity (ISR, or dynamic for 0), and
//     server actions ('use server');
//   - in pages/: getServerSideProps, getStaticProps returning revalidate
//     (ISR), and API routes (pages/api/).
//
// Remote images with the default loader are not refused: the export is
// built with images.unoptimized (see PrepareNextExport), so next/image
// renders the original URL and the browser loads it from its origin; the
// only loss is the resizing, which local images lose too.
//
// It may run before or after PrepareNextExport (it reads the user's own
// configuration, next.config.user.<ext> once renamed, and names it as the
// user knows it).
func CheckNextStaticExport(projectDir string) error {
	root, err := os.OpenRoot(projectDir)
	if err != nil {
		return fmt.Errorf("check static export: %w", err)
	}
	defer root.Close()
	c := &checker{root: root}

	for _, dir := range []string{"", "src/"} {
		for _, base := range []string{"middleware", "proxy"} {
			for ext := range scannedExtension {
				name := dir + base + ext
				if fi, err := root.Lstat(name); err == nil && !fi.IsDir() {
					c.add(name, base+" is not supported by static export: it needs a server; remove "+name+" (redirects and headers can be set at zipship's edge or CDN instead)")
				}
			}
		}
	}

	if err := c.checkConfig(); err != nil {
		return err
	}
	for _, dir := range []string{"app", "src/app"} {
		if err := c.walk(dir, c.checkApp); err != nil {
			return err
		}
	}
	for _, dir := range []string{"pages", "src/pages"} {
		if err := c.walk(dir, func(name, src string) { c.checkPages(dir, name, src) }); err != nil {
			return err
		}
	}

	if len(c.problems) == 0 {
		return nil
	}
	sort.SliceStable(c.problems, func(i, j int) bool { return c.problems[i].File < c.problems[j].File })
	if len(c.problems) == 1 {
		return c.problems[0]
	}
	if len(c.problems) > maxProblems {
		more := len(c.problems) - maxProblems
		c.problems = append(c.problems[:maxProblems], userErr("", "", fmt.Sprintf("… and %d more problems of the same kinds", more)))
	}
	return c.problems
}

type checker struct {
	root     *os.Root
	problems UserErrors
}

func (c *checker) add(file, text string) {
	c.problems = append(c.problems, userErr("", file, ": "+text))
}

// checkConfig looks for keys a static export ignores in the configuration.
func (c *checker) checkConfig() error {
	var name, shown string
	for _, n := range nextConfigs {
		ext := strings.TrimPrefix(n, "next.config.")
		for _, candidate := range []string{"next.config.user." + ext, n} {
			if fi, err := c.root.Lstat(candidate); err == nil && fi.Mode().IsRegular() {
				name, shown = candidate, n
				break
			}
		}
		if name != "" {
			break
		}
	}
	if name == "" {
		return nil
	}
	src, err := c.read(name)
	if err != nil || src == "" {
		return err
	}
	seen := map[string]bool{}
	for _, m := range reConfigKey.FindAllStringSubmatch(blankStrings(stripComments(src)), -1) {
		key := m[1]
		if seen[key] {
			continue
		}
		seen[key] = true
		switch key {
		case "i18n":
			c.add(shown, "i18n routing is not supported by static export: remove i18n from the configuration and put each locale under its own path (e.g. app/[lang]/ with generateStaticParams)")
		default:
			c.add(shown, key+" (found in the configuration; this check reads the file as text) is not supported by static export: nothing serves them from static files; remove "+key+" and change the links, or set them at zipship's edge or CDN")
		}
	}
	return nil
}

// checkApp checks one source file of the App Router.
func (c *checker) checkApp(name, src string) {
	base := path.Base(name)
	isRoute := strings.HasPrefix(base, "route.")
	if isRoute {
		seen := map[string]bool{}
		for _, m := range reMethodExport.FindAllStringSubmatch(src, -1) {
			method := m[1] + m[2] + m[3]
			if method == "GET" || seen[method] {
				continue
			}
			seen[method] = true
			c.add(name, "a "+method+" route handler is not supported by static export: only GET handlers that read nothing from the request are written out as files; move it to an API hosted elsewhere")
		}
		if m := reGetParam.FindStringSubmatch(src); m != nil {
			param := m[1] + m[2] + m[3]
			uses := regexp.MustCompile(`(?:^|[^\w$.])`+regexp.QuoteMeta(param)+`\b`).FindAllStringIndex(src, -1)
			if !strings.HasPrefix(param, "_") && len(uses) > 1 {
				c.add(name, "a GET route handler that reads its request ("+param+") is not supported by static export: the response is computed once at build time; drop the request parameter or move the handler to an API hosted elsewhere")
			}
		}
	}
	if reNextHeaders.MatchString(src) {
		if m := reHeadersCall.FindStringSubmatch(src); m != nil {
			c.add(name, m[1]+"() from next/headers is not supported by static export: there is no request at build time; remove it (read cookies in the browser instead)")
		}
	}
	if reDynamicForce.MatchString(src) {
		c.add(name, "export const dynamic = 'force-dynamic' is not supported by static export: remove it (or use 'force-static')")
	}
	if m := reRevalidate.FindStringSubmatch(src); m != nil {
		switch v := strings.TrimSpace(m[1]); {
		case v == "false" || v == "Infinity":
		case isZero(v):
			c.add(name, "export const revalidate = 0 (render on every request) is not supported by static export: remove it")
		default:
			c.add(name, "incremental static regeneration (export const revalidate = "+v+") is not supported by static export: remove it; the page is rebuilt on each upload")
		}
	}
	if reUseServer.MatchString(src) {
		c.add(name, "server actions ('use server') are not supported by static export: there is no server; call an API hosted elsewhere instead")
	}
}

// checkPages checks one source file of the Pages Router under dir.
func (c *checker) checkPages(dir, name, src string) {
	if strings.HasPrefix(name, dir+"/api/") {
		c.add(name, "API routes (pages/api) are not supported by static export: there is no server; move the API elsewhere")
		return
	}
	if reGSSP.MatchString(src) {
		c.add(name, "getServerSideProps is not supported by static export: use getStaticProps (with getStaticPaths for dynamic routes) or fetch the data in the browser")
	}
	if reGSP.MatchString(src) {
		for _, m := range rePagesRevalid.FindAllStringSubmatch(src, -1) {
			v := strings.TrimSpace(m[1])
			if v == "false" || v == "undefined" || isZero(v) {
				continue
			}
			c.add(name, "incremental static regeneration (revalidate: "+v+" in getStaticProps) is not supported by static export: remove revalidate; the page is rebuilt on each upload")
			break
		}
	}
}

// isZero reports whether v is a numeric literal equal to zero.
func isZero(v string) bool {
	f, err := strconv.ParseFloat(strings.ReplaceAll(v, "_", ""), 64)
	return err == nil && f == 0
}

// walk calls fn with the comment-free source of every scanned file under
// dir (node_modules and dot-folders skipped).
func (c *checker) walk(dir string, fn func(name, src string)) error {
	fi, err := c.root.Lstat(dir)
	if err != nil || !fi.IsDir() {
		return nil
	}
	return fs.WalkDir(c.root.FS(), dir, func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("check static export: %w", err)
		}
		if d.IsDir() {
			if name != dir && (strings.HasPrefix(d.Name(), ".") || d.Name() == "node_modules") {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || !scannedExtension[path.Ext(name)] {
			return nil
		}
		src, err := c.read(name)
		if err != nil {
			return err
		}
		fn(name, stripComments(src))
		return nil
	})
}

// read returns a file's text, "" when it is larger than maxScannedFile.
func (c *checker) read(name string) (string, error) {
	f, err := c.root.Open(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", nil
		}
		return "", fmt.Errorf("check static export: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("check static export: %w", err)
	}
	if fi.Size() > maxScannedFile {
		return "", nil
	}
	buf := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, buf); err != nil {
		return "", fmt.Errorf("check static export: read %s: %w", name, err)
	}
	return string(buf), nil
}

// reIdentString is a string literal holding one identifier ('headers').
var reIdentString = regexp.MustCompile("^[\"'`][A-Za-z_$][\\w$]*[\"'`]$")

// literalEnd returns the index of the quote that closes the string or
// template literal opening at src[i] (a quote character), skipping escapes;
// an unterminated literal ends at a newline (not for templates) or at the
// end of src.
func literalEnd(src string, i int) int {
	ch := src[i]
	j := i + 1
	for j < len(src) && src[j] != ch {
		if src[j] == '\\' {
			j++
		} else if src[j] == '\n' && ch != '`' {
			break
		}
		j++
	}
	if j >= len(src) {
		j = len(src) - 1
	}
	return j
}

// blankStrings empties the string and template literals of comment-free
// source, except those holding one identifier (a quoted key), so that words
// inside strings are not taken for keys.
func blankStrings(src string) string {
	var b strings.Builder
	b.Grow(len(src))
	for i := 0; i < len(src); {
		ch := src[i]
		if ch != '"' && ch != '\'' && ch != '`' {
			b.WriteByte(ch)
			i++
			continue
		}
		j := literalEnd(src, i)
		if lit := src[i : j+1]; j <= i || reIdentString.MatchString(lit) {
			b.WriteString(lit)
		} else {
			b.WriteString(string(ch) + strings.Repeat(" ", j-i-1) + string(src[j]))
		}
		i = j + 1
	}
	return b.String()
}

// stripComments blanks // and /* */ comments out of JavaScript or
// TypeScript source, leaving string and template literals alone (regular
// expression literals are not recognised: a // inside one ends the line
// early, which only hides code from the heuristics). Newlines are kept.
func stripComments(src string) string {
	var b strings.Builder
	b.Grow(len(src))
	for i := 0; i < len(src); {
		ch := src[i]
		switch {
		case ch == '/' && i+1 < len(src) && src[i+1] == '/':
			for i < len(src) && src[i] != '\n' {
				i++
			}
		case ch == '/' && i+1 < len(src) && src[i+1] == '*':
			end := strings.Index(src[i+2:], "*/")
			if end < 0 {
				end = len(src) - i - 2
			}
			for _, r := range src[i : i+2+end] {
				if r == '\n' {
					b.WriteByte('\n')
				}
			}
			i += 2 + end + 2
		case ch == '"' || ch == '\'' || ch == '`':
			j := literalEnd(src, i)
			b.WriteString(src[i : j+1])
			i = j + 1
		default:
			b.WriteByte(ch)
			i++
		}
	}
	return b.String()
}
