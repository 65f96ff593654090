package domain

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// givenTenant rebuilds a tenant from its events.
func givenTenant(events ...Event) *Tenant { return given(&Tenant{}, events...) }

// Tenant fixtures: acme is created by alice (owner); bob is an admin, carol
// a member. dave becomes a second owner in twoOwners.
var (
	acmeCreated = TenantCreated{TenantID: "acme", Name: "Acme", Owner: "alice", At: t0}
	bobAdmin    = MemberAdded{TenantID: "acme", UserID: "bob", Role: RoleAdmin, AddedBy: "alice", At: t0}
	carolMember = MemberAdded{TenantID: "acme", UserID: "carol", Role: RoleMember, AddedBy: "bob", At: t0}
	daveOwner   = MemberAdded{TenantID: "acme", UserID: "dave", Role: RoleOwner, AddedBy: "alice", At: t0}
)

func team() []Event      { return []Event{acmeCreated, bobAdmin, carolMember} }
func twoOwners() []Event { return append(team(), daveOwner) }

func TestValidateTenantID(t *testing.T) {
	tests := []struct {
		name string
		id   string
		ok   bool
	}{
		{"three chars", "abc", true},
		{"digits", "123", true},
		{"leading digit", "0ab", true},
		{"inner dash", "my-site", true},
		{"double dash", "a--b", true},
		{"63 chars", strings.Repeat("a", 63), true},
		{"empty", "", false},
		{"too short", "ab", false},
		{"one char", "a", false},
		{"64 chars", strings.Repeat("a", 64), false},
		{"uppercase", "Acme", false},
		{"all uppercase", "ACME", false},
		{"underscore", "ac_me", false},
		{"leading dash", "-acme", false},
		{"trailing dash", "acme-", false},
		{"only dashes", "---", false},
		{"dot", "ac.me", false},
		{"subdomain", "www.acme", false},
		{"space", "ac me", false},
		{"trailing newline", "acme\n", false},
		{"non-ascii", "acmé", false},
		{"slash", "ac/me", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateTenantID(tt.id)
			if tt.ok {
				if err != nil {
					t.Fatalf("ValidateTenantID(%q) = %v, want nil", tt.id, err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidTenantID) {
				t.Fatalf("ValidateTenantID(%q) = %v, want ErrInvalidTenantID", tt.id, err)
			}
		})
	}
}

func TestValidateUserID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"alice", true},
		{"auth0|5f7c8ec7c33c6c004bbafe82", true},
		{"user@example.com", true},
		{strings.Repeat("u", 200), true},
		{"", false},
		{strings.Repeat("u", 201), false},
		{"al ice", false},
		{"alice\n", false},
		{"tab\tbed", false},
		{"nul\x00", false},
		{"del\x7f", false},
	}
	for _, tt := range tests {
		err := ValidateUserID(tt.id)
		if tt.ok && err != nil {
			t.Errorf("ValidateUserID(%q) = %v, want nil", tt.id, err)
		}
		if !tt.ok && !errors.Is(err, ErrInvalidUserID) {
			t.Errorf("ValidateUserID(%q) = %v, want ErrInvalidUserID", tt.id, err)
		}
	}
}

func TestRoleValid(t *testing.T) {
	for _, r := range []Role{RoleOwner, RoleAdmin, RoleMember} {
		if !r.Valid() {
			t.Errorf("%q.Valid() = false", r)
		}
	}
	for _, r := range []Role{"", "root", "Owner", "viewer", " admin"} {
		if r.Valid() {
			t.Errorf("%q.Valid() = true", r)
		}
	}
}

