package gateway_test

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/zipship/zipship/archive"
	"github.com/zipship/zipship/auth"
	"github.com/zipship/zipship/buildlog"
	"github.com/zipship/zipship/domain"
	"github.com/zipship/zipship/gateway"
	"github.com/zipship/zipship/infra/blob"
	"github.com/zipship/zipship/infra/eventstore"
)

// --- 1. authentication -------------------------------------------------

func TestAuthRejectsBadTokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createTenant("alice", "acme")
	now := time.Now()

	sign := func(method jwt.SigningMethod, key any, claims jwt.Claims) string {
		t.Helper()
		s, err := jwt.NewWithClaims(method, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	valid := e.token("alice")
	expired, err := auth.Sign(testSecret, "alice", time.Minute, now.Add(-2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	wrongSecret, err := auth.Sign([]byte("a-completely-different-secret-0123456789"), "alice", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.RegisteredClaims{Subject: "alice", Issuer: auth.Issuer, IssuedAt: jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))}
	algNone := sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims)
	hs512 := sign(jwt.SigningMethodHS512, testSecret, claims)
	noExpiry := sign(jwt.SigningMethodHS256, testSecret, jwt.RegisteredClaims{Subject: "alice", Issuer: auth.Issuer})
	noSubject := sign(jwt.SigningMethodHS256, testSecret, jwt.RegisteredClaims{Issuer: auth.Issuer, ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))})
	// The valid token with its signature swapped for another's.
	parts := strings.Split(valid, ".")
	otherSig := strings.Split(wrongSecret, ".")[2]
	tampered := parts[0] + "." + parts[1] + "." + otherSig

	cases := []struct{ name, header string }{
		{"missing header", ""},
		{"basic scheme", "Basic YWxpY2U6cGFzc3dvcmQ="},
		{"token scheme", "Token " + valid},
		{"bearer without token", "Bearer"},
		{"bearer with blank token", "Bearer    "},
		{"raw token without scheme", valid},
		{"malformed", "Bearer not-a-jwt"},
		{"malformed three parts", "Bearer aaa.bbb.ccc"},
		{"expired", "Bearer " + expired},
		{"wrong secret", "Bearer " + wrongSecret},
		{"tampered signature", "Bearer " + tampered},
		{"alg none", "Bearer " + algNone},
		{"alg HS512", "Bearer " + hs512},
		{"no expiry", "Bearer " + noExpiry},
		{"no subject", "Bearer " + noSubject},
	}
	endpoints := []struct{ method, path string }{
		{http.MethodGet, "/api/tenants/acme"},
		{http.MethodPost, "/api/tenants"},
		{http.MethodPost, "/api/builds/acme"},
		{http.MethodGet, "/api/builds/acme"},
		{http.MethodGet, "/api/tenants/acme/audit"},
		{http.MethodGet, "/api/tenants/acme/events"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, ep := range endpoints {
				req, err := http.NewRequest(ep.method, e.srv.URL+ep.path, nil)
				if err != nil {
					t.Fatal(err)
				}
				if tc.header != "" {
					req.Header.Set("Authorization", tc.header)
				}
				req.Header.Set("Accept", "text/event-stream")
				r := e.send(req)
				r.wantError(t, http.StatusUnauthorized, "unauthorized")
				if got := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
					t.Fatalf("%s %s: WWW-Authenticate = %q, want a Bearer challenge", ep.method, ep.path, got)
				}
			}
		})
	}

	t.Run("bad token in access_token query", func(t *testing.T) {
		for _, tok := range []string{"", "garbage", algNone, expired} {
			r := e.request(http.MethodGet, "/api/tenants/acme/events?access_token="+tok, "", nil, "", "Accept", "text/event-stream")
			r.wantError(t, http.StatusUnauthorized, "unauthorized")
			if r.header.Get("WWW-Authenticate") == "" {
				t.Fatal("no WWW-Authenticate header")
			}
		}
	})
	t.Run("access_token query only on the live stream", func(t *testing.T) {
		r := e.request(http.MethodGet, "/api/tenants/acme?access_token="+valid, "", nil, "")
		r.wantError(t, http.StatusUnauthorized, "unauthorized")
	})
	t.Run("valid token", func(t *testing.T) {
		for _, h := range []string{"Bearer " + valid, "bearer " + valid, "BEARER " + valid} {
			req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/api/tenants/acme", nil)
			req.Header.Set("Authorization", h)
			e.send(req).wantStatus(t, http.StatusOK)
		}
	})
}

// --- 2. tenants and members ---------------------------------------------

func TestTenants(t *testing.T) {
	t.Parallel()
	e := newEnv(t)

	t.Run("create", func(t *testing.T) {
		r := e.json(http.MethodPost, "/api/tenants", "alice", map[string]string{"tenantId": "acme", "name": "Acme Inc."})
		r.wantStatus(t, http.StatusCreated)
		if loc := r.header.Get("Location"); loc != "/api/tenants/acme" {
			t.Fatalf("Location = %q", loc)
		}
		var b tenantBody
		r.decode(t, &b)
		tn := b.Data.Tenant
		if !b.Success || tn.ID != "acme" || tn.Name != "Acme Inc." || tn.Role != "owner" || tn.URL != "http://acme.localhost:8081/" {
			t.Fatalf("created tenant = %s", r.body)
		}
		if len(tn.Members) != 1 || tn.Members[0].UserID != "alice" || tn.Members[0].Role != "owner" {
			t.Fatalf("members = %+v, want alice as the only owner", tn.Members)
		}
	})
	t.Run("name defaults to id", func(t *testing.T) {
		r := e.json(http.MethodPost, "/api/tenants", "zed", map[string]string{"tenantId": "zed-co"})
		r.wantStatus(t, http.StatusCreated)
		var b tenantBody
		r.decode(t, &b)
		if b.Data.Tenant.Name != "zed-co" {
			t.Fatalf("name = %q", b.Data.Tenant.Name)
		}
	})
	t.Run("invalid ids", func(t *testing.T) {
		for _, id := range []string{"", "ab", "-acme", "acme-", "Acme", "ac me", "acme.io", "ac_me", "ac/me", strings.Repeat("a", 64), "émile"} {
			e.json(http.MethodPost, "/api/tenants", "alice", map[string]string{"tenantId": id}).
				wantError(t, http.StatusBadRequest, "invalid_request", "invalid tenant id")
		}
		e.json(http.MethodPost, "/api/tenants", "alice", map[string]string{"tenantId": "long-name", "name": strings.Repeat("n", 201)}).
			wantError(t, http.StatusBadRequest, "invalid_request")
	})
	t.Run("bad bodies", func(t *testing.T) {
		e.json(http.MethodPost, "/api/tenants", "alice", `{"tenantId":"newco","owner":"mallory"}`).
			wantError(t, http.StatusBadRequest, "invalid_json", "owner")
		e.json(http.MethodPost, "/api/tenants", "alice", `{"tenantId":"newco"} {}`).
			wantError(t, http.StatusBadRequest, "invalid_json")
		e.json(http.MethodPost, "/api/tenants", "alice", `not json`).
			wantError(t, http.StatusBadRequest, "invalid_json")
		e.json(http.MethodPost, "/api/tenants", "alice", `{"tenantId":"newco","name":"`+strings.Repeat("x", 70<<10)+`"}`).
			wantError(t, http.StatusRequestEntityTooLarge, "payload_too_large")
		// Nothing of that was created.
		e.get("/api/tenants/newco", "alice").wantError(t, http.StatusNotFound, "not_found")
	})
	t.Run("duplicate", func(t *testing.T) {
		e.json(http.MethodPost, "/api/tenants", "bob", map[string]string{"tenantId": "acme"}).
			wantError(t, http.StatusConflict, "tenant_exists")
		// The first owner is still the only one.
		var b tenantBody
		e.get("/api/tenants/acme", "alice").decode(t, &b)
		if len(b.Data.Tenant.Members) != 1 {
			t.Fatalf("members after duplicate create: %+v", b.Data.Tenant.Members)
		}
	})
	t.Run("members", func(t *testing.T) {
		e.addMember("alice", "acme", "adam", "admin").wantStatus(t, http.StatusOK)
		e.addMember("alice", "acme", "mia", "member").wantStatus(t, http.StatusOK)
		r := e.addMember("adam", "acme", "max", "member")
		r.wantStatus(t, http.StatusOK)
		var saved struct {
			Success bool `json:"success"`
			Data    struct {
				Member struct{ UserID, Role string } `json:"member"`
			} `json:"data"`
		}
		r.decode(t, &saved)
		if !saved.Success || saved.Data.Member.UserID != "max" || saved.Data.Member.Role != "member" {
			t.Fatalf("add member answer: %s", r.body)
		}

		e.addMember("mia", "acme", "eve", "member").wantError(t, http.StatusForbidden, "forbidden")
		e.addMember("adam", "acme", "eve", "owner").wantError(t, http.StatusForbidden, "forbidden", "owner")
		e.addMember("adam", "acme", "alice", "member").wantError(t, http.StatusForbidden, "forbidden")
		e.addMember("adam", "acme", "adam", "owner").wantError(t, http.StatusForbidden, "forbidden", "own role")
		e.addMember("mia", "acme", "mia", "admin").wantError(t, http.StatusForbidden, "forbidden")
		e.addMember("alice", "acme", "alice", "admin").wantError(t, http.StatusForbidden, "forbidden", "own role")
		e.addMember("alice", "acme", "mia", "member").wantError(t, http.StatusConflict, "conflict")
		e.addMember("alice", "acme", "eve", "superuser").wantError(t, http.StatusBadRequest, "invalid_request", "invalid role")
		e.addMember("alice", "acme", "has space", "member").wantError(t, http.StatusBadRequest, "invalid_request", "invalid user id")
		e.json(http.MethodPost, "/api/tenants/acme/members", "alice", `{"userId":"eve","role":"member","admin":true}`).
			wantError(t, http.StatusBadRequest, "invalid_json")

		var b tenantBody
		r = e.get("/api/tenants/acme", "mia")
		r.wantStatus(t, http.StatusOK)
		r.decode(t, &b)
		got := map[string]string{}
		for _, m := range b.Data.Tenant.Members {
			got[m.UserID] = m.Role
		}
		want := map[string]string{"alice": "owner", "adam": "admin", "mia": "member", "max": "member"}
		if fmt.Sprint(got) != fmt.Sprint(want) || b.Data.Tenant.Role != "member" {
			t.Fatalf("members = %v (caller role %q), want %v", got, b.Data.Tenant.Role, want)
		}
		if !slices.IsSortedFunc(b.Data.Tenant.Members, func(a, b struct {
			UserID string `json:"userId"`
			Role   string `json:"role"`
		}) int {
			return strings.Compare(a.UserID, b.UserID)
		}) {
			t.Fatalf("members not sorted: %+v", b.Data.Tenant.Members)
		}
	})
	t.Run("remove", func(t *testing.T) {
		e.request(http.MethodDelete, "/api/tenants/acme/members/alice", "alice", nil, "").
			wantError(t, http.StatusConflict, "conflict", "at least one owner")
		e.request(http.MethodDelete, "/api/tenants/acme/members/alice", "adam", nil, "").
			wantError(t, http.StatusForbidden, "forbidden")
		e.request(http.MethodDelete, "/api/tenants/acme/members/max", "mia", nil, "").
			wantError(t, http.StatusForbidden, "forbidden")
		e.request(http.MethodDelete, "/api/tenants/acme/members/nobody", "alice", nil, "").
			wantError(t, http.StatusNotFound, "not_found", "nobody")
		e.request(http.MethodDelete, "/api/tenants/acme/members/nobody", "adam", nil, "").
			wantError(t, http.StatusNotFound, "not_found", "nobody")
		e.request(http.MethodDelete, "/api/tenants/acme/members/max", "adam", nil, "").wantStatus(t, http.StatusOK)
		e.get("/api/tenants/acme", "max").wantError(t, http.StatusNotFound, "not_found")

		// A second owner makes the first removable.
		e.addMember("alice", "acme", "olga", "owner").wantStatus(t, http.StatusOK)
		e.request(http.MethodDelete, "/api/tenants/acme/members/alice", "olga", nil, "").wantStatus(t, http.StatusOK)
		e.get("/api/tenants/acme", "alice").wantError(t, http.StatusNotFound, "not_found")
		e.request(http.MethodDelete, "/api/tenants/acme/members/olga", "olga", nil, "").
			wantError(t, http.StatusConflict, "conflict")
	})
	t.Run("unknown endpoint", func(t *testing.T) {
		e.get("/api/nope", "alice").wantError(t, http.StatusNotFound, "not_found")
	})
}

