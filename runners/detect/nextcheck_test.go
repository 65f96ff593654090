package detect

import (
	"errors"
	"strings"
	"testing"
)

// An ordinary App Router project that a static export serves.
var okApp = map[string]string{
	"package.json": pkgNext,
	"next.config.ts": `import type { NextConfig } from 'next'
// We used to have rewrites() here; headers: none.
/* redirects: removed */
const config: NextConfig = {
  trailingSlash: true,
  images: { remotePatterns: [{ protocol: 'https', hostname: 'images.example.com' }] },
  env: { NOTE: "the words rewrites: and headers( in a string do not count" },
}
export default config
`,
	"app/layout.tsx": "export default function Layout({ children }: { children: React.ReactNode }) { return <html><body>{children}</body></html> }\n",
	"app/page.tsx":   "import Image from 'next/image'\nexport default function Home() { return <Image src=\"https://images.example.com/a.png\" alt=\"\" width={10} height={10} /> }\n",
	"app/blog/[slug]/page.tsx": `export const revalidate = false
export const dynamic = 'force-static'
export async function generateStaticParams() { return [{ slug: 'a' }, { slug: 'b' }] }
export default async function Post({ params }: { params: Promise<{ slug: string }> }) {
  const { slug } = await params
  return <h1>{slug}</h1>
}
`,
	"app/feed.xml/route.ts": `export const dynamic = 'force-static'
export async function GET() {
  return new Response('<rss/>', { headers: { 'content-type': 'application/xml' } })
}
`,
	"app/api/items/[id]/route.js": `export function generateStaticParams() { return [{ id: '1' }] }
export async function GET(_request, { params }) {
  const { id } = await params
  return Response.json({ id })
}
`,
	"app/client.tsx": `'use client'
// getServerSideProps is mentioned in a comment only
export function Client() { const headers = () => 1; return <p>{headers()}</p> }
`,
	"app/old.tsx":                  "export const revalidate = Infinity\nexport default function P() { return null }\n",
	"pages/about.js":               "export async function getStaticProps() { return { props: {}, revalidate: false } }\nexport default function About() { return null }\n",
	"pages/paths/[id].js":          "export async function getStaticPaths() { return { paths: [], fallback: false } }\nexport async function getStaticProps() { return { props: {} } }\nexport default function P() { return null }\n",
	"src/middleware-utils.ts":      "export const x = 1\n",
	"node_modules/x/middleware.js": "",
	"components/Server.tsx":        "export default function S() { return null }\n",
}

func TestCheckNextStaticExportPassesAnOrdinaryApp(t *testing.T) {
	if err := CheckNextStaticExport(project(t, okApp)); err != nil {
		t.Fatalf("CheckNextStaticExport: %v", err)
	}
	if err := CheckNextStaticExport(project(t, map[string]string{"package.json": pkgNext})); err != nil {
		t.Fatalf("an empty project: %v", err)
	}
}