func TestTenantCreate(t *testing.T) {
	tests := []struct {
		name    string
		given   []Event
		id      string
		tname   string
		owner   string
		want    []Event
		wantErr error
	}{
		{name: "valid", id: "acme", tname: "Acme Inc", owner: "alice",
			want: []Event{TenantCreated{TenantID: "acme", Name: "Acme Inc", Owner: "alice", At: t1}}},
		{name: "empty name defaults to id", id: "acme", tname: "", owner: "alice",
			want: []Event{TenantCreated{TenantID: "acme", Name: "acme", Owner: "alice", At: t1}}},
		{name: "name of 200 chars", id: "acme", tname: strings.Repeat("n", 200), owner: "alice",
			want: []Event{TenantCreated{TenantID: "acme", Name: strings.Repeat("n", 200), Owner: "alice", At: t1}}},
		{name: "63-char id", id: strings.Repeat("a", 63), tname: "x", owner: "alice",
			want: []Event{TenantCreated{TenantID: strings.Repeat("a", 63), Name: "x", Owner: "alice", At: t1}}},
		{name: "create twice", given: []Event{acmeCreated}, id: "acme", tname: "Acme", owner: "alice",
			wantErr: ErrTenantExists},
		{name: "create another id on an existing stream", given: []Event{acmeCreated}, id: "other", owner: "alice",
			wantErr: ErrTenantExists},
		{name: "id too short", id: "ab", owner: "alice", wantErr: ErrInvalidTenantID},
		{name: "id too long", id: strings.Repeat("a", 64), owner: "alice", wantErr: ErrInvalidTenantID},
		{name: "id uppercase", id: "Acme", owner: "alice", wantErr: ErrInvalidTenantID},
		{name: "id underscore", id: "ac_me", owner: "alice", wantErr: ErrInvalidTenantID},
		{name: "id leading dash", id: "-acme", owner: "alice", wantErr: ErrInvalidTenantID},
		{name: "id trailing dash", id: "acme-", owner: "alice", wantErr: ErrInvalidTenantID},
		{name: "id with dot", id: "ac.me", owner: "alice", wantErr: ErrInvalidTenantID},
		{name: "id empty", id: "", owner: "alice", wantErr: ErrInvalidTenantID},
		{name: "name too long", id: "acme", tname: strings.Repeat("n", 201), owner: "alice", wantErr: ErrInvalidName},
		{name: "owner empty", id: "acme", owner: "", wantErr: ErrInvalidUserID},
		{name: "owner with space", id: "acme", owner: "al ice", wantErr: ErrInvalidUserID},
		{name: "owner with control char", id: "acme", owner: "alice\x01", wantErr: ErrInvalidUserID},
		{name: "owner too long", id: "acme", owner: strings.Repeat("u", 201), wantErr: ErrInvalidUserID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := givenTenant(tt.given...).Create(tt.id, tt.tname, tt.owner, t1)
			checkDecision(t, got, err, tt.want, tt.wantErr)
		})
	}
}

func TestTenantApply(t *testing.T) {
	var tn Tenant
	if tn.Exists() || tn.ID() != "" || tn.Version() != 0 {
		t.Fatalf("fresh tenant: exists=%v id=%q version=%d", tn.Exists(), tn.ID(), tn.Version())
	}
	if _, ok := tn.RoleOf("alice"); ok {
		t.Fatal("fresh tenant has a member")
	}

	steps := []struct {
		event   Event
		members map[string]Role
	}{
		{acmeCreated, map[string]Role{"alice": RoleOwner}},
		{bobAdmin, map[string]Role{"alice": RoleOwner, "bob": RoleAdmin}},
		{carolMember, map[string]Role{"alice": RoleOwner, "bob": RoleAdmin, "carol": RoleMember}},
		{MemberRoleChanged{TenantID: "acme", UserID: "carol", Role: RoleAdmin, From: RoleMember, ChangedBy: "alice", At: t1},
			map[string]Role{"alice": RoleOwner, "bob": RoleAdmin, "carol": RoleAdmin}},
		{MemberRemoved{TenantID: "acme", UserID: "bob", RemovedBy: "alice", At: t1},
			map[string]Role{"alice": RoleOwner, "carol": RoleAdmin}},
	}
	for i, s := range steps {
		tn.Apply(s.event)
		if got := tn.Version(); got != int64(i+1) {
			t.Errorf("after %s: Version() = %d, want %d", s.event.EventType(), got, i+1)
		}
		if got := tn.Members(); !reflect.DeepEqual(got, s.members) {
			t.Errorf("after %s: Members() = %v, want %v", s.event.EventType(), got, s.members)
		}
		for user, role := range s.members {
			if r, ok := tn.RoleOf(user); !ok || r != role {
				t.Errorf("after %s: RoleOf(%s) = %q, %v, want %q", s.event.EventType(), user, r, ok, role)
			}
		}
	}
	if !tn.Exists() || tn.ID() != "acme" || tn.Name() != "Acme" || !tn.CreatedAt().Equal(t0) {
		t.Errorf("tenant = exists %v id %q name %q created %v", tn.Exists(), tn.ID(), tn.Name(), tn.CreatedAt())
	}
	if _, ok := tn.RoleOf("bob"); ok {
		t.Error("removed member still has a role")
	}

	// Members returns a copy: changing it does not change the aggregate.
	m := tn.Members()
	m["mallory"] = RoleOwner
	delete(m, "alice")
	if _, ok := tn.RoleOf("mallory"); ok {
		t.Error("Members() exposes the aggregate's map")
	}
	if r, _ := tn.RoleOf("alice"); r != RoleOwner {
		t.Error("deleting from Members() removed an owner")
	}
}

