package blob_test

import (
	"mime"
	"testing"

	"github.com/zipship/zipship/infra/blob"
)

func TestContentType(t *testing.T) {
	png := []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
	tests := []struct {
		name string
		head []byte
		want string
	}{
		{"index.html", nil, "text/html; charset=utf-8"},
		{"docs/page.htm", nil, "text/html; charset=utf-8"},
		{"INDEX.HTML", nil, "text/html; charset=utf-8"},
		{"_next/static/css/app.css", nil, "text/css; charset=utf-8"},
		{"app.js", nil, "text/javascript; charset=utf-8"},
		{"App.JS", nil, "text/javascript; charset=utf-8"},
		{"mod.mjs", nil, "text/javascript; charset=utf-8"},
		{"mod.cjs", nil, "text/javascript; charset=utf-8"},
		{"data.json", nil, "application/json"},
		{"app.js.map", nil, "application/json"},
		{"site.webmanifest", nil, "application/manifest+json"},
		{"logo.svg", nil, "image/svg+xml"},
		{"a.png", nil, "image/png"},
		{"a.jpg", nil, "image/jpeg"},
		{"a.jpeg", nil, "image/jpeg"},
		{"a.gif", nil, "image/gif"},
		{"a.webp", nil, "image/webp"},
		{"a.avif", nil, "image/avif"},
		{"favicon.ico", nil, "image/x-icon"},
		{"f.woff", nil, "font/woff"},
		{"f.woff2", nil, "font/woff2"},
		{"f.ttf", nil, "font/ttf"},
		{"f.otf", nil, "font/otf"},
		{"m.wasm", nil, "application/wasm"},
		{"robots.txt", nil, "text/plain; charset=utf-8"},
		{"sitemap.xml", nil, "application/xml"},
		{"doc.pdf", nil, "application/pdf"},
		{"v.mp4", nil, "video/mp4"},
		{"v.webm", nil, "video/webm"},
		{"a.mp3", nil, "audio/mpeg"},
		{"page.rsc", nil, "text/x-component"},
		{"index.txt", []byte("<!DOCTYPE html>"), "text/plain; charset=utf-8"}, // table beats sniffing
		{"logo.png", []byte("<html>"), "image/png"},

		// No extension, or an unknown one: sniffed.
		{"LICENSE", []byte("MIT License\n"), "text/plain; charset=utf-8"},
		{"image", png, "image/png"},
		{"page", []byte("<!DOCTYPE html><html>"), "text/html; charset=utf-8"},
		{"blob.zzqqxx", []byte{0x00, 0x01, 0x02, 0xff}, "application/octet-stream"},
		{"dir.d/noext", []byte{0x00, 0x01}, "application/octet-stream"}, // dot in a directory is not an extension
	}
	for _, tt := range tests {
		if got := blob.ContentType(tt.name, tt.head); got != tt.want {
			t.Errorf("ContentType(%q, %q) = %q, want %q", tt.name, tt.head, got, tt.want)
		}
	}
}

func TestContentTypeFallsBackToMime(t *testing.T) {
	if err := mime.AddExtensionType(".zipshiptest", "application/x-zipship-test"); err != nil {
		t.Fatal(err)
	}
	if got, want := blob.ContentType("a/b.ZIPSHIPTEST", []byte("<html>")), "application/x-zipship-test"; got != want {
		t.Errorf("ContentType = %q, want %q (from mime.TypeByExtension)", got, want)
	}
}
