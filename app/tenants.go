package app

import (
	"context"

	"github.com/zipship/zipship/domain"
	"github.com/zipship/zipship/infra/eventstore"
)

// Tenant loads a tenant's membership state; a tenant that was never created
// loads as an empty aggregate (Exists false).
func (a *App) Tenant(ctx context.Context, id string) (*domain.Tenant, error) {
	t := &domain.Tenant{}
	if _, err := a.load(ctx, domain.TenantStream(id), t); err != nil {
		return nil, err
	}
	return t, nil
}

// Authorize loads tenant and checks actor's role (see domain.Tenant.Authorize).
func (a *App) Authorize(ctx context.Context, tenant, actor string, roles ...domain.Role) (*domain.Tenant, error) {
	if err := domain.ValidateTenantID(tenant); err != nil {
		return nil, domain.ErrTenantNotFound
	}
	t, err := a.Tenant(ctx, tenant)
	if err != nil {
		return nil, err
	}
	if err := t.Authorize(actor, roles...); err != nil {
		return nil, err
	}
	return t, nil
}

// CreateTenant creates tenant id with actor as its owner.
func (a *App) CreateTenant(ctx context.Context, m Meta, actor, id, name string) (eventstore.AppendResult, error) {
	t := &domain.Tenant{}
	v, err := a.load(ctx, domain.TenantStream(id), t)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	evs, err := t.Create(id, name, actor, a.now())
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	res, err := a.append(ctx, domain.TenantStream(id), id, v, m, evs)
	if eventstore.IsConflict(err) {
		return res, domain.ErrTenantExists
	}
	return res, err
}

// tenantCommand loads the tenant, decides with fn and appends, retrying on
// concurrent changes.
func (a *App) tenantCommand(ctx context.Context, m Meta, tenant string, fn func(*domain.Tenant) ([]domain.Event, error)) (eventstore.AppendResult, error) {
	return retryOnConflict(ctx, func() (eventstore.AppendResult, error) {
		t := &domain.Tenant{}
		v, err := a.load(ctx, domain.TenantStream(tenant), t)
		if err != nil {
			return eventstore.AppendResult{}, err
		}
		evs, err := fn(t)
		if err != nil {
			return eventstore.AppendResult{}, err
		}
		return a.append(ctx, domain.TenantStream(tenant), tenant, v, m, evs)
	})
}

// AddMember grants user a role in tenant, decided by actor's role.
func (a *App) AddMember(ctx context.Context, m Meta, actor, tenant, user string, role domain.Role) (eventstore.AppendResult, error) {
	return a.tenantCommand(ctx, m, tenant, func(t *domain.Tenant) ([]domain.Event, error) {
		return t.AddMember(actor, user, role, a.now())
	})
}

// RemoveMember removes user from tenant, decided by actor's role.
func (a *App) RemoveMember(ctx context.Context, m Meta, actor, tenant, user string) (eventstore.AppendResult, error) {
	return a.tenantCommand(ctx, m, tenant, func(t *domain.Tenant) ([]domain.Event, error) {
		return t.RemoveMember(actor, user, a.now())
	})
}
