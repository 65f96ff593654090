package auth

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var secret = []byte("0123456789abcdef0123456789abcdef")

func TestSignVerify(t *testing.T) {
	tok, err := Sign(secret, "alice", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	user, err := Verify(secret, tok)
	if err != nil || user != "alice" {
		t.Fatalf("Verify = %q, %v; want alice", user, err)
	}
}

func TestVerifyRejects(t *testing.T) {
	now := time.Now()
	expired, _ := Sign(secret, "alice", time.Minute, now.Add(-time.Hour))
	other, _ := Sign([]byte("ffffffffffffffffffffffffffffffff"), "alice", time.Hour, now)
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.RegisteredClaims{Subject: "alice",
		ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	hs512, _ := jwt.NewWithClaims(jwt.SigningMethodHS512, jwt.RegisteredClaims{Subject: "alice",
		ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))}).SignedString(secret)
	noExp, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: "alice"}).SignedString(secret)
	noSub, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour))}).SignedString(secret)
	good, _ := Sign(secret, "alice", time.Hour, now)
	tampered := good[:len(good)-4] + "AAAA"
	for name, tok := range map[string]string{
		"empty": "", "malformed": "not.a.jwt", "expired": expired, "wrong secret": other,
		"alg none": none, "alg HS512": hs512, "no exp": noExp, "no sub": noSub, "tampered": tampered,
	} {
		t.Run(name, func(t *testing.T) {
			user, err := Verify(secret, tok)
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("Verify = %q, %v; want ErrInvalidToken", user, err)
			}
		})
	}
}

func TestLoadSecret(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadSecret("short", dir, true); err == nil {
		t.Fatal("short env secret accepted")
	}
	if _, err := LoadSecret("", dir, false); err == nil {
		t.Fatal("missing secret without create accepted")
	}
	s1, err := LoadSecret("", dir, true)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := LoadSecret("", dir, false)
	if err != nil || string(s1) != string(s2) || len(s1) < MinSecretLen {
		t.Fatalf("reload = %q, %v; want %q", s2, err, s1)
	}
	fi, err := os.Stat(filepath.Join(dir, SecretFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file mode %v, %v; want 0600", fi.Mode(), err)
	}
	env := strings.Repeat("k", 40)
	s3, _ := LoadSecret(env, dir, true)
	if string(s3) != env {
		t.Fatal("env secret not preferred")
	}
}