// --- 3. tenant isolation ------------------------------------------------

func TestCrossTenantAccessIsNotFound(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createTenant("alice", "alpha")
	e.addMember("alice", "alpha", "mallory", "owner").wantStatus(t, http.StatusOK)
	site := staticSite(t, "bravo")

	type call struct {
		name string
		do   func(tenant, buildID string) response
	}
	calls := []call{
		{"GET tenant", func(tn, _ string) response { return e.get("/api/tenants/"+tn, "mallory") }},
		{"POST members", func(tn, _ string) response {
			return e.addMember("mallory", tn, "mallory", "owner")
		}},
		{"POST members with a bad body", func(tn, _ string) response {
			return e.json(http.MethodPost, "/api/tenants/"+tn+"/members", "mallory", `{"nonsense":`)
		}},
		{"DELETE member", func(tn, _ string) response {
			return e.request(http.MethodDelete, "/api/tenants/"+tn+"/members/bob", "mallory", nil, "")
		}},
		{"DELETE non-member", func(tn, _ string) response {
			return e.request(http.MethodDelete, "/api/tenants/"+tn+"/members/nobody", "mallory", nil, "")
		}},
		{"GET deployments", func(tn, _ string) response { return e.get("/api/tenants/"+tn+"/deployments", "mallory") }},
		{"POST rollback", func(tn, id string) response {
			return e.json(http.MethodPost, "/api/tenants/"+tn+"/rollback", "mallory", map[string]string{"buildId": id})
		}},
		{"GET audit", func(tn, _ string) response { return e.get("/api/tenants/"+tn+"/audit", "mallory") }},
		{"GET audit with bad params", func(tn, _ string) response { return e.get("/api/tenants/"+tn+"/audit?after=-5", "mallory") }},
		{"GET events (SSE)", func(tn, _ string) response {
			return e.stream("/api/tenants/"+tn+"/events?after=0", "Authorization", "Bearer "+e.token("mallory"))
		}},
		{"GET events (query token)", func(tn, _ string) response {
			return e.stream("/api/tenants/" + tn + "/events?access_token=" + e.token("mallory"))
		}},
		{"POST upload", func(tn, _ string) response { return e.upload(tn, "mallory", []part{filePart(site)}) }},
		{"POST upload with Idempotency-Key", func(tn, _ string) response {
			return e.upload(tn, "mallory", []part{filePart(site)}, "Idempotency-Key", "k")
		}},
		{"POST upload not multipart", func(tn, _ string) response {
			return e.request(http.MethodPost, "/api/builds/"+tn, "mallory", bytes.NewReader(site), "application/zip")
		}},
		{"GET builds", func(tn, _ string) response { return e.get("/api/builds/"+tn, "mallory") }},
		{"GET builds bad page", func(tn, _ string) response { return e.get("/api/builds/"+tn+"?pageSize=abc", "mallory") }},
		{"GET build", func(tn, id string) response { return e.get("/api/builds/"+tn+"/"+id, "mallory") }},
	}

	// Before bravo exists: the answers for a tenant that does not exist.
	placeholder := uuid.NewString()
	before := make([]response, len(calls))
	for i, c := range calls {
		before[i] = c.do("bravo", placeholder)
	}

	// bravo, with a member, a deployed build and a second build.
	e.createTenant("bob", "bravo")
	e.addMember("bob", "bravo", "carol", "member").wantStatus(t, http.StatusOK)
	first := e.uploadZip("bravo", "bob", site)
	e.runBuild(first.Data.Build.ID)
	second := e.uploadZip("bravo", "bob", staticSite(t, "bravo-2"))
	e.runBuild(second.Data.Build.ID)
	bravoHead := e.head()
	bravoID := first.Data.Build.ID

	for i, c := range calls {
		t.Run(c.name, func(t *testing.T) {
			got := c.do("bravo", bravoID)
			got.wantError(t, http.StatusNotFound, "not_found", "tenant bravo not found")
			if got.status != before[i].status || !bytes.Equal(got.body, before[i].body) {
				t.Fatalf("member of another tenant: %d %s\nnon-existent tenant:      %d %s", got.status, got.body, before[i].status, before[i].body)
			}
			ghost := c.do("ghost-co", bravoID)
			ghost.wantError(t, http.StatusNotFound, "not_found", "tenant ghost-co not found")
		})
	}

	t.Run("own tenant, other tenant's build", func(t *testing.T) {
		e.get("/api/builds/alpha/"+bravoID, "mallory").wantError(t, http.StatusNotFound, "not_found", "build not found")
		e.json(http.MethodPost, "/api/tenants/alpha/rollback", "mallory", map[string]string{"buildId": bravoID}).
			wantError(t, http.StatusNotFound, "not_found")
	})
	t.Run("bravo untouched", func(t *testing.T) {
		if h := e.head(); h != bravoHead {
			t.Fatalf("head moved from %d to %d", bravoHead, h)
		}
		var tb tenantBody
		e.get("/api/tenants/bravo", "bob").decode(t, &tb)
		if len(tb.Data.Tenant.Members) != 2 {
			t.Fatalf("bravo members = %+v", tb.Data.Tenant.Members)
		}
		var dl deploymentList
		e.get("/api/tenants/bravo/deployments", "carol").decode(t, &dl)
		if dl.Data.Current == nil || dl.Data.Current.BuildID != second.Data.Build.ID || len(dl.Data.Deployments) != 2 {
			t.Fatalf("bravo deployments changed: %+v", dl.Data)
		}
		var bl buildList
		e.get("/api/builds/bravo", "carol").decode(t, &bl)
		if bl.Data.Pagination.Total != 2 {
			t.Fatalf("bravo builds = %d, want 2", bl.Data.Pagination.Total)
		}
		var al auditBody
		e.get("/api/tenants/alpha/audit", "mallory").decode(t, &al)
		for _, ev := range al.Data.Events {
			if strings.Contains(string(ev.Data), "bravo") {
				t.Fatalf("alpha's audit shows bravo's event %+v", ev)
			}
		}
	})
}

