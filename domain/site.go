package domain

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors of the site rules.
var (
	ErrBuildNotSucceeded = errors.New("build has not been published")
	ErrWrongTenant       = errors.New("build belongs to another tenant")
	ErrAlreadyLive       = errors.New("build is already live")
	ErrNeverDeployed     = errors.New("build was never deployed on this site")
	ErrSuperseded        = errors.New("a newer build is already live")
)

// Deployment is one version a site has served.
type Deployment struct {
	BuildID     string
	Version     string
	ManifestKey string
	RequestedAt time.Time
}

// Site is a tenant's deployment pointer aggregate: which build is live and
// which builds were live before (the candidates for a rollback).
type Site struct {
	tenant    string
	current   string
	deployed  map[string]Deployment
	streamVer int64
}

// NewSite returns the empty site of tenant.
func NewSite(tenant string) *Site {
	return &Site{tenant: tenant, deployed: map[string]Deployment{}}
}

// Current returns the live build id ("" when nothing is live).
func (s *Site) Current() string { return s.current }

// CurrentDeployment returns the live deployment.
func (s *Site) CurrentDeployment() (Deployment, bool) {
	d, ok := s.deployed[s.current]
	return d, ok
}

// StreamVersion returns the expected version of the next append.
func (s *Site) StreamVersion() int64 { return s.streamVer }

// Apply evolves the state by one event of its stream.
func (s *Site) Apply(e Event) {
	s.streamVer++
	switch e := e.(type) {
	case DeploymentActivated:
		s.current = e.BuildID
		s.deployed[e.BuildID] = Deployment{BuildID: e.BuildID, Version: e.Version,
			ManifestKey: e.ManifestKey, RequestedAt: versionTime(e.Version)}
	case DeploymentRolledBack:
		s.current = e.BuildID
	}
}

// versionTime turns "v<unix-ms>" back into a time; zero when malformed.
func versionTime(v string) time.Time {
	var ms int64
	if _, err := fmt.Sscanf(v, "v%d", &ms); err != nil {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// Activate decides making a published (or succeeded) build live. An older build never
// moves the pointer back past a newer one: activating it returns
// ErrSuperseded (rollback is the explicit way back).
func (s *Site) Activate(b *Build, by string, now time.Time) ([]Event, error) {
	if b.Tenant() != s.tenant {
		return nil, fmt.Errorf("activate %s: %w", b.ID(), ErrWrongTenant)
	}
	if !b.Published() {
		return nil, fmt.Errorf("activate %s (%s): %w", b.ID(), b.Status(), ErrBuildNotSucceeded)
	}
	if s.current == b.ID() {
		return nil, fmt.Errorf("activate %s: %w", b.ID(), ErrAlreadyLive)
	}
	if cur, ok := s.deployed[s.current]; ok && versionTime(b.Version()).Before(cur.RequestedAt) {
		return nil, fmt.Errorf("activate %s: %w (%s)", b.ID(), ErrSuperseded, cur.BuildID)
	}
	return []Event{DeploymentActivated{TenantID: s.tenant, BuildID: b.ID(), Version: b.Version(),
		ManifestKey: b.ManifestKey(), ActivatedBy: by, Previous: s.current, At: now}}, nil
}

// Rollback decides moving the pointer back to a build that was live before.
func (s *Site) Rollback(buildID, by string, now time.Time) ([]Event, error) {
	d, ok := s.deployed[buildID]
	if !ok {
		return nil, fmt.Errorf("rollback to %s: %w", buildID, ErrNeverDeployed)
	}
	if s.current == buildID {
		return nil, fmt.Errorf("rollback to %s: %w", buildID, ErrAlreadyLive)
	}
	return []Event{DeploymentRolledBack{TenantID: s.tenant, BuildID: buildID, Version: d.Version,
		ManifestKey: d.ManifestKey, RolledBackBy: by, Previous: s.current, At: now}}, nil
}
