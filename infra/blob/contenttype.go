package blob

import (
	"mime"
	"net/http"
	"path"
	"strings"
)

// webContentTypes fixes the content type of the file types a static site
// is made of. It comes before mime.TypeByExtension because that consults the
// machine's /etc/mime.types and similar files, which differ between hosts
// (and some map .js to application/x-javascript or lack .woff2, .avif or
// .webmanifest): the same build must be served the same way everywhere.
var webContentTypes = map[string]string{
	".html":        "text/html; charset=utf-8",
	".htm":         "text/html; charset=utf-8",
	".css":         "text/css; charset=utf-8",
	".js":          "text/javascript; charset=utf-8",
	".mjs":         "text/javascript; charset=utf-8",
	".cjs":         "text/javascript; charset=utf-8",
	".json":        "application/json",
	".map":         "application/json",
	".webmanifest": "application/manifest+json",
	".svg":         "image/svg+xml",
	".png":         "image/png",
	".jpg":         "image/jpeg",
	".jpeg":        "image/jpeg",
	".gif":         "image/gif",
	".webp":        "image/webp",
	".avif":        "image/avif",
	".ico":         "image/x-icon",
	".woff":        "font/woff",
	".woff2":       "font/woff2",
	".ttf":         "font/ttf",
	".otf":         "font/otf",
	".wasm":        "application/wasm",
	".txt":         "text/plain; charset=utf-8",
	".xml":         "application/xml",
	".pdf":         "application/pdf",
	".mp4":         "video/mp4",
	".webm":        "video/webm",
	".mp3":         "audio/mpeg",
	// React Server Component payloads written by Next.js static exports.
	".rsc": "text/x-component",
}

// ContentType returns the content type to serve the file name (a
// slash-separated path) with. It looks the lowercased extension up in a
// fixed table of web types first, then in mime.TypeByExtension, and
// finally sniffs head (the first up to 512 bytes of the content) with
// http.DetectContentType, so every file gets a type.
func ContentType(name string, head []byte) string {
	ext := strings.ToLower(path.Ext(name))
	if ext != "" {
		if t, ok := webContentTypes[ext]; ok {
			return t
		}
		if t := mime.TypeByExtension(ext); t != "" {
			return t
		}
	}
	return http.DetectContentType(head)
}
