// Package cdn holds the contract between the publishing pipeline and the
// content delivery layer in front of tenants' sites: the built-in edge
// server (edge/) or AWS CloudFront (cloudfront/).
package cdn

import "context"

// Refresher tells the CDN that a tenant's live pointer moved, so that the
// next requests see the new version. Implementations must be idempotent:
// the pipeline may call Refresh again for the same move after a crash.
type Refresher interface {
	Refresh(ctx context.Context, tenant string) error
}
