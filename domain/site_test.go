package domain

import (
	"errors"
	"testing"
	"time"
)

// givenSite rebuilds acme's site from its events.
func givenSite(events ...Event) *Site { return given(NewSite("acme"), events...) }

// Site fixtures: three successive versions, one millisecond-precise
// v<unix-ms> each, a minute apart.
var (
	v1 = "v1735787045000"
	v2 = "v1735787105000"
	v3 = "v1735787165000"
)

// buildIn returns a build of tenant with the given history shape.
func buildIn(tenant, id, version string, tail ...Event) *Build {
	return givenBuild(append([]Event{BuildRequested{BuildID: id, TenantID: tenant, Version: version,
		RequestedBy: "alice", Source: Source{Key: "src/" + id}, At: t0}}, tail...)...)
}

func succeededBuild(tenant, id, version string) *Build {
	return buildIn(tenant, id, version,
		BuildStarted{BuildID: id, Attempt: 1, Runner: "r", At: t0},
		BuildSucceeded{BuildID: id, Attempt: 1, ManifestKey: "manifest/" + id, At: t0})
}

func activated(id, version, previous string) DeploymentActivated {
	return DeploymentActivated{TenantID: "acme", BuildID: id, Version: version, ManifestKey: "manifest/" + id,
		ActivatedBy: "alice", Previous: previous, At: t0}
}

func rolledBack(id, version, previous string) DeploymentRolledBack {
	return DeploymentRolledBack{TenantID: "acme", BuildID: id, Version: version, ManifestKey: "manifest/" + id,
		RolledBackBy: "bob", Previous: previous, At: t0}
}

// History: b1 then b2 activated, b2 live.
func twoDeployed() []Event { return []Event{activated("b1", v1, ""), activated("b2", v2, "b1")} }

func TestSiteActivate(t *testing.T) {
	want := func(id, version, previous string) []Event {
		return []Event{DeploymentActivated{TenantID: "acme", BuildID: id, Version: version,
			ManifestKey: "manifest/" + id, ActivatedBy: "carol", Previous: previous, At: t1}}
	}
	tests := []struct {
		name    string
		given   []Event
		build   *Build
		want    []Event
		wantErr error
	}{
		{name: "first activation has no previous", build: succeededBuild("acme", "b1", v1),
			want: want("b1", v1, "")},
		{name: "newer build names the previous one", given: []Event{activated("b1", v1, "")},
			build: succeededBuild("acme", "b2", v2), want: want("b2", v2, "b1")},
		{name: "build of the same millisecond", given: []Event{activated("b1", v1, "")},
			build: succeededBuild("acme", "b1bis", v1), want: want("b1bis", v1, "b1")},
		{name: "failed build", build: buildIn("acme", "b1", v1,
			BuildStarted{BuildID: "b1", Attempt: 1, At: t0}, BuildFailed{BuildID: "b1", Attempt: 1, At: t0}),
			wantErr: ErrBuildNotSucceeded},
		{name: "pending build", build: buildIn("acme", "b1", v1), wantErr: ErrBuildNotSucceeded},
		{name: "building build", build: buildIn("acme", "b1", v1, BuildStarted{BuildID: "b1", Attempt: 1, At: t0}),
			wantErr: ErrBuildNotSucceeded},
		{name: "build retrying", build: buildIn("acme", "b1", v1, BuildStarted{BuildID: "b1", Attempt: 1, At: t0},
			BuildAttemptFailed{BuildID: "b1", Attempt: 1, At: t0}), wantErr: ErrBuildNotSucceeded},
		{name: "published build still building (activate step)", given: []Event{activated("b1", v1, "")},
			build: buildIn("acme", "b2", v2, BuildStarted{BuildID: "b2", Attempt: 1, At: t0},
				BuildPublished{BuildID: "b2", Attempt: 1, ManifestKey: "manifest/b2", At: t0},
				BuildStepStarted{BuildID: "b2", Attempt: 1, Step: StepActivate, At: t0}),
			want: want("b2", v2, "b1")},
		{name: "published build retrying after a failed attempt",
			build: buildIn("acme", "b1", v1, BuildStarted{BuildID: "b1", Attempt: 1, At: t0},
				BuildPublished{BuildID: "b1", Attempt: 1, ManifestKey: "manifest/b1", At: t0},
				BuildAttemptFailed{BuildID: "b1", Attempt: 1, At: t0}),
			want: want("b1", v1, "")},
		{name: "published build that then failed",
			build: buildIn("acme", "b1", v1, BuildStarted{BuildID: "b1", Attempt: 1, At: t0},
				BuildPublished{BuildID: "b1", Attempt: 1, ManifestKey: "manifest/b1", At: t0},
				BuildFailed{BuildID: "b1", Attempt: 1, At: t0}),
			wantErr: ErrBuildNotSucceeded},
		{name: "another tenant's build", build: succeededBuild("globex", "b9", v3), wantErr: ErrWrongTenant},
		{name: "another tenant's failed build", build: buildIn("globex", "b9", v3), wantErr: ErrWrongTenant},
		{name: "unknown build", build: &Build{}, wantErr: ErrWrongTenant},
		{name: "the live build again", given: twoDeployed(), build: succeededBuild("acme", "b2", v2),
			wantErr: ErrAlreadyLive},
		{name: "an older build after a newer one", given: twoDeployed(), build: succeededBuild("acme", "b0", "v1735787000000"),
			wantErr: ErrSuperseded},
		{name: "the previously live build", given: twoDeployed(), build: succeededBuild("acme", "b1", v1),
			wantErr: ErrSuperseded},
		{name: "malformed version after a live one", given: twoDeployed(), build: succeededBuild("acme", "bx", "latest"),
			wantErr: ErrSuperseded},
		{name: "newer build after two", given: twoDeployed(), build: succeededBuild("acme", "b3", v3),
			want: want("b3", v3, "b2")},
		{name: "newer build after a rollback", given: append(twoDeployed(), rolledBack("b1", v1, "b2")),
			build: succeededBuild("acme", "b3", v3), want: want("b3", v3, "b1")},
		{name: "re-activating the build rolled back from", given: append(twoDeployed(), rolledBack("b1", v1, "b2")),
			build: succeededBuild("acme", "b2", v2), want: want("b2", v2, "b1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := givenSite(tt.given...).Activate(tt.build, "carol", t1)
			checkDecision(t, got, err, tt.want, tt.wantErr)
		})
	}
}