func TestTenantAuthorize(t *testing.T) {
	all := []Role{RoleOwner, RoleAdmin, RoleMember}
	managers := []Role{RoleOwner, RoleAdmin}
	tests := []struct {
		name    string
		given   []Event
		actor   string
		allowed []Role
		wantErr error
	}{
		{"owner, owner only", team(), "alice", []Role{RoleOwner}, nil},
		{"owner, managers", team(), "alice", managers, nil},
		{"owner, all", team(), "alice", all, nil},
		{"owner, admin only", team(), "alice", []Role{RoleAdmin}, ErrForbidden},
		{"owner, member only", team(), "alice", []Role{RoleMember}, ErrForbidden},
		{"owner, none", team(), "alice", nil, ErrForbidden},
		{"admin, owner only", team(), "bob", []Role{RoleOwner}, ErrForbidden},
		{"admin, managers", team(), "bob", managers, nil},
		{"admin, all", team(), "bob", all, nil},
		{"admin, admin only", team(), "bob", []Role{RoleAdmin}, nil},
		{"admin, member only", team(), "bob", []Role{RoleMember}, ErrForbidden},
		{"admin, none", team(), "bob", nil, ErrForbidden},
		{"member, owner only", team(), "carol", []Role{RoleOwner}, ErrForbidden},
		{"member, managers", team(), "carol", managers, ErrForbidden},
		{"member, all", team(), "carol", all, nil},
		{"member, member only", team(), "carol", []Role{RoleMember}, nil},
		{"member, none", team(), "carol", nil, ErrForbidden},
		{"non-member, all", team(), "mallory", all, ErrNotMember},
		{"non-member, none", team(), "mallory", nil, ErrNotMember},
		{"removed member", append(team(), MemberRemoved{TenantID: "acme", UserID: "carol", RemovedBy: "bob", At: t1}),
			"carol", all, ErrNotMember},
		{"unknown tenant", nil, "alice", all, ErrTenantNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := givenTenant(tt.given...).Authorize(tt.actor, tt.allowed...)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Authorize = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Authorize = %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestTenantAddMember(t *testing.T) {
	add := func(user string, role Role, by string) []Event {
		return []Event{MemberAdded{TenantID: "acme", UserID: user, Role: role, AddedBy: by, At: t1}}
	}
	change := func(user string, from, to Role, by string) []Event {
		return []Event{MemberRoleChanged{TenantID: "acme", UserID: user, Role: to, From: from, ChangedBy: by, At: t1}}
	}
	tests := []struct {
		name    string
		given   []Event
		actor   string
		user    string
		role    Role
		want    []Event
		wantErr error
	}{
		// Adding new members.
		{name: "owner adds member", given: team(), actor: "alice", user: "erin", role: RoleMember,
			want: add("erin", RoleMember, "alice")},
		{name: "owner adds admin", given: team(), actor: "alice", user: "erin", role: RoleAdmin,
			want: add("erin", RoleAdmin, "alice")},
		{name: "owner adds owner", given: team(), actor: "alice", user: "erin", role: RoleOwner,
			want: add("erin", RoleOwner, "alice")},
		{name: "admin adds member", given: team(), actor: "bob", user: "erin", role: RoleMember,
			want: add("erin", RoleMember, "bob")},
		{name: "admin adds admin", given: team(), actor: "bob", user: "erin", role: RoleAdmin,
			want: add("erin", RoleAdmin, "bob")},
		{name: "admin grants owner to a new user", given: team(), actor: "bob", user: "erin", role: RoleOwner,
			wantErr: ErrForbidden},
		{name: "member adds member", given: team(), actor: "carol", user: "erin", role: RoleMember,
			wantErr: ErrForbidden},
		{name: "non-member adds member", given: team(), actor: "mallory", user: "erin", role: RoleMember,
			wantErr: ErrNotMember},
		{name: "removed admin adds member",
			given: append(team(), MemberRemoved{TenantID: "acme", UserID: "bob", RemovedBy: "alice", At: t0}),
			actor: "bob", user: "erin", role: RoleMember, wantErr: ErrNotMember},
		{name: "unknown tenant", actor: "alice", user: "erin", role: RoleMember, wantErr: ErrTenantNotFound},
		{name: "invalid user id", given: team(), actor: "alice", user: "e rin", role: RoleMember,
			wantErr: ErrInvalidUserID},
		{name: "empty user id", given: team(), actor: "alice", user: "", role: RoleMember,
			wantErr: ErrInvalidUserID},
		{name: "invalid role", given: team(), actor: "alice", user: "erin", role: "root", wantErr: ErrInvalidRole},
		{name: "empty role", given: team(), actor: "alice", user: "erin", role: "", wantErr: ErrInvalidRole},
		{name: "capitalised role", given: team(), actor: "alice", user: "erin", role: "Admin", wantErr: ErrInvalidRole},
		{name: "invalid role on an existing member", given: team(), actor: "alice", user: "carol", role: "superuser",
			wantErr: ErrInvalidRole},

		// Nobody changes their own role.
		{name: "member promotes self to admin", given: team(), actor: "carol", user: "carol", role: RoleAdmin,
			wantErr: ErrForbidden},
		{name: "member promotes self to owner", given: team(), actor: "carol", user: "carol", role: RoleOwner,
			wantErr: ErrForbidden},
		{name: "admin promotes self to owner", given: team(), actor: "bob", user: "bob", role: RoleOwner,
			wantErr: ErrSelfRoleChange},
		{name: "admin demotes self to member", given: team(), actor: "bob", user: "bob", role: RoleMember,
			wantErr: ErrSelfRoleChange},
		{name: "owner demotes self", given: twoOwners(), actor: "alice", user: "alice", role: RoleAdmin,
			wantErr: ErrSelfRoleChange},
		{name: "sole owner demotes self", given: team(), actor: "alice", user: "alice", role: RoleMember,
			wantErr: ErrSelfRoleChange},
		{name: "owner re-grants own role", given: team(), actor: "alice", user: "alice", role: RoleOwner,
			wantErr: ErrSelfRoleChange},

		// Role changes of existing members.
		{name: "owner promotes member to admin", given: team(), actor: "alice", user: "carol", role: RoleAdmin,
			want: change("carol", RoleMember, RoleAdmin, "alice")},
		{name: "owner promotes admin to owner", given: team(), actor: "alice", user: "bob", role: RoleOwner,
			want: change("bob", RoleAdmin, RoleOwner, "alice")},
		{name: "owner demotes admin to member", given: team(), actor: "alice", user: "bob", role: RoleMember,
			want: change("bob", RoleAdmin, RoleMember, "alice")},
		{name: "owner demotes another owner", given: twoOwners(), actor: "alice", user: "dave", role: RoleAdmin,
			want: change("dave", RoleOwner, RoleAdmin, "alice")},
		{name: "admin promotes member to admin", given: team(), actor: "bob", user: "carol", role: RoleAdmin,
			want: change("carol", RoleMember, RoleAdmin, "bob")},
		{name: "admin grants owner to a member", given: team(), actor: "bob", user: "carol", role: RoleOwner,
			wantErr: ErrForbidden},
		{name: "admin demotes an owner", given: team(), actor: "bob", user: "alice", role: RoleAdmin,
			wantErr: ErrForbidden},
		{name: "admin demotes the second owner", given: twoOwners(), actor: "bob", user: "dave", role: RoleMember,
			wantErr: ErrForbidden},
		{name: "member changes another member", given: append(team(), MemberAdded{TenantID: "acme", UserID: "erin",
			Role: RoleMember, AddedBy: "alice", At: t0}), actor: "carol", user: "erin", role: RoleAdmin,
			wantErr: ErrForbidden},
		{name: "same role again (member)", given: team(), actor: "alice", user: "carol", role: RoleMember,
			wantErr: ErrAlreadyMember},
		{name: "same role again (admin, by admin)",
			given: append(team(), MemberAdded{TenantID: "acme", UserID: "erin", Role: RoleAdmin, AddedBy: "alice", At: t0}),
			actor: "bob", user: "erin", role: RoleAdmin, wantErr: ErrAlreadyMember},
		{name: "same role again (owner)", given: twoOwners(), actor: "alice", user: "dave", role: RoleOwner,
			wantErr: ErrAlreadyMember},
		{name: "re-adding a removed member",
			given: append(team(), MemberRemoved{TenantID: "acme", UserID: "carol", RemovedBy: "alice", At: t0}),
			actor: "alice", user: "carol", role: RoleMember, want: add("carol", RoleMember, "alice")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := givenTenant(tt.given...).AddMember(tt.actor, tt.user, tt.role, t1)
			checkDecision(t, got, err, tt.want, tt.wantErr)
		})
	}
}

func TestTenantRemoveMember(t *testing.T) {
	removed := func(user, by string) []Event {
		return []Event{MemberRemoved{TenantID: "acme", UserID: user, RemovedBy: by, At: t1}}
	}
	tests := []struct {
		name    string
		given   []Event
		actor   string
		user    string
		want    []Event
		wantErr error
	}{
		{name: "owner removes member", given: team(), actor: "alice", user: "carol", want: removed("carol", "alice")},
		{name: "owner removes admin", given: team(), actor: "alice", user: "bob", want: removed("bob", "alice")},
		{name: "admin removes member", given: team(), actor: "bob", user: "carol", want: removed("carol", "bob")},
		{name: "admin removes another admin",
			given: append(team(), MemberAdded{TenantID: "acme", UserID: "erin", Role: RoleAdmin, AddedBy: "alice", At: t0}),
			actor: "bob", user: "erin", want: removed("erin", "bob")},
		{name: "admin leaves", given: team(), actor: "bob", user: "bob", want: removed("bob", "bob")},
		{name: "owner removes another owner when two exist", given: twoOwners(), actor: "alice", user: "dave",
			want: removed("dave", "alice")},
		{name: "owner leaves when two exist", given: twoOwners(), actor: "dave", user: "dave",
			want: removed("dave", "dave")},
		{name: "sole owner removes self", given: team(), actor: "alice", user: "alice", wantErr: ErrLastOwner},
		{name: "last owner left after the other was removed",
			given: append(twoOwners(), MemberRemoved{TenantID: "acme", UserID: "dave", RemovedBy: "alice", At: t0}),
			actor: "alice", user: "alice", wantErr: ErrLastOwner},
		{name: "last owner left after the other was demoted",
			given: append(twoOwners(), MemberRoleChanged{TenantID: "acme", UserID: "alice", Role: RoleAdmin,
				From: RoleOwner, ChangedBy: "dave", At: t0}),
			actor: "dave", user: "dave", wantErr: ErrLastOwner},
		{name: "admin removes owner", given: team(), actor: "bob", user: "alice", wantErr: ErrForbidden},
		{name: "admin removes one of two owners", given: twoOwners(), actor: "bob", user: "dave", wantErr: ErrForbidden},
		{name: "member removes member",
			given: append(team(), MemberAdded{TenantID: "acme", UserID: "erin", Role: RoleMember, AddedBy: "alice", At: t0}),
			actor: "carol", user: "erin", wantErr: ErrForbidden},
		{name: "member leaves", given: team(), actor: "carol", user: "carol", wantErr: ErrForbidden},
		{name: "non-member actor", given: team(), actor: "mallory", user: "carol", wantErr: ErrNotMember},
		{name: "remove a non-member", given: team(), actor: "alice", user: "mallory", wantErr: ErrNotMember},
		{name: "remove an already removed member",
			given: append(team(), MemberRemoved{TenantID: "acme", UserID: "carol", RemovedBy: "alice", At: t0}),
			actor: "alice", user: "carol", wantErr: ErrNotMember},
		{name: "unknown tenant", actor: "alice", user: "carol", wantErr: ErrTenantNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := givenTenant(tt.given...).RemoveMember(tt.actor, tt.user, t1)
			checkDecision(t, got, err, tt.want, tt.wantErr)
		})
	}
}

// Driving the aggregate through decide then Apply keeps at least one owner
// whatever the sequence.
func TestTenantDecideApplyKeepsAnOwner(t *testing.T) {
	tn := &Tenant{}
	mustApply := func(evs []Event, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			tn.Apply(e)
		}
	}
	mustApply(tn.Create("acme", "", "alice", t0))
	mustApply(tn.AddMember("alice", "dave", RoleOwner, t0))
	mustApply(tn.AddMember("dave", "alice", RoleMember, t0)) // alice demoted by dave
	if _, err := tn.RemoveMember("dave", "dave", t1); !errors.Is(err, ErrLastOwner) {
		t.Fatalf("sole owner leaving: %v, want ErrLastOwner", err)
	}
	if _, err := tn.AddMember("alice", "alice", RoleOwner, t1); !errors.Is(err, ErrForbidden) {
		t.Fatalf("demoted owner re-promoting self: %v, want ErrForbidden", err)
	}
	want := map[string]Role{"alice": RoleMember, "dave": RoleOwner}
	if got := tn.Members(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Members() = %v, want %v", got, want)
	}
	if tn.Name() != "acme" || tn.Version() != 3 {
		t.Fatalf("name %q version %d, want acme 3", tn.Name(), tn.Version())
	}
}