// --- 4. upload happy path -------------------------------------------------

var versionPattern = regexp.MustCompile(`^v[0-9]+$`)

func TestUploadAccepted(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createTenant("alice", "acme")
	e.addMember("alice", "acme", "mia", "member").wantStatus(t, http.StatusOK)
	const secret = "s3cr3t-value"
	site := staticSite(t, "hello")
	sum := sha256.Sum256(site)
	digest := hex.EncodeToString(sum[:])

	before := time.Now()
	r := e.upload("acme", "mia", []part{
		configPart(`{"framework":"static","outputDir":"dist","nodeVersion":"20","environmentVariables":{"API_KEY":"` + secret + `","PUBLIC_NAME":"site"}}`),
		filePart(site),
	}, "X-Request-Id", "req-42")
	r.wantStatus(t, http.StatusAccepted)
	var raw map[string]json.RawMessage
	r.decode(t, &raw)
	for _, k := range []string{"success", "message", "data", "links"} {
		if _, ok := raw[k]; !ok {
			t.Fatalf("answer lacks %q: %s", k, r.body)
		}
	}
	var a acceptedBody
	r.decode(t, &a)
	b := a.Data.Build
	if !a.Success || a.Message == "" {
		t.Fatalf("answer = %s", r.body)
	}
	if _, err := uuid.Parse(b.ID); err != nil {
		t.Fatalf("build id %q: %v", b.ID, err)
	}
	if b.TenantID != "acme" || b.Status != "pending" || !versionPattern.MatchString(b.Version) {
		t.Fatalf("build = %+v", b)
	}
	ms, _ := strconv.ParseInt(b.Version[1:], 10, 64)
	if v := time.UnixMilli(ms); v.Before(before.Add(-time.Second)) || v.After(time.Now().Add(time.Second)) {
		t.Fatalf("version %s is not the upload time", b.Version)
	}
	if a.Links.Self != "/api/builds/acme/"+b.ID || r.header.Get("Location") != a.Links.Self {
		t.Fatalf("links.self = %q, Location = %q", a.Links.Self, r.header.Get("Location"))
	}
	// The events link starts just before BuildRequested, so following it
	// shows the whole build.
	if want := fmt.Sprintf("/api/tenants/acme/events?after=%d", e.head()-1); a.Links.Events != want {
		t.Fatalf("links.events = %q, want %q", a.Links.Events, want)
	}

	// Read your writes: the build is listed at once.
	got := e.getBuild("acme", "mia", b.ID)
	if got.ID != b.ID || got.Status != "pending" || got.Version != b.Version || got.RequestedBy != "mia" ||
		got.SourceSHA256 != digest || got.SourceSize != int64(len(site)) || got.Live || got.URL != "" {
		t.Fatalf("GET build = %+v", got)
	}
	if !slices.Equal(got.EnvNames, []string{"API_KEY", "PUBLIC_NAME"}) {
		t.Fatalf("envNames = %v", got.EnvNames)
	}

	// The source blob, with the uploaded bytes.
	key := "tenants/acme/builds/" + b.ID + "/source.zip"
	obj, err := e.blobs.Open(context.Background(), key)
	if err != nil {
		t.Fatalf("source blob: %v", err)
	}
	stored, err := io.ReadAll(obj)
	obj.Close()
	if err != nil {
		t.Fatal(err)
	}
	if s := sha256.Sum256(stored); hex.EncodeToString(s[:]) != digest {
		t.Fatalf("source blob sha256 %x, want %s", s, digest)
	}
	// The values are kept next to the source, out of the events.
	obj, err = e.blobs.Open(context.Background(), blob.EnvKey("acme", b.ID))
	if err != nil {
		t.Fatalf("env blob: %v", err)
	}
	var envValues map[string]string
	if err := json.NewDecoder(obj).Decode(&envValues); err != nil {
		t.Fatal(err)
	}
	obj.Close()
	if envValues["API_KEY"] != secret || len(envValues) != 2 {
		t.Fatalf("env blob = %v", envValues)
	}

	// The event.
	evs, err := e.events.ReadStream(context.Background(), domain.BuildStream(b.ID), 1)
	if err != nil || len(evs) != 1 {
		t.Fatalf("build stream: %v, %d events", err, len(evs))
	}
	ev := evs[0]
	if ev.Type != "BuildRequested" || ev.Tenant != "acme" || ev.CorrelationID != "req-42" {
		t.Fatalf("event = %+v", ev)
	}
	d, err := domain.Decode(ev.Type, ev.Data)
	if err != nil {
		t.Fatal(err)
	}
	req := d.(domain.BuildRequested)
	if req.BuildID != b.ID || req.TenantID != "acme" || req.Version != b.Version || req.RequestedBy != "mia" ||
		req.Source.Key != key || req.Source.SHA256 != digest || req.Source.Size != int64(len(site)) || req.Source.Files != 3 ||
		req.Config.Framework != "static" || req.Config.OutputDir != "dist" || req.Config.NodeVersion != "20" ||
		!slices.Equal(req.EnvNames, []string{"API_KEY", "PUBLIC_NAME"}) || req.EnvKey != blob.EnvKey("acme", b.ID) {
		t.Fatalf("BuildRequested = %+v", req)
	}

	// The secret value is nowhere but in its blob.
	table := e.eventsTable()
	if strings.Contains(table, secret) {
		t.Fatalf("events table holds the environment value:\n%s", table)
	}
	if !strings.Contains(table, "API_KEY") {
		t.Fatalf("events table lacks the variable name:\n%s", table)
	}
	audit := e.get("/api/tenants/acme/audit", "mia")
	audit.wantStatus(t, http.StatusOK)
	for _, resp := range []response{r, e.get("/api/builds/acme/"+b.ID, "mia"), e.get("/api/builds/acme", "mia"), audit} {
		if bytes.Contains(resp.body, []byte(secret)) {
			t.Fatalf("answer echoes the environment value: %s", resp.body)
		}
	}
	if !bytes.Contains(audit.body, []byte("API_KEY")) {
		t.Fatalf("audit log lacks the variable name: %s", audit.body)
	}
	if n := len(e.spoolFiles()); n != 0 {
		t.Fatalf("%d files left in the spool dir", n)
	}
}

// --- 5. ZIP rules -----------------------------------------------------------

