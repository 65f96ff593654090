package domain

import (
	"errors"
	"fmt"
	"regexp"
	"time"
)

// Sentinel errors of the tenant rules. The gateway maps them to HTTP
// statuses; wrap them with context, compare with errors.Is.
var (
	ErrInvalidTenantID = errors.New("invalid tenant id")
	ErrInvalidName     = errors.New("invalid name")
	ErrInvalidUserID   = errors.New("invalid user id")
	ErrInvalidRole     = errors.New("invalid role")
	ErrTenantExists    = errors.New("tenant already exists")
	ErrTenantNotFound  = errors.New("tenant not found")
	ErrNotMember       = errors.New("not a member")
	ErrForbidden       = errors.New("role not allowed")
	ErrSelfRoleChange  = errors.New("members cannot change their own role")
	ErrLastOwner       = errors.New("a tenant needs at least one owner")
	ErrAlreadyMember   = errors.New("already a member with that role")
)

// Role is a member's role in a tenant. Owners manage everything including
// other owners; admins manage members and deployments; members deploy.
type Role string

// The three roles.
const (
	RoleOwner  Role = "owner"
	RoleAdmin  Role = "admin"
	RoleMember Role = "member"
)

// Valid reports whether r is one of the three roles.
func (r Role) Valid() bool { return r == RoleOwner || r == RoleAdmin || r == RoleMember }

var tenantIDPattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// ValidateTenantID checks that id can be a DNS label of 3 to 63 characters
// of [a-z0-9-], not starting or ending with '-': it becomes {id}.example.com.
func ValidateTenantID(id string) error {
	if len(id) < 3 || len(id) > 63 || !tenantIDPattern.MatchString(id) {
		return fmt.Errorf("%w %q: use 3-63 characters of a-z, 0-9 and '-', not starting or ending with '-'", ErrInvalidTenantID, id)
	}
	return nil
}

// ValidateUserID checks a user id (a JWT subject): 1-200 printable
// characters without spaces.
func ValidateUserID(id string) error {
	if id == "" || len(id) > 200 {
		return fmt.Errorf("%w: must be 1-200 characters", ErrInvalidUserID)
	}
	for _, c := range id {
		if c <= ' ' || c == 0x7f {
			return fmt.Errorf("%w: must not contain spaces or control characters", ErrInvalidUserID)
		}
	}
	return nil
}

// Tenant is the membership aggregate, rebuilt from its stream.
type Tenant struct {
	id      string
	name    string
	members map[string]Role
	created time.Time
	version int64
}

// ID returns the tenant id ("" before TenantCreated).
func (t *Tenant) ID() string { return t.id }

// Name returns the display name.
func (t *Tenant) Name() string { return t.name }

// Exists reports whether the tenant was created.
func (t *Tenant) Exists() bool { return t.id != "" }

// CreatedAt returns when the tenant was created.
func (t *Tenant) CreatedAt() time.Time { return t.created }

// Version returns the stream version the state was rebuilt to.
func (t *Tenant) Version() int64 { return t.version }

// RoleOf returns a user's role and whether they are a member.
func (t *Tenant) RoleOf(user string) (Role, bool) {
	r, ok := t.members[user]
	return r, ok
}

// Members returns a copy of the member map.
func (t *Tenant) Members() map[string]Role {
	m := make(map[string]Role, len(t.members))
	for k, v := range t.members {
		m[k] = v
	}
	return m
}

func (t *Tenant) owners() int {
	n := 0
	for _, r := range t.members {
		if r == RoleOwner {
			n++
		}
	}
	return n
}

// Apply evolves the state by one event of its stream.
func (t *Tenant) Apply(e Event) {
	t.version++
	switch e := e.(type) {
	case TenantCreated:
		t.id, t.name, t.created = e.TenantID, e.Name, e.At
		t.members = map[string]Role{e.Owner: RoleOwner}
	case MemberAdded:
		t.members[e.UserID] = e.Role
	case MemberRoleChanged:
		t.members[e.UserID] = e.Role
	case MemberRemoved:
		delete(t.members, e.UserID)
	}
}

// CreateTenant decides the creation of a tenant by owner.
func (t *Tenant) Create(id, name, owner string, now time.Time) ([]Event, error) {
	if t.Exists() {
		return nil, fmt.Errorf("create %s: %w", id, ErrTenantExists)
	}
	if err := ValidateTenantID(id); err != nil {
		return nil, err
	}
	if name == "" {
		name = id
	}
	if len(name) > 200 {
		return nil, fmt.Errorf("%w: at most 200 characters", ErrInvalidName)
	}
	if err := ValidateUserID(owner); err != nil {
		return nil, err
	}
	return []Event{TenantCreated{TenantID: id, Name: name, Owner: owner, At: now}}, nil
}

// Authorize checks that actor is a member whose role is one of allowed.
// A non-member gets ErrNotMember (the gateway answers 404 so that tenants'
// existence does not leak); a member with too small a role ErrForbidden.
func (t *Tenant) Authorize(actor string, allowed ...Role) error {
	if !t.Exists() {
		return ErrTenantNotFound
	}
	r, ok := t.members[actor]
	if !ok {
		return ErrNotMember
	}
	for _, a := range allowed {
		if r == a {
			return nil
		}
	}
	return fmt.Errorf("%w: %s needs one of %v", ErrForbidden, r, allowed)
}

// AddMember decides granting user the role, by actor. Owners and admins
// manage members; only owners grant or take the owner role; nobody changes
// their own role. Adding an existing member with another role changes it.
func (t *Tenant) AddMember(actor, user string, role Role, now time.Time) ([]Event, error) {
	if err := t.Authorize(actor, RoleOwner, RoleAdmin); err != nil {
		return nil, err
	}
	if err := ValidateUserID(user); err != nil {
		return nil, err
	}
	if !role.Valid() {
		return nil, fmt.Errorf("%w %q: use owner, admin or member", ErrInvalidRole, role)
	}
	actorRole := t.members[actor]
	if actor == user {
		return nil, ErrSelfRoleChange
	}
	current, exists := t.members[user]
	if (role == RoleOwner || current == RoleOwner) && actorRole != RoleOwner {
		return nil, fmt.Errorf("%w: only owners grant or change the owner role", ErrForbidden)
	}
	if !exists {
		return []Event{MemberAdded{TenantID: t.id, UserID: user, Role: role, AddedBy: actor, At: now}}, nil
	}
	if current == role {
		return nil, ErrAlreadyMember
	}
	if current == RoleOwner && t.owners() == 1 {
		return nil, ErrLastOwner
	}
	return []Event{MemberRoleChanged{TenantID: t.id, UserID: user, Role: role, From: current, ChangedBy: actor, At: now}}, nil
}

// RemoveMember decides removing user, by actor. Owners and admins remove
// members; only owners remove owners; the last owner cannot be removed.
func (t *Tenant) RemoveMember(actor, user string, now time.Time) ([]Event, error) {
	if err := t.Authorize(actor, RoleOwner, RoleAdmin); err != nil {
		return nil, err
	}
	current, ok := t.members[user]
	if !ok {
		return nil, fmt.Errorf("remove %s: %w", user, ErrNotMember)
	}
	if current == RoleOwner {
		if t.members[actor] != RoleOwner {
			return nil, fmt.Errorf("%w: only owners remove owners", ErrForbidden)
		}
		if t.owners() == 1 {
			return nil, ErrLastOwner
		}
	}
	return []Event{MemberRemoved{TenantID: t.id, UserID: user, RemovedBy: actor, At: now}}, nil
}