func TestSiteRollback(t *testing.T) {
	want := func(id, version, previous string) []Event {
		return []Event{DeploymentRolledBack{TenantID: "acme", BuildID: id, Version: version,
			ManifestKey: "manifest/" + id, RolledBackBy: "carol", Previous: previous, At: t1}}
	}
	tests := []struct {
		name    string
		given   []Event
		buildID string
		want    []Event
		wantErr error
	}{
		{name: "to the previously live build", given: twoDeployed(), buildID: "b1", want: want("b1", v1, "b2")},
		{name: "two versions back", given: append(twoDeployed(), activated("b3", v3, "b2")), buildID: "b1",
			want: want("b1", v1, "b3")},
		{name: "forward again after a rollback", given: append(twoDeployed(), rolledBack("b1", v1, "b2")),
			buildID: "b2", want: want("b2", v2, "b1")},
		{name: "to the current build", given: twoDeployed(), buildID: "b2", wantErr: ErrAlreadyLive},
		{name: "to the current build after a rollback", given: append(twoDeployed(), rolledBack("b1", v1, "b2")),
			buildID: "b1", wantErr: ErrAlreadyLive},
		{name: "to the only deployed build", given: []Event{activated("b1", v1, "")}, buildID: "b1",
			wantErr: ErrAlreadyLive},
		{name: "to a never-deployed build", given: twoDeployed(), buildID: "b7", wantErr: ErrNeverDeployed},
		{name: "on an empty site", buildID: "b1", wantErr: ErrNeverDeployed},
		{name: "to the empty id", given: twoDeployed(), buildID: "", wantErr: ErrNeverDeployed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := givenSite(tt.given...).Rollback(tt.buildID, "carol", t1)
			checkDecision(t, got, err, tt.want, tt.wantErr)
		})
	}
}