func TestUploadRejectsZipRules(t *testing.T) {
	t.Parallel()
	noise := make([]byte, 4096)
	rng := rand.NewChaCha8([32]byte{1})
	rng.Read(noise)

	cases := []struct {
		name   string
		limits archive.Limits
		zip    []byte
		status int
		rule   archive.Rule
		entry  string // "" for whole-archive rules
		msg    string
	}{
		{name: "not a zip", zip: noise, status: 415, rule: archive.RuleNotZip},
		{name: "too small", zip: []byte("PK\x05\x06tiny"), status: 415, rule: archive.RuleNotZip, msg: "too short"},
		{name: "empty archive", zip: buildZip(t), status: 400, rule: archive.RuleEmpty, msg: "no entries"},
		{name: "only directories", zip: buildZip(t, zdir("a/"), zdir("a/b/")), status: 400, rule: archive.RuleEmpty, msg: "only directories"},
		{name: "entry count", limits: archive.Limits{MaxEntries: 3},
			zip:    buildZip(t, zfile("f0", "0"), zfile("f1", "1"), zfile("f2", "2"), zfile("f3", "3"), zfile("f4", "4")),
			status: 413, rule: archive.RuleEntryCount, entry: "f3"},
		{name: "total size", limits: archive.Limits{MaxTotalUncompressed: 1000},
			zip:    buildZip(t, zfile("a", strings.Repeat("x", 600)), zfile("b", strings.Repeat("y", 600)), zfile("c", "z")),
			status: 413, rule: archive.RuleTotalSize, entry: "b"},
		{name: "entry size", limits: archive.Limits{MaxTotalUncompressed: 1000},
			zip:    buildZip(t, zfile("ok", "small"), zfile("big", strings.Repeat("x", 2000))),
			status: 413, rule: archive.RuleEntrySize, entry: "big"},
		{name: "compression ratio", limits: archive.Limits{MaxEntryRatio: 2, RatioMinSize: 100},
			zip:    buildZip(t, zfile("index.html", "hi"), zfile("a.txt", strings.Repeat("ab", 5000))),
			status: 400, rule: archive.RuleCompressionRatio, entry: "a.txt"},
		{name: "absolute path", zip: buildZip(t, zfile("ok", "ok"), stored("/etc/passwd", []byte("x"), nil)),
			status: 400, rule: archive.RuleAbsolutePath, entry: "/etc/passwd"},
		{name: "parent path", zip: buildZip(t, zfile("ok", "ok"), stored("a/../../x", []byte("x"), nil)),
			status: 400, rule: archive.RuleParentPath, entry: "a/../../x"},
		{name: "backslash", zip: buildZip(t, zfile("ok", "ok"), stored(`..\..\x`, []byte("x"), nil)),
			status: 400, rule: archive.RuleBackslash, entry: `..\..\x`},
		{name: "drive letter", zip: buildZip(t, zfile("ok", "ok"), stored("C:/x", []byte("x"), nil)),
			status: 400, rule: archive.RuleDriveLetter, entry: "C:/x"},
		{name: "symlink", zip: buildZip(t, zfile("ok", "ok"), withMode(zfile("link", "/etc/passwd"), fs.ModeSymlink|0o777)),
			status: 400, rule: archive.RuleSymlink, entry: "link"},
		{name: "special file", zip: buildZip(t, zfile("ok", "ok"), withMode(zfile("fifo", ""), fs.ModeNamedPipe|0o644)),
			status: 400, rule: archive.RuleSpecialFile, entry: "fifo"},
		{name: "duplicate name", zip: buildZip(t, zfile("index.html", "1"), zfile("b", "2"), zfile("index.html", "3")),
			status: 400, rule: archive.RuleDuplicateName, entry: "index.html"},
		{name: "encrypted", zip: buildZip(t, zfile("ok", "ok"), stored("secret.txt", []byte("ciphertext"), func(h *zip.FileHeader) { h.Flags |= 0x1 })),
			status: 400, rule: archive.RuleEncrypted, entry: "secret.txt"},
		{name: "overlap", zip: overlapZip(), status: 400, rule: archive.RuleOverlap, entry: "b"},
		{name: "unsupported method", zip: buildZip(t, zfile("ok", "ok"), stored("data.bin", []byte("payload"), func(h *zip.FileHeader) { h.Method = 12 })),
			status: 400, rule: archive.RuleUnsupportedMethod, entry: "data.bin"},
		{name: "invalid name", zip: buildZip(t, zfile("ok", "ok"), stored("a//b", []byte("x"), nil)),
			status: 400, rule: archive.RuleNameInvalid, entry: "a//b"},
		{name: "control character in name", zip: buildZip(t, zfile("ok", "ok"), stored("a\x01b", []byte("x"), nil)),
			status: 400, rule: archive.RuleNameInvalid, entry: "a\x01b"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, func(c *gateway.Config) { c.ZipLimits = tc.limits })
			e.createTenant("alice", "acme")
			head := e.head()
			r := e.upload("acme", "alice", []part{filePart(tc.zip)})
			var contains []string
			if tc.entry != "" {
				contains = append(contains, fmt.Sprintf("entry %q", tc.entry))
			}
			if tc.msg != "" {
				contains = append(contains, tc.msg)
			}
			body := r.wantError(t, tc.status, string(tc.rule), contains...)
			if tc.entry == "" && strings.Contains(body.Message, "entry ") {
				t.Fatalf("whole-archive rule names an entry: %q", body.Message)
			}
			if tc.status != tc.rule.Status() {
				t.Fatalf("test table: status %d for rule %s, archive says %d", tc.status, tc.rule, tc.rule.Status())
			}
			e.nothingStored(t, "acme", "alice", head)
		})
	}
}

// --- 6. other upload errors ---------------------------------------------------

func TestUploadBadRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createTenant("alice", "acme")
	head := e.head()
	site := staticSite(t, "x")

	many := map[string]string{}
	for i := range domain.MaxEnvVars + 1 {
		many[fmt.Sprintf("VAR_%d", i)] = fmt.Sprintf("secret-many-%d", i)
	}
	manyJSON, _ := json.Marshal(map[string]any{"environmentVariables": many})

	cases := []struct {
		name    string
		send    func() response
		status  int
		code    string
		msg     []string
		secrets []string // must not appear in the answer
	}{
		{name: "not multipart", status: 415, code: "unsupported_media_type", send: func() response {
			return e.request(http.MethodPost, "/api/builds/acme", "alice", bytes.NewReader(site), "application/zip")
		}},
		{name: "no content type", status: 415, code: "unsupported_media_type", send: func() response {
			return e.request(http.MethodPost, "/api/builds/acme", "alice", bytes.NewReader(site), "")
		}},
		{name: "urlencoded form", status: 415, code: "unsupported_media_type", send: func() response {
			return e.request(http.MethodPost, "/api/builds/acme", "alice", strings.NewReader("file=x"), "application/x-www-form-urlencoded")
		}},
		{name: "multipart without boundary", status: 400, code: "invalid_multipart", send: func() response {
			return e.request(http.MethodPost, "/api/builds/acme", "alice", bytes.NewReader(site), "multipart/form-data")
		}},
		{name: "missing file", status: 400, code: "missing_file", msg: []string{"file"}, send: func() response {
			return e.upload("acme", "alice", []part{configPart(`{"framework":"static"}`)})
		}},
		{name: "no parts at all", status: 400, code: "missing_file", send: func() response {
			return e.upload("acme", "alice", nil)
		}},
		{name: "unknown field", status: 400, code: "invalid_multipart", msg: []string{`"extra"`}, send: func() response {
			return e.upload("acme", "alice", []part{filePart(site), {name: "extra", data: []byte("x")}})
		}},
		{name: "two files", status: 400, code: "invalid_multipart", send: func() response {
			return e.upload("acme", "alice", []part{filePart(site), filePart(site)})
		}},
		{name: "two configs", status: 400, code: "invalid_multipart", send: func() response {
			return e.upload("acme", "alice", []part{configPart("{}"), configPart("{}"), filePart(site)})
		}},
		{name: "config unknown field", status: 400, code: "invalid_build_config", msg: []string{"bogus"}, send: func() response {
			return e.upload("acme", "alice", []part{configPart(`{"framework":"static","bogus":true}`), filePart(site)})
		}},
		{name: "config not JSON", status: 400, code: "invalid_build_config", send: func() response {
			return e.upload("acme", "alice", []part{configPart(`{framework: static}`), filePart(site)})
		}},
		{name: "config trailing data", status: 400, code: "invalid_build_config", send: func() response {
			return e.upload("acme", "alice", []part{configPart(`{} {}`), filePart(site)})
		}},
		{name: "config bad framework", status: 400, code: "invalid_build_config", msg: []string{"framework"}, send: func() response {
			return e.upload("acme", "alice", []part{configPart(`{"framework":"rails"}`), filePart(site)})
		}},
		{name: "env name starts with digit", status: 400, code: "invalid_build_config", msg: []string{"1BAD"},
			secrets: []string{"secret-digit-value"}, send: func() response {
				return e.upload("acme", "alice", []part{configPart(`{"environmentVariables":{"1BAD":"secret-digit-value"}}`), filePart(site)})
			}},
		{name: "env name with dash", status: 400, code: "invalid_build_config", msg: []string{"A-B"},
			secrets: []string{"secret-dash-value"}, send: func() response {
				return e.upload("acme", "alice", []part{configPart(`{"environmentVariables":{"A-B":"secret-dash-value"}}`), filePart(site)})
			}},
		{name: "env value with newline", status: 400, code: "invalid_build_config", msg: []string{"GOOD_NAME"},
			secrets: []string{"secret-line-one", "secret-line-two"}, send: func() response {
				return e.upload("acme", "alice", []part{configPart(`{"environmentVariables":{"GOOD_NAME":"secret-line-one\nsecret-line-two"}}`), filePart(site)})
			}},
		{name: "env value with NUL", status: 400, code: "invalid_build_config", msg: []string{"NUL_VAR"},
			secrets: []string{"secret-nul"}, send: func() response {
				return e.upload("acme", "alice", []part{configPart(`{"environmentVariables":{"NUL_VAR":"secret-nul\u0000x"}}`), filePart(site)})
			}},
		{name: "env value not a string", status: 400, code: "invalid_build_config", send: func() response {
			return e.upload("acme", "alice", []part{configPart(`{"environmentVariables":{"N":12345}}`), filePart(site)})
		}},
		{name: "too many env vars", status: 400, code: "invalid_build_config", msg: []string{strconv.Itoa(domain.MaxEnvVars)},
			secrets: []string{"secret-many-"}, send: func() response {
				return e.upload("acme", "alice", []part{configPart(string(manyJSON)), filePart(site)})
			}},
		{name: "config too large", status: 413, code: "payload_too_large", send: func() response {
			return e.upload("acme", "alice", []part{configPart(`{"buildCommand":"` + strings.Repeat("x", 300<<10) + `"}`), filePart(site)})
		}},
		{name: "idempotency key too long", status: 400, code: "invalid_idempotency_key", send: func() response {
			return e.upload("acme", "alice", []part{filePart(site)}, "Idempotency-Key", strings.Repeat("k", 201))
		}},
		{name: "idempotency key with control character", status: 400, code: "invalid_idempotency_key", send: func() response {
			return e.upload("acme", "alice", []part{filePart(site)}, "Idempotency-Key", "a\tb")
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.send()
			r.wantError(t, tc.status, tc.code, tc.msg...)
			for _, s := range tc.secrets {
				if bytes.Contains(r.body, []byte(s)) {
					t.Fatalf("answer echoes the value %q: %s", s, r.body)
				}
			}
			e.nothingStored(t, "acme", "alice", head)
		})
	}
}