func TestCheckNextStaticExport(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  string // the whole message
	}{
		{"middleware at the root", map[string]string{"middleware.ts": "export function middleware() {}"},
			"middleware.ts: middleware is not supported by static export: it needs a server; remove middleware.ts (redirects and headers can be set at zipship's edge or CDN instead)"},
		{"middleware in src", map[string]string{"src/middleware.js": "export function middleware() {}"},
			"src/middleware.js: middleware is not supported by static export: it needs a server; remove src/middleware.js (redirects and headers can be set at zipship's edge or CDN instead)"},
		{"proxy (Next.js 16)", map[string]string{"proxy.ts": "export function proxy() {}"},
			"proxy.ts: proxy is not supported by static export: it needs a server; remove proxy.ts (redirects and headers can be set at zipship's edge or CDN instead)"},
		{"rewrites in next.config.js", map[string]string{"next.config.js": "module.exports = {\n  async rewrites() { return [] },\n}\n"},
			"next.config.js: rewrites (found in the configuration; this check reads the file as text) is not supported by static export: nothing serves them from static files; remove rewrites and change the links, or set them at zipship's edge or CDN"},
		{"redirects as a property", map[string]string{"next.config.mjs": "export default { redirects: async () => [{ source: '/a', destination: '/b', permanent: true }] }\n"},
			"next.config.mjs: redirects (found in the configuration; this check reads the file as text) is not supported by static export: nothing serves them from static files; remove redirects and change the links, or set them at zipship's edge or CDN"},
		{"headers, after PrepareNextExport renamed the file", map[string]string{"next.config.user.ts": "const c = {\n  headers() { return [] },\n}\nexport default c\n", "next.config.ts": wrapperMarker + "\n"},
			"next.config.ts: headers (found in the configuration; this check reads the file as text) is not supported by static export: nothing serves them from static files; remove headers and change the links, or set them at zipship's edge or CDN"},
		{"a quoted key", map[string]string{"next.config.js": "module.exports = {\n  'redirects': () => [],\n}\n"},
			"next.config.js: redirects (found in the configuration; this check reads the file as text) is not supported by static export: nothing serves them from static files; remove redirects and change the links, or set them at zipship's edge or CDN"},
		{"i18n", map[string]string{"next.config.js": "module.exports = { i18n: { locales: ['en', 'fr'], defaultLocale: 'en' } }\n"},
			"next.config.js: i18n routing is not supported by static export: remove i18n from the configuration and put each locale under its own path (e.g. app/[lang]/ with generateStaticParams)"},
		{"a POST route handler", map[string]string{"app/api/contact/route.ts": "export async function POST(req: Request) { return Response.json(await req.json()) }\n"},
			"app/api/contact/route.ts: a POST route handler is not supported by static export: only GET handlers that read nothing from the request are written out as files; move it to an API hosted elsewhere"},
		{"methods exported as consts", map[string]string{"app/api/x/route.js": "const handler = () => new Response('x')\nexport const GET = handler\nexport const DELETE = handler\n"},
			"app/api/x/route.js: a DELETE route handler is not supported by static export: only GET handlers that read nothing from the request are written out as files; move it to an API hosted elsewhere"},
		{"a GET reading its request", map[string]string{"src/app/api/search/route.ts": "import { NextRequest } from 'next/server'\nexport async function GET(request: NextRequest) {\n  const q = request.nextUrl.searchParams.get('q')\n  return Response.json({ q })\n}\n"},
			"src/app/api/search/route.ts: a GET route handler that reads its request (request) is not supported by static export: the response is computed once at build time; drop the request parameter or move the handler to an API hosted elsewhere"},
		{"an arrow GET reading its request", map[string]string{"app/api/echo/route.js": "export const GET = async req => new Response(req.url)\n"},
			"app/api/echo/route.js: a GET route handler that reads its request (req) is not supported by static export: the response is computed once at build time; drop the request parameter or move the handler to an API hosted elsewhere"},
		{"cookies() in a route handler", map[string]string{"app/api/me/route.ts": "import { cookies } from 'next/headers'\nexport async function GET() {\n  const c = await cookies()\n  return Response.json({ s: c.get('s') })\n}\n"},
			"app/api/me/route.ts: cookies() from next/headers is not supported by static export: there is no request at build time; remove it (read cookies in the browser instead)"},
		{"headers() in a page", map[string]string{"app/page.tsx": "import { headers } from \"next/headers\"\nexport default async function P() { const h = await headers(); return <p>{h.get('user-agent')}</p> }\n"},
			"app/page.tsx: headers() from next/headers is not supported by static export: there is no request at build time; remove it (read cookies in the browser instead)"},
		{"force-dynamic", map[string]string{"app/api/time/route.ts": "export const dynamic = 'force-dynamic'\nexport function GET() { return Response.json({ now: Date.now() }) }\n"},
			"app/api/time/route.ts: export const dynamic = 'force-dynamic' is not supported by static export: remove it (or use 'force-static')"},
		{"ISR in app", map[string]string{"app/news/page.tsx": "export const revalidate = 3600\nexport default function News() { return null }\n"},
			"app/news/page.tsx: incremental static regeneration (export const revalidate = 3600) is not supported by static export: remove it; the page is rebuilt on each upload"},
		{"revalidate 0 in app", map[string]string{"app/live/page.js": "export const revalidate = 0;\nexport default function Live() { return null }\n"},
			"app/live/page.js: export const revalidate = 0 (render on every request) is not supported by static export: remove it"},
		{"server actions", map[string]string{"app/actions.ts": "'use server'\nexport async function save(data: FormData) { console.log(data) }\n"},
			"app/actions.ts: server actions ('use server') are not supported by static export: there is no server; call an API hosted elsewhere instead"},
		{"getServerSideProps", map[string]string{"pages/index.tsx": "export const getServerSideProps = async () => ({ props: {} })\nexport default function Home() { return null }\n"},
			"pages/index.tsx: getServerSideProps is not supported by static export: use getStaticProps (with getStaticPaths for dynamic routes) or fetch the data in the browser"},
		{"ISR in pages", map[string]string{"src/pages/blog/[slug].js": "export async function getStaticProps() {\n  return { props: {}, revalidate: 60 }\n}\nexport default function Post() { return null }\n"},
			"src/pages/blog/[slug].js: incremental static regeneration (revalidate: 60 in getStaticProps) is not supported by static export: remove revalidate; the page is rebuilt on each upload"},
		{"API routes", map[string]string{"pages/api/hello.ts": "export default function handler(req, res) { res.json({}) }\n"},
			"pages/api/hello.ts: API routes (pages/api) are not supported by static export: there is no server; move the API elsewhere"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := map[string]string{"package.json": pkgNext}
			for k, v := range tt.files {
				files[k] = v
			}
			err := CheckNextStaticExport(project(t, files))
			if err == nil {
				t.Fatalf("no error, want\n%s", tt.want)
			}
			if err.Error() != tt.want {
				t.Fatalf("error =\n%s\nwant\n%s", err, tt.want)
			}
			var ue *UserError
			if !errors.As(err, &ue) {
				t.Fatalf("not a *UserError: %T", err)
			}
		})
	}
}

