package app

import (
	"context"
	"errors"
	"fmt"

	"github.com/zipship/zipship/infra/blob"
	"github.com/zipship/zipship/infra/cdn"
)

// SyncPointer makes the CDN serve what the site stream says is live: it
// writes the tenant's pointer object from the Site aggregate and asks the
// CDN to refresh. It is idempotent, so it is called after every pointer
// move (activation, rollback) and again at start-up to repair a crash that
// fell between the event and the pointer write. A tenant with nothing live
// is left alone.
func (a *App) SyncPointer(ctx context.Context, tenant string, refresher cdn.Refresher) (*blob.Pointer, error) {
	s, err := a.Site(ctx, tenant)
	if err != nil {
		return nil, err
	}
	d, ok := s.CurrentDeployment()
	if !ok {
		return nil, nil
	}
	cur, err := blob.ReadPointer(ctx, a.blobs, tenant)
	if err != nil && !errors.Is(err, blob.ErrNotFound) {
		return nil, fmt.Errorf("read pointer %s: %w", tenant, err)
	}
	if cur == nil || cur.BuildID != d.BuildID {
		p := blob.Pointer{Tenant: tenant, BuildID: d.BuildID, Version: d.Version, ManifestKey: d.ManifestKey, ActivatedAt: a.now()}
		if err := blob.WritePointer(ctx, a.blobs, p); err != nil {
			return nil, fmt.Errorf("write pointer %s: %w", tenant, err)
		}
		cur = &p
	}
	if refresher != nil {
		if err := refresher.Refresh(ctx, tenant); err != nil {
			return cur, fmt.Errorf("refresh cdn for %s: %w", tenant, err)
		}
	}
	return cur, nil
}