func TestUploadTooLargeFile(t *testing.T) {
	t.Parallel()
	const limit = 64 << 10
	e := newEnv(t, func(c *gateway.Config) { c.MaxUploadSize = limit })
	e.createTenant("alice", "acme")
	head := e.head()

	// A valid ZIP just over the cap (stored, incompressible content).
	big := make([]byte, limit)
	rand.NewChaCha8([32]byte{2}).Read(big)
	over := buildZip(t, zfile("index.html", "hi"), stored("blob.bin", big, nil))
	r := e.upload("acme", "alice", []part{filePart(over)})
	r.wantError(t, http.StatusRequestEntityTooLarge, "payload_too_large", gateway.FormatSize(limit))
	e.nothingStored(t, "acme", "alice", head)

	// Just under the cap is fine.
	under := buildZip(t, zfile("index.html", "hi"), stored("blob.bin", big[:limit-1024], nil))
	if len(under) > limit {
		t.Fatalf("test ZIP is %d bytes, over the limit", len(under))
	}
	e.uploadZip("acme", "alice", under)
}

func TestUploadContentLengthOverCapAnsweredWithoutReading(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *gateway.Config) { c.MaxUploadSize = 1 << 20 })
	e.createTenant("alice", "acme")
	head := e.head()

	c := e.rawConn()
	const boundary = "zipship-boundary"
	fmt.Fprintf(c, "POST /api/builds/acme HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: multipart/form-data; boundary=%s\r\nContent-Length: %d\r\n\r\n",
		e.token("alice"), boundary, int64(10)<<30)
	// A few bytes of a body that would be 10 GiB; nothing more is sent.
	fmt.Fprintf(c, "--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.zip\"\r\n\r\nPK", boundary)

	res, body := readRaw(t, c, 2*time.Second)
	r := response{status: res.StatusCode, header: res.Header, body: body}
	r.wantError(t, http.StatusRequestEntityTooLarge, "payload_too_large", "1mb")
	if !res.Close {
		t.Fatalf("connection not closed after refusing the body (Connection: %q)", res.Header.Get("Connection"))
	}
	e.nothingStored(t, "acme", "alice", head)
}

func TestUploadChunkedOverCap(t *testing.T) {
	t.Parallel()
	const limit = 64 << 10
	e := newEnv(t, func(c *gateway.Config) { c.MaxUploadSize = limit })
	e.createTenant("alice", "acme")
	head := e.head()

	big := make([]byte, 4<<20)
	rand.NewChaCha8([32]byte{3}).Read(big)
	body, ct := multipartBody(t, filePart(big))

	c := e.rawConn()
	fmt.Fprintf(c, "POST /api/builds/acme HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: %s\r\nTransfer-Encoding: chunked\r\n\r\n", e.token("alice"), ct)
	go func() {
		// Keep sending until the server hangs up; errors are expected.
		for off := 0; off < len(body); off += 8 << 10 {
			chunk := body[off:min(off+8<<10, len(body))]
			if _, err := fmt.Fprintf(c, "%x\r\n%s\r\n", len(chunk), chunk); err != nil {
				return
			}
		}
		io.WriteString(c, "0\r\n\r\n")
	}()
	res, rb := readRaw(t, c, 3*time.Second)
	r := response{status: res.StatusCode, header: res.Header, body: rb}
	r.wantError(t, http.StatusRequestEntityTooLarge, "payload_too_large")
	e.nothingStored(t, "acme", "alice", head)
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createTenant("alice", "acme")
	e.addMember("alice", "acme", "bob", "member").wantStatus(t, http.StatusOK)
	site := staticSite(t, "idem")

	first := e.upload("acme", "alice", []part{filePart(site)}, "Idempotency-Key", "key-1")
	first.wantStatus(t, http.StatusAccepted)
	var a1 acceptedBody
	first.decode(t, &a1)
	head := e.head()

	again := e.upload("acme", "alice", []part{filePart(site)}, "Idempotency-Key", "key-1")
	again.wantStatus(t, http.StatusOK)
	var a2 acceptedBody
	again.decode(t, &a2)
	if a2.Data.Build != a1.Data.Build || !a2.Success || a2.Links.Self != a1.Links.Self {
		t.Fatalf("replay = %s, first = %s", again.body, first.body)
	}
	if h := e.head(); h != head {
		t.Fatalf("replay appended events (head %d -> %d)", head, h)
	}
	// A replay answers before reading the body: even a broken one.
	e.upload("acme", "alice", []part{filePart([]byte("not a zip at all"))}, "Idempotency-Key", "key-1").wantStatus(t, http.StatusOK)

	other := e.upload("acme", "alice", []part{filePart(site)}, "Idempotency-Key", "key-2")
	other.wantStatus(t, http.StatusAccepted)
	var a3 acceptedBody
	other.decode(t, &a3)
	if a3.Data.Build.ID == a1.Data.Build.ID {
		t.Fatal("another key returned the same build")
	}
	// Keys belong to their user: bob's key-1 is a new build.
	byBob := e.upload("acme", "bob", []part{filePart(site)}, "Idempotency-Key", "key-1")
	byBob.wantStatus(t, http.StatusAccepted)
	var a4 acceptedBody
	byBob.decode(t, &a4)
	if a4.Data.Build.ID == a1.Data.Build.ID {
		t.Fatal("another user's key returned alice's build")
	}
	// Without a key, every upload is new.
	n1, n2 := e.uploadZip("acme", "alice", site), e.uploadZip("acme", "alice", site)
	if n1.Data.Build.ID == n2.Data.Build.ID {
		t.Fatal("two uploads without a key share a build")
	}

	var list buildList
	e.get("/api/builds/acme", "alice").decode(t, &list)
	if list.Data.Pagination.Total != 5 {
		t.Fatalf("builds = %d, want 5", list.Data.Pagination.Total)
	}
}

func TestIdempotencyKeyConcurrent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createTenant("alice", "acme")
	site := staticSite(t, "race")
	body, ct := multipartBody(t, filePart(site))
	tok := e.token("alice")

	const n = 20
	type result struct {
		status int
		id     string
		err    error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/api/builds/acme", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Content-Type", ct)
			req.Header.Set("Idempotency-Key", "one-key")
			res, err := e.client.Do(req)
			if err != nil {
				results[i].err = err
				return
			}
			defer res.Body.Close()
			var a acceptedBody
			if err := json.NewDecoder(res.Body).Decode(&a); err != nil {
				results[i].err = err
			}
			results[i].status, results[i].id = res.StatusCode, a.Data.Build.ID
		}()
	}
	close(start)
	wg.Wait()

	accepted := 0
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("request %d: %v", i, r.err)
		}
		switch r.status {
		case http.StatusAccepted:
			accepted++
		case http.StatusOK:
		default:
			t.Fatalf("request %d: status %d", i, r.status)
		}
		if r.id == "" || r.id != results[0].id {
			t.Fatalf("request %d: build %q, request 0: %q", i, r.id, results[0].id)
		}
	}
	if accepted != 1 {
		t.Fatalf("%d answers were 202, want exactly 1", accepted)
	}
	e.sync()
	var list buildList
	e.get("/api/builds/acme", "alice").decode(t, &list)
	if list.Data.Pagination.Total != 1 {
		t.Fatalf("builds = %d, want 1", list.Data.Pagination.Total)
	}
	evs, err := e.events.ReadAll(context.Background(), 0, eventstore.ReadOptions{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	requested := 0
	for _, ev := range evs {
		if ev.Type == "BuildRequested" {
			requested++
		}
	}
	if requested != 1 {
		t.Fatalf("%d BuildRequested events, want 1", requested)
	}
	// The stored source is the one the event describes.
	got := e.getBuild("acme", "alice", results[0].id)
	obj, err := e.blobs.Open(context.Background(), e.sourceKey(t, got.ID))
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	io.Copy(h, obj)
	obj.Close()
	if hex.EncodeToString(h.Sum(nil)) != got.SourceSHA256 {
		t.Fatal("source blob does not match the build's sha256")
	}
	if keys := e.blobKeys("tenants/"); len(keys) != 1 {
		t.Fatalf("blobs = %v, want the one source", keys)
	}
	if !eventually(2*time.Second, func() bool { return len(e.spoolFiles()) == 0 }) {
		t.Fatalf("spool dir not empty: %v", e.spoolFiles())
	}
}

// --- 7. client disconnect -------------------------------------------------------

func TestUploadClientDisconnect(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *gateway.Config) { c.MaxUploadSize = 4 << 20 })
	e.createTenant("alice", "acme")
	head := e.head()

	big := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{4}).Read(big)
	body, ct := multipartBody(t, filePart(buildZip(t, zfile("index.html", "hi"), stored("blob.bin", big, nil))))

	c := e.rawConn()
	fmt.Fprintf(c, "POST /api/builds/acme HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: %s\r\nContent-Length: %d\r\n\r\n", e.token("alice"), ct, len(body))
	if _, err := c.Write(body[:len(body)/2]); err != nil {
		t.Fatal(err)
	}
	// The server is spooling the upload...
	if !eventually(2*time.Second, func() bool { return len(e.spoolFiles()) > 0 }) {
		t.Fatal("the upload never reached the spool dir")
	}
	// ...when the client goes away.
	c.Close()
	e.nothingStored(t, "acme", "alice", head)
}