func TestCheckNextStaticExportReportsEveryProblem(t *testing.T) {
	files := map[string]string{
		"package.json":         pkgNext,
		"middleware.js":        "",
		"next.config.js":       "module.exports = { async rewrites() { return [] }, async headers() { return [] } }",
		"app/api/x/route.ts":   "export async function POST() {}\nexport async function PUT() {}\n",
		"pages/ssr.js":         "export async function getServerSideProps() { return { props: {} } }",
		"app/a/b/c/d/page.jsx": "export const revalidate = 10",
		"app/.hidden/page.js":  "export const revalidate = 10", // dot-folders are skipped
		"app/big/data.js":      strings.Repeat("x", maxScannedFile+1) + "\nexport const revalidate = 5",
	}
	err := CheckNextStaticExport(project(t, files))
	var ues UserErrors
	if !errors.As(err, &ues) {
		t.Fatalf("err = %T %v, want UserErrors", err, err)
	}
	var got []string
	for _, u := range ues {
		got = append(got, u.File)
	}
	want := "app/a/b/c/d/page.jsx app/api/x/route.ts app/api/x/route.ts middleware.js next.config.js next.config.js pages/ssr.js"
	if strings.Join(got, " ") != want {
		t.Errorf("files = %v, want %s\n%v", got, want, err)
	}
	if !IsUserError(err) {
		t.Error("IsUserError = false")
	}
	if lines := strings.Split(err.Error(), "\n"); len(lines) != 7 {
		t.Errorf("message has %d lines:\n%s", len(lines), err)
	}
}

func TestCheckNextStaticExportCapsTheList(t *testing.T) {
	files := map[string]string{"package.json": pkgNext}
	for i := range maxProblems + 5 {
		files["pages/p"+strings.Repeat("x", i)+".js"] = "export const getServerSideProps = 1"
	}
	var ues UserErrors
	if !errors.As(CheckNextStaticExport(project(t, files)), &ues) || len(ues) != maxProblems+1 ||
		ues[maxProblems].Error() != "… and 5 more problems of the same kinds" {
		t.Fatalf("got %d problems: %v", len(ues), ues)
	}
}

func TestBlankStrings(t *testing.T) {
	src := "a 'headers' \"two words\" `x ${y}` 'esc\\'d' '"
	want := "a 'headers' \"         \" `      ` '      ' '"
	if got := blankStrings(src); got != want {
		t.Errorf("blankStrings =\n%q\nwant\n%q", got, want)
	}
}

func TestStripComments(t *testing.T) {
	src := "a // c1\nb /* c2\nc2 */ d 'x // not' \"y /* not */\" `z // ${1} not` e /* unterminated"
	want := "a \nb \n d 'x // not' \"y /* not */\" `z // ${1} not` e "
	if got := stripComments(src); got != want {
		t.Errorf("stripComments =\n%q\nwant\n%q", got, want)
	}
}
