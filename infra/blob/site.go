package blob

import "time"

// ManifestFile is one published file of a site version.
type ManifestFile struct {
	// Digest is the lowercase hex sha256 of the content; the content lives
	// at BlobKey(Digest).
	Digest      string `json:"digest"`
	Size        int64  `json:"size"`
	ContentType string `json:"contentType"`
}

// Manifest lists every file of one immutable site version (one build).
// Paths are slash-separated, relative, without a leading slash
// ("index.html", "_next/static/chunks/app.js").
type Manifest struct {
	Tenant    string                  `json:"tenant"`
	BuildID   string                  `json:"buildId"`
	CreatedAt time.Time               `json:"createdAt"`
	Files     map[string]ManifestFile `json:"files"`
	// TotalSize is the sum of all file sizes.
	TotalSize int64 `json:"totalSize"`
}

// Pointer is the tenant's live-version pointer, stored at PointerKey(tenant).
// The edge reads it to know which manifest to serve.
type Pointer struct {
	Tenant      string    `json:"tenant"`
	BuildID     string    `json:"buildId"`
	Version     string    `json:"version"`
	ManifestKey string    `json:"manifestKey"`
	ActivatedAt time.Time `json:"activatedAt"`
}

// BlobKey is where content with the given sha256 hex digest is stored.
func BlobKey(digest string) string {
	return "blobs/sha256/" + digest[:2] + "/" + digest
}

// ManifestKey is where the manifest of a build is stored.
func ManifestKey(tenant, buildID string) string {
	return "tenants/" + tenant + "/deployments/" + buildID + "/manifest.json"
}

// SourceKey is where the uploaded ZIP of a build is stored.
func SourceKey(tenant, buildID string) string {
	return "tenants/" + tenant + "/builds/" + buildID + "/source.zip"
}

// LogKey is where the build log of a build is stored.
func LogKey(tenant, buildID string) string {
	return "tenants/" + tenant + "/builds/" + buildID + "/build.log"
}

// PointerKey is where the tenant's live pointer is stored.
func PointerKey(tenant string) string {
	return "pointers/" + tenant + "/current.json"
}

// EnvKey is where a build's environment variable values are stored: never
// in events, which are replayed, exported and shown in the audit log.
func EnvKey(tenant, buildID string) string {
	return "tenants/" + tenant + "/builds/" + buildID + "/env.json"
}