// --- 8. build queries ---------------------------------------------------------

func TestBuildsPagination(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createTenant("alice", "acme")
	e.createTenant("zoe", "zeta")
	var ids []string
	for i := range 5 {
		ids = append(ids, e.uploadZip("acme", "alice", staticSite(t, fmt.Sprint(i))).Data.Build.ID)
		e.uploadZip("zeta", "zoe", staticSite(t, fmt.Sprint(i)))
	}
	slices.Reverse(ids) // newest first

	list := func(query string) buildList {
		t.Helper()
		r := e.get("/api/builds/acme"+query, "alice")
		r.wantStatus(t, http.StatusOK)
		var l buildList
		r.decode(t, &l)
		return l
	}
	idsOf := func(l buildList) []string {
		var out []string
		for _, b := range l.Data.Builds {
			if b.TenantID != "acme" {
				t.Fatalf("listed another tenant's build %+v", b)
			}
			out = append(out, b.ID)
		}
		return out
	}
	all := list("")
	if !slices.Equal(idsOf(all), ids) || all.Data.Pagination != (pagination{Page: 1, PageSize: 20, Total: 5}) {
		t.Fatalf("default page: %v %+v, want %v", idsOf(all), all.Data.Pagination, ids)
	}
	for _, tc := range []struct {
		query string
		want  []string
		p     pagination
	}{
		{"?page=1&pageSize=2", ids[0:2], pagination{1, 2, 5}},
		{"?page=2&pageSize=2", ids[2:4], pagination{2, 2, 5}},
		{"?page=3&pageSize=2", ids[4:5], pagination{3, 2, 5}},
		{"?page=4&pageSize=2", nil, pagination{4, 2, 5}},
		{"?pageSize=100", ids, pagination{1, 100, 5}},
		{"?pageSize=1", ids[0:1], pagination{1, 1, 5}},
	} {
		l := list(tc.query)
		if !slices.Equal(idsOf(l), tc.want) || l.Data.Pagination != tc.p {
			t.Fatalf("%s: %v %+v, want %v %+v", tc.query, idsOf(l), l.Data.Pagination, tc.want, tc.p)
		}
		if l.Data.Builds == nil {
			t.Fatalf("%s: builds is null, want []", tc.query)
		}
	}
	for _, q := range []string{"?pageSize=0", "?pageSize=101", "?pageSize=abc", "?pageSize=-1", "?page=0", "?page=-1", "?page=abc", "?page=1.5"} {
		e.get("/api/builds/acme"+q, "alice").wantError(t, http.StatusBadRequest, "invalid_request")
	}

	e.get("/api/builds/acme/"+uuid.NewString(), "alice").wantError(t, http.StatusNotFound, "not_found", "build not found")
	e.get("/api/builds/acme/not-a-uuid", "alice").wantError(t, http.StatusNotFound, "not_found", "build not found")
	e.get("/api/builds/zeta/"+ids[0], "zoe").wantError(t, http.StatusNotFound, "not_found", "build not found")
}

// --- 9. static deploy through the runner ---------------------------------------

func TestStaticDeployAndRollback(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createTenant("alice", "acme")
	e.addMember("alice", "acme", "mia", "member").wantStatus(t, http.StatusOK)
	e.addMember("alice", "acme", "adam", "admin").wantStatus(t, http.StatusOK)

	first := e.uploadZip("acme", "mia", staticSite(t, "one")).Data.Build
	e.runBuild(first.ID)
	b := e.getBuild("acme", "mia", first.ID)
	if b.Status != "success" || !b.Live || b.Error != nil {
		t.Fatalf("build after the runner = %+v", b)
	}
	if b.URL != "http://acme.localhost:8081/" || b.DeploymentURL != "http://"+first.ID+"--acme.localhost:8081/" {
		t.Fatalf("urls = %q, %q", b.URL, b.DeploymentURL)
	}
	wantSteps := []string{"validate", "workspace", "download", "extract", "discover", "detect", "upload", "activate", "invalidate"}
	var names []string
	for _, s := range b.Steps {
		names = append(names, s.Name)
		if s.Status != "done" || s.Attempt != 1 || s.DurationMs == nil || *s.DurationMs < 0 || s.FinishedAt == nil || s.StartedAt.IsZero() {
			t.Fatalf("step %+v", s)
		}
	}
	if !slices.Equal(names, wantSteps) {
		t.Fatalf("steps = %v, want %v", names, wantSteps)
	}

	deployments := func() deploymentList {
		t.Helper()
		r := e.get("/api/tenants/acme/deployments", "mia")
		r.wantStatus(t, http.StatusOK)
		var d deploymentList
		r.decode(t, &d)
		return d
	}
	d := deployments()
	if len(d.Data.Deployments) != 1 || d.Data.Pagination.Total != 1 || d.Data.URL != "http://acme.localhost:8081/" {
		t.Fatalf("deployments = %+v", d.Data)
	}
	if dep := d.Data.Deployments[0]; dep.Kind != "activated" || dep.BuildID != first.ID || dep.Version != first.Version ||
		dep.Previous != "" || dep.Actor != "mia" || dep.DeploymentURL != b.DeploymentURL {
		t.Fatalf("deployment = %+v", dep)
	}
	if d.Data.Current == nil || d.Data.Current.BuildID != first.ID {
		t.Fatalf("current = %+v", d.Data.Current)
	}

	second := e.uploadZip("acme", "mia", staticSite(t, "two")).Data.Build
	e.runBuild(second.ID)
	d = deployments()
	if len(d.Data.Deployments) != 2 {
		t.Fatalf("deployments = %+v", d.Data.Deployments)
	}
	if dep := d.Data.Deployments[0]; dep.Kind != "activated" || dep.BuildID != second.ID || dep.Previous != first.ID {
		t.Fatalf("second activation = %+v", dep)
	}
	if d.Data.Current.BuildID != second.ID || e.getBuild("acme", "mia", first.ID).Live {
		t.Fatalf("current = %+v", d.Data.Current)
	}

	rollback := func(user, buildID string) response {
		t.Helper()
		return e.json(http.MethodPost, "/api/tenants/acme/rollback", user, map[string]string{"buildId": buildID})
	}
	head := e.head()
	rollback("mia", first.ID).wantError(t, http.StatusForbidden, "forbidden")
	e.json(http.MethodPost, "/api/tenants/acme/rollback", "alice", `{}`).wantError(t, http.StatusBadRequest, "invalid_request", "buildId")
	e.json(http.MethodPost, "/api/tenants/acme/rollback", "alice", `{"buildId":"`+first.ID+`","force":true}`).
		wantError(t, http.StatusBadRequest, "invalid_json")
	rollback("alice", uuid.NewString()).wantError(t, http.StatusNotFound, "not_found", "build not found")
	rollback("alice", second.ID).wantError(t, http.StatusConflict, "conflict", "already live")
	if h := e.head(); h != head {
		t.Fatalf("refused rollbacks appended events (head %d -> %d)", head, h)
	}

	r := rollback("alice", first.ID)
	r.wantStatus(t, http.StatusOK)
	var rb struct {
		Success bool `json:"success"`
		Data    struct {
			Deployment struct {
				TenantID, BuildID, Version, Previous, URL string
				DeploymentURL                             string `json:"deploymentUrl"`
			} `json:"deployment"`
		} `json:"data"`
	}
	r.decode(t, &rb)
	if dep := rb.Data.Deployment; !rb.Success || dep.BuildID != first.ID || dep.Previous != second.ID || dep.Version != first.Version ||
		dep.TenantID != "acme" || dep.URL != "http://acme.localhost:8081/" || dep.DeploymentURL != b.DeploymentURL {
		t.Fatalf("rollback answer = %s", r.body)
	}
	d = deployments()
	if len(d.Data.Deployments) != 3 || d.Data.Current.BuildID != first.ID {
		t.Fatalf("deployments after rollback = %+v", d.Data)
	}
	if dep := d.Data.Deployments[0]; dep.Kind != "rolled_back" || dep.BuildID != first.ID || dep.Previous != second.ID || dep.Actor != "alice" {
		t.Fatalf("rollback deployment = %+v", dep)
	}
	if !e.getBuild("acme", "mia", first.ID).Live {
		t.Fatal("rolled-back build is not live")
	}
	p, err := blob.ReadPointer(context.Background(), e.blobs, "acme")
	if err != nil || p.BuildID != first.ID {
		t.Fatalf("pointer blob = %+v, %v", p, err)
	}
	rollback("alice", first.ID).wantError(t, http.StatusConflict, "conflict")
	// Admins roll back too.
	rollback("adam", second.ID).wantStatus(t, http.StatusOK)
}

