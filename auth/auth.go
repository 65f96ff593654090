// Package auth mints and verifies zipship's bearer tokens: JWTs signed with
// HS256 and a shared secret, whose subject is the user id. Only HS256 is
// accepted; "none" and every other algorithm are refused.
package auth

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// ErrInvalidToken is returned for a missing, malformed, expired, wrongly
// signed or unsupported token.
var ErrInvalidToken = errors.New("invalid token")

// MinSecretLen is the shortest secret accepted: HS256 wants at least 256 bits.
const MinSecretLen = 32

// Issuer is the iss claim of tokens minted here.
const Issuer = "zipship"

// Sign mints a token for user, valid for ttl.
func Sign(secret []byte, user string, ttl time.Duration, now time.Time) (string, error) {
	if len(secret) < MinSecretLen {
		return "", fmt.Errorf("sign: secret shorter than %d bytes", MinSecretLen)
	}
	if user == "" {
		return "", errors.New("sign: empty user")
	}
	claims := jwt.RegisteredClaims{
		Subject:   user,
		Issuer:    Issuer,
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)),
		ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("sign: %w", err)
	}
	return s, nil
}

// Verify checks token and returns its subject (the user id). Tokens need an
// expiry; the algorithm must be HS256.
func Verify(secret []byte, token string) (string, error) {
	claims := &jwt.RegisteredClaims{}
	_, err := jwt.ParseWithClaims(token, claims, func(*jwt.Token) (any, error) { return secret, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(30*time.Second),
	)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	if claims.Subject == "" {
		return "", fmt.Errorf("%w: no subject", ErrInvalidToken)
	}
	return claims.Subject, nil
}

// SecretFile is the name of the generated secret inside the data dir.
const SecretFile = "jwt.secret"

// LoadSecret returns the signing secret: envValue when set (it must be at
// least MinSecretLen bytes), else the secret file in dataDir. With create,
// a missing file is generated (32 random bytes, hex, mode 0600).
func LoadSecret(envValue, dataDir string, create bool) ([]byte, error) {
	if envValue != "" {
		if len(envValue) < MinSecretLen {
			return nil, fmt.Errorf("ZIPSHIP_JWT_SECRET must be at least %d bytes", MinSecretLen)
		}
		return []byte(envValue), nil
	}
	path := filepath.Join(dataDir, SecretFile)
	b, err := os.ReadFile(path)
	if err == nil {
		s := strings.TrimSpace(string(b))
		if len(s) < MinSecretLen {
			return nil, fmt.Errorf("%s: secret shorter than %d bytes", path, MinSecretLen)
		}
		return []byte(s), nil
	}
	if !errors.Is(err, os.ErrNotExist) || !create {
		return nil, fmt.Errorf("read secret: %w (set ZIPSHIP_JWT_SECRET or run zipship serve once with --data-dir %s)", err, dataDir)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("generate secret: %w", err)
	}
	s := hex.EncodeToString(raw)
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return LoadSecret("", dataDir, false) // another process won the race
	}
	if err != nil {
		return nil, fmt.Errorf("write secret: %w", err)
	}
	if _, err := f.WriteString(s + "\n"); err != nil {
		f.Close()
		return nil, fmt.Errorf("write secret: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("write secret: %w", err)
	}
	return []byte(s), nil
}