func TestSiteApply(t *testing.T) {
	s := NewSite("acme")
	if s.Current() != "" || s.StreamVersion() != 0 {
		t.Fatalf("new site: current %q version %d", s.Current(), s.StreamVersion())
	}
	if _, ok := s.CurrentDeployment(); ok {
		t.Fatal("new site has a current deployment")
	}
	steps := []struct {
		event   Event
		current string
		version string
	}{
		{activated("b1", v1, ""), "b1", v1},
		{activated("b2", v2, "b1"), "b2", v2},
		{rolledBack("b1", v1, "b2"), "b1", v1},
		{activated("b3", v3, "b1"), "b3", v3},
		{rolledBack("b2", v2, "b3"), "b2", v2},
	}
	for i, st := range steps {
		s.Apply(st.event)
		if s.Current() != st.current {
			t.Fatalf("after #%d %s: Current() = %q, want %q", i+1, st.event.EventType(), s.Current(), st.current)
		}
		d, ok := s.CurrentDeployment()
		wantD := Deployment{BuildID: st.current, Version: st.version, ManifestKey: "manifest/" + st.current,
			RequestedAt: versionTime(st.version)}
		if !ok || d != wantD {
			t.Fatalf("after #%d: CurrentDeployment() = %+v, %v, want %+v", i+1, d, ok, wantD)
		}
		if s.StreamVersion() != int64(i+1) {
			t.Fatalf("after #%d: StreamVersion() = %d, want %d", i+1, s.StreamVersion(), i+1)
		}
	}
	if d, _ := s.CurrentDeployment(); !d.RequestedAt.Equal(time.UnixMilli(1735787105000)) {
		t.Errorf("RequestedAt = %v, want the time of %s", d.RequestedAt, v2)
	}
}

func TestVersionTime(t *testing.T) {
	tests := []struct {
		v    string
		want time.Time
	}{
		{"v1735787045000", time.UnixMilli(1735787045000)},
		{"v0", time.UnixMilli(0)},
		{"", time.Time{}},
		{"1735787045000", time.Time{}},
		{"latest", time.Time{}},
		{"v", time.Time{}},
	}
	for _, tt := range tests {
		if got := versionTime(tt.v); !got.Equal(tt.want) {
			t.Errorf("versionTime(%q) = %v, want %v", tt.v, got, tt.want)
		}
	}
	if !versionTime(v1).Equal(t0) {
		t.Errorf("fixture v1 %s is not t0", v1)
	}
}

// The whole deploy flow through decide then Apply: activate, activate,
// roll back, activate again, refuse an older build.
func TestSiteDecideApplyFlow(t *testing.T) {
	s := NewSite("acme")
	step := func(evs []Event, err error) Event {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != 1 {
			t.Fatalf("got %d events, want 1", len(evs))
		}
		s.Apply(evs[0])
		return evs[0]
	}
	b1, b2, b3 := succeededBuild("acme", "b1", v1), succeededBuild("acme", "b2", v2), succeededBuild("acme", "b3", v3)

	if e := step(s.Activate(b1, "alice", t0)).(DeploymentActivated); e.Previous != "" || e.ManifestKey != "manifest/b1" {
		t.Fatalf("first activation = %+v", e)
	}
	if e := step(s.Activate(b2, "alice", t0)).(DeploymentActivated); e.Previous != "b1" {
		t.Fatalf("second activation = %+v", e)
	}
	if e := step(s.Rollback("b1", "bob", t0)).(DeploymentRolledBack); e.Previous != "b2" || e.Version != v1 {
		t.Fatalf("rollback = %+v", e)
	}
	if s.Current() != "b1" {
		t.Fatalf("after rollback Current() = %q, want b1", s.Current())
	}
	if _, err := s.Rollback("b1", "bob", t0); !errors.Is(err, ErrAlreadyLive) {
		t.Fatalf("second rollback to b1: %v, want ErrAlreadyLive", err)
	}
	if e := step(s.Activate(b3, "alice", t0)).(DeploymentActivated); e.Previous != "b1" {
		t.Fatalf("activation after rollback = %+v", e)
	}
	if s.Current() != "b3" {
		t.Fatalf("Current() = %q, want b3", s.Current())
	}
	if _, err := s.Activate(b2, "alice", t0); !errors.Is(err, ErrSuperseded) {
		t.Fatalf("activating older b2 after b3: %v, want ErrSuperseded", err)
	}
	if e := step(s.Rollback("b2", "bob", t0)).(DeploymentRolledBack); e.Previous != "b3" {
		t.Fatalf("rollback to b2 = %+v", e)
	}
	if s.StreamVersion() != 5 {
		t.Fatalf("StreamVersion() = %d, want 5", s.StreamVersion())
	}
}