func TestPackageJSONNeedsRunner(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createTenant("alice", "acme")
	src := buildZip(t,
		zfile("package.json", `{"name":"site","scripts":{"build":"vite build"}}`),
		zfile("index.html", "<!doctype html>"),
		zfile("src/main.js", "console.log(1)\n"),
	)
	id := e.uploadZip("acme", "alice", src).Data.Build.ID
	e.runBuild(id)
	b := e.getBuild("acme", "alice", id)
	if b.Status != "failed" || b.Error == nil || b.Error.Step != "detect" || b.Error.Retryable ||
		!strings.Contains(b.Error.Message, "builds need a runner") || b.Live || b.URL != "" {
		t.Fatalf("build = %+v (error %+v)", b, b.Error)
	}
	last := b.Steps[len(b.Steps)-1]
	if last.Name != "detect" || last.Status != "failed" {
		t.Fatalf("last step = %+v", last)
	}
	var d deploymentList
	e.get("/api/tenants/acme/deployments", "alice").decode(t, &d)
	if len(d.Data.Deployments) != 0 || d.Data.Current != nil {
		t.Fatalf("deployments = %+v", d.Data)
	}
	if keys := e.blobKeys("pointers/"); len(keys) != 0 {
		t.Fatalf("pointer written for a failed build: %v", keys)
	}
	e.json(http.MethodPost, "/api/tenants/acme/rollback", "alice", map[string]string{"buildId": id}).
		wantError(t, http.StatusConflict, "conflict", "never deployed")
}

// --- 10. audit log --------------------------------------------------------------

func TestAudit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createTenant("alice", "acme")
	e.createTenant("zoe", "zeta")
	e.addMember("alice", "acme", "mia", "member").wantStatus(t, http.StatusOK)
	e.addMember("zoe", "zeta", "zack", "member").wantStatus(t, http.StatusOK)
	acmeBuild := e.uploadZip("acme", "mia", staticSite(t, "a")).Data.Build.ID
	zetaBuild := e.uploadZip("zeta", "zoe", staticSite(t, "z")).Data.Build.ID
	e.runBuild(acmeBuild)
	e.runBuild(zetaBuild)

	fetch := func(query string) auditBody {
		t.Helper()
		r := e.get("/api/tenants/acme/audit"+query, "mia")
		r.wantStatus(t, http.StatusOK)
		var a auditBody
		r.decode(t, &a)
		return a
	}
	all := fetch("")
	if all.Data.Next != nil {
		t.Fatalf("next = %q for a complete page", *all.Data.Next)
	}
	stored, err := e.events.ReadAll(context.Background(), 0, eventstore.ReadOptions{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Data.Events) != len(stored) || len(stored) < 10 {
		t.Fatalf("audit has %d events, the store %d for acme", len(all.Data.Events), len(stored))
	}
	ownStreams := map[string]bool{"tenant-acme": true, "site-acme": true, "build-" + acmeBuild: true}
	var prev int64
	for i, ev := range all.Data.Events {
		if ev.Position <= prev {
			t.Fatalf("event %d at position %d after %d", i, ev.Position, prev)
		}
		prev = ev.Position
		if !ownStreams[ev.Stream] {
			t.Fatalf("audit shows event of stream %s", ev.Stream)
		}
		if ev.Position != stored[i].Position || ev.Type != stored[i].Type || ev.ID != stored[i].ID.String() {
			t.Fatalf("event %d = %+v, store has %+v", i, ev, stored[i])
		}
		if bytes.Contains(ev.Data, []byte("zeta")) || bytes.Contains(ev.Data, []byte(zetaBuild)) {
			t.Fatalf("audit leaks zeta: %s", ev.Data)
		}
		if _, err := time.Parse(time.RFC3339Nano, ev.Time); err != nil {
			t.Fatalf("time %q: %v", ev.Time, err)
		}
	}
	types := []string{all.Data.Events[0].Type, all.Data.Events[1].Type, all.Data.Events[2].Type}
	if !slices.Equal(types, []string{"TenantCreated", "MemberAdded", "BuildRequested"}) {
		t.Fatalf("first events = %v", types)
	}
	lastType := all.Data.Events[len(all.Data.Events)-1].Type
	if lastType != "BuildSucceeded" && lastType != "DeploymentActivated" {
		t.Fatalf("last event = %s", lastType)
	}

	// Page through with limit=3, following the next links.
	var paged []auditEvent
	link := "/api/tenants/acme/audit?limit=3"
	for pages := 0; link != ""; pages++ {
		if pages > 100 {
			t.Fatal("next links never end")
		}
		r := e.get(link, "mia")
		r.wantStatus(t, http.StatusOK)
		var a auditBody
		r.decode(t, &a)
		if len(a.Data.Events) > 3 {
			t.Fatalf("page of %d events with limit 3", len(a.Data.Events))
		}
		paged = append(paged, a.Data.Events...)
		link = ""
		if a.Data.Next != nil {
			link = *a.Data.Next
			if want := fmt.Sprintf("/api/tenants/acme/audit?after=%d&limit=3", a.Data.Events[len(a.Data.Events)-1].Position); link != want {
				t.Fatalf("next = %q, want %q", link, want)
			}
		}
	}
	if len(paged) != len(all.Data.Events) {
		t.Fatalf("paged %d events, all %d", len(paged), len(all.Data.Events))
	}
	for i := range paged {
		if paged[i].ID != all.Data.Events[i].ID {
			t.Fatalf("paged event %d = %s, want %s", i, paged[i].ID, all.Data.Events[i].ID)
		}
	}

	after := all.Data.Events[1].Position
	rest := fetch(fmt.Sprintf("?after=%d", after))
	if rest.Data.After != after || len(rest.Data.Events) != len(all.Data.Events)-2 || rest.Data.Events[0].ID != all.Data.Events[2].ID {
		t.Fatalf("after=%d: %d events from %+v", after, len(rest.Data.Events), rest.Data.Events[0])
	}
	if end := fetch(fmt.Sprintf("?after=%d", e.head()+100)); len(end.Data.Events) != 0 || end.Data.Next != nil {
		t.Fatalf("after the head: %+v", end.Data)
	}

	for _, q := range []string{"?after=-1", "?after=abc", "?after=1.5", "?limit=0", "?limit=1001", "?limit=x", "?limit=-3"} {
		e.get("/api/tenants/acme/audit"+q, "mia").wantError(t, http.StatusBadRequest, "invalid_request")
	}
}

// --- 11. sizes --------------------------------------------------------------------

func TestParseSize(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"100mb", 100 << 20},
		{"100MB", 100 << 20},
		{"1.5MB", 3 << 19},
		{"1.5mb", 1572864},
		{"10kb", 10240},
		{"10KB", 10240},
		{"1024", 1024},
		{"1024b", 1024},
		{"1gb", 1 << 30},
		{"2tb", 2 << 40},
		{"1pb", 1 << 50},
		{" 10 kb ", 10240},
		{"0.5kb", 512},
	} {
		got, err := gateway.ParseSize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "   ", "mb", "10xb", "10 mib", "10k", "10m", "10 bytes", "-1", "-5mb", "0", "0kb", "abc",
		"1..5mb", "inf", "nan", "infmb", "1e400", "99999999pb", "10 mb extra", "0.5", "0.1b"} {
		if got, err := gateway.ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", in, got)
		}
	}
}

func TestFormatSize(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   int64
		want string
	}{
		{100 << 20, "100mb"},
		{1 << 30, "1gb"},
		{3 << 30, "3gb"},
		{1024, "1kb"},
		{1536, "1536b"},
		{3 << 19, "1536kb"},
		{1, "1b"},
		{0, "0b"},
		{gateway.DefaultMaxUploadSize, "100mb"},
	} {
		if got := gateway.FormatSize(tc.in); got != tc.want {
			t.Errorf("FormatSize(%d) = %q, want %q", tc.in, got, tc.want)
		}
	}
	for _, n := range []int64{1, 1023, 1024, 1536, 3 << 19, 100 << 20, 5 << 30, 12345678} {
		back, err := gateway.ParseSize(gateway.FormatSize(n))
		if err != nil || back != n {
			t.Errorf("ParseSize(FormatSize(%d)) = %d, %v", n, back, err)
		}
	}
}

// --- read your writes and the live stream ----------------------------------------

func TestUploadWaitsForReadModels(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createTenant("alice", "acme")
	e.sync()
	// The projector is held back for a while: the upload must not answer
	// before the read models show the build.
	const stall = 400 * time.Millisecond
	began := time.Now()
	e.stallProjector(stall)
	a := e.uploadZip("acme", "alice", staticSite(t, "ryw"))
	if took := time.Since(began); took < stall-50*time.Millisecond {
		t.Fatalf("upload answered after %v, before the read models could apply it", took)
	}
	if b := e.getBuild("acme", "alice", a.Data.Build.ID); b.Status != "pending" {
		t.Fatalf("build = %+v", b)
	}
}

func TestEventsStream(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createTenant("alice", "acme")
	e.createTenant("zoe", "zeta")
	zeta := e.uploadZip("zeta", "zoe", staticSite(t, "z")).Data.Build.ID
	e.runBuild(zeta)
	acme := e.uploadZip("acme", "alice", staticSite(t, "a")).Data.Build.ID
	e.runBuild(acme)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.URL+"/api/tenants/acme/events?after=0&access_token="+e.token("alice"), nil)
	req.Header.Set("Accept", "text/event-stream")
	res, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("status %d, Content-Type %q", res.StatusCode, res.Header.Get("Content-Type"))
	}
	var events []string
	buf := make([]byte, 0, 64<<10)
	chunk := make([]byte, 4096)
	for !bytes.Contains(buf, []byte("event: deployment:activated")) {
		n, err := res.Body.Read(chunk)
		buf = append(buf, chunk[:n]...)
		if err != nil {
			t.Fatalf("stream ended (%v) after %s", err, buf)
		}
	}
	for _, line := range strings.Split(string(buf), "\n") {
		if name, ok := strings.CutPrefix(line, "event: "); ok {
			events = append(events, name)
		}
	}
	if bytes.Contains(buf, []byte(zeta)) || bytes.Contains(buf, []byte("zeta")) {
		t.Fatalf("acme's stream carries zeta's events:\n%s", buf)
	}
	if !bytes.Contains(buf, []byte(acme)) || len(events) < 3 || events[0] != "build:started" {
		t.Fatalf("events = %v\n%s", events, buf)
	}
}

// TestIdempotencyKeyConcurrentDifferentBodies: racing requests that share
// an Idempotency-Key but carry different ZIPs store their sources under keys
// of their own, so the winner's source is never overwritten or removed by a
// loser, and the stored blob matches the sha256 in BuildRequested.
func TestIdempotencyKeyConcurrentDifferentBodies(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createTenant("alice", "acme")
	tok := e.token("alice")
	var wg sync.WaitGroup
	for i := range 20 {
		body, ct := multipartBody(t, filePart(staticSite(t, fmt.Sprint("variant-", i))))
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/api/builds/acme", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Content-Type", ct)
			req.Header.Set("Idempotency-Key", "shared")
			if res, err := e.client.Do(req); err == nil {
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
		}()
	}
	wg.Wait()
	e.sync()
	var l buildList
	e.get("/api/builds/acme", "alice").decode(t, &l)
	if len(l.Data.Builds) != 1 {
		t.Fatalf("builds = %d, want 1", len(l.Data.Builds))
	}
	b := l.Data.Builds[0]
	obj, err := e.blobs.Open(context.Background(), e.sourceKey(t, b.ID))
	if err != nil {
		t.Fatalf("source of the accepted build: %v", err)
	}
	h := sha256.New()
	io.Copy(h, obj)
	obj.Close()
	if got := hex.EncodeToString(h.Sum(nil)); got != b.SourceSHA256 {
		t.Fatalf("stored source sha256 %s, BuildRequested says %s", got, b.SourceSHA256)
	}
}

// TestUnknownRoutes: unmatched requests get the JSON error shape; a known
// path with the wrong method is 405 with Allow.
func TestUnknownRoutes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createTenant("alice", "acme")
	var body struct{ Error, Message string }
	r := e.request("PUT", "/api/builds/acme", "alice", nil, "")
	r.decode(t, &body)
	if r.status != http.StatusMethodNotAllowed || body.Error != "method_not_allowed" || !strings.Contains(r.header.Get("Allow"), "POST") {
		t.Fatalf("PUT /api/builds/acme = %d %+v Allow=%q", r.status, body, r.header.Get("Allow"))
	}
	r = e.get("/api/nothing-here", "alice")
	r.decode(t, &body)
	if r.status != http.StatusNotFound || body.Error != "not_found" {
		t.Fatalf("GET /api/nothing-here = %d %+v", r.status, body)
	}
}

// TestCancelBuild: owners cancel any build, members their own; a cancelled
// build fails with "cancelled" when the runner gets to it.
func TestCancelBuild(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createTenant("alice", "acme")
	e.addMember("alice", "acme", "bob", "member").wantStatus(t, http.StatusOK)
	e.addMember("alice", "acme", "carol", "member").wantStatus(t, http.StatusOK)
	e.createTenant("mallory", "evil")

	bobs := e.uploadZip("acme", "bob", staticSite(t, "bob")).Data.Build.ID
	cancel := func(user, tenant, id string) response {
		return e.json(http.MethodPost, "/api/builds/"+tenant+"/"+id+"/cancel", user, nil)
	}
	cancel("carol", "acme", bobs).wantStatus(t, http.StatusForbidden)
	cancel("mallory", "acme", bobs).wantStatus(t, http.StatusNotFound)
	cancel("mallory", "evil", bobs).wantStatus(t, http.StatusNotFound)
	cancel("bob", "acme", "no-such-build").wantStatus(t, http.StatusNotFound)
	cancel("bob", "acme", bobs).wantStatus(t, http.StatusAccepted)
	cancel("alice", "acme", bobs).wantStatus(t, http.StatusConflict) // already requested

	e.runBuild(bobs)
	b := e.getBuild("acme", "alice", bobs)
	if b.Status != "failed" || b.Error == nil || b.Error.Message != "cancelled" {
		t.Fatalf("cancelled build = %s %+v", b.Status, b.Error)
	}
	cancel("alice", "acme", bobs).wantStatus(t, http.StatusConflict) // finished

	// An owner cancels somebody else's build.
	other := e.uploadZip("acme", "bob", staticSite(t, "bob2")).Data.Build.ID
	cancel("alice", "acme", other).wantStatus(t, http.StatusAccepted)
}

// TestBuildLogs: the log endpoint shows a running build's lines, follows
// them to the end, serves the stored log afterwards, and is tenant-scoped.
func TestBuildLogs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.createTenant("alice", "acme")
	e.createTenant("mallory", "evil")
	id := e.uploadZip("acme", "alice", staticSite(t, "logs")).Data.Build.ID
	path := "/api/builds/acme/" + id + "/logs"

	r := e.get(path, "alice")
	if r.status != http.StatusNotFound || !strings.Contains(string(r.body), "no_log") {
		t.Fatalf("log before the build ran: %d %s", r.status, r.body)
	}
	l := e.logs.Open("acme", id, []string{"topsecret"})
	l.Printf("$ npm run build")
	io.WriteString(l.Writer(buildlog.Stdout), "token topsecret\n")
	r = e.get(path, "alice")
	if r.status != 200 || !strings.Contains(string(r.body), "system $ npm run build") ||
		!strings.Contains(string(r.body), "stdout token [redacted]") || strings.Contains(string(r.body), "topsecret") {
		t.Fatalf("running log: %d %q", r.status, r.body)
	}
	// follow=1 streams until the log closes.
	done := make(chan response, 1)
	go func() { done <- e.get(path+"?follow=1", "alice") }()
	time.Sleep(50 * time.Millisecond)
	io.WriteString(l.Writer(buildlog.Stderr), "last line\n")
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case r = <-done:
		if r.status != 200 || !strings.Contains(string(r.body), "stderr last line") {
			t.Fatalf("followed log: %d %q", r.status, r.body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("follow did not end when the log closed")
	}
	// Stored.
	r = e.get(path, "alice")
	if r.status != 200 || !strings.Contains(string(r.body), "stderr last line") || strings.Contains(string(r.body), "topsecret") {
		t.Fatalf("stored log: %d %q", r.status, r.body)
	}
	e.get(path, "mallory").wantStatus(t, http.StatusNotFound)
	e.get("/api/builds/evil/"+id+"/logs", "mallory").wantStatus(t, http.StatusNotFound)
	e.get(path+"?follow=maybe", "alice").wantStatus(t, http.StatusBadRequest)
}
