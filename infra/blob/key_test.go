package blob_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/zipship/zipship/infra/blob"
)

func TestValidateKey(t *testing.T) {
	tests := []struct {
		key string
		ok  bool
	}{
		{"a", true},
		{"tenants/acme/builds/b1/source.zip", true},
		{blob.BlobKey(strings.Repeat("ab", 32)), true},
		{"_next/static/chunks/app-1234.js", true},
		{".well-known/security.txt", true},
		{"a/.hidden", true},
		{"a/..b", true},
		{"a/b..", true},
		{"...", true},
		{"caf\u00e9/men\u00fc.html", true},
		{"with space.txt", true},
		{strings.Repeat("a", blob.MaxKeyLen), true},

		{"", false},
		{strings.Repeat("a", blob.MaxKeyLen+1), false},
		{"/a", false},
		{"/", false},
		{"a\\b", false},
		{"..\\a", false},
		{"a\x00b", false},
		{"a\nb", false},
		{"a\rb", false},
		{"a\tb", false},
		{"a\x7fb", false},
		{"a\u0085b", false}, // C1 control
		{"a\xffb", false},   // invalid UTF-8
		{".", false},
		{"..", false},
		{"./a", false},
		{"a/./b", false},
		{"a/.", false},
		{"../a", false},
		{"a/../b", false},
		{"a/..", false},
		{"a//b", false},
		{"a/", false},
		{"//a", false},
	}
	for _, tt := range tests {
		err := blob.ValidateKey(tt.key)
		if tt.ok && err != nil {
			t.Errorf("ValidateKey(%q) = %v, want nil", tt.key, err)
		}
		if !tt.ok && !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("ValidateKey(%q) = %v, want ErrInvalidKey", tt.key, err)
		}
	}
}

func TestValidatePrefix(t *testing.T) {
	tests := []struct {
		prefix string
		ok     bool
	}{
		{"", true},
		{"tenants/", true},
		{"tenants/ac", true},
		{"tenants/acme/deployments/", true},
		{"a/.", true}, // partial segment: matches "a/.well-known/..."
		{".", true},

		{"/", false},
		{"/tenants", false},
		{"a//", false},
		{"a/../", false},
		{"../x", false},
		{"./", false},
		{"a\\b", false},
		{"a\x00", false},
		{"a/\x01", false},
		{strings.Repeat("a", blob.MaxKeyLen+1), false},
	}
	for _, tt := range tests {
		err := blob.ValidatePrefix(tt.prefix)
		if tt.ok && err != nil {
			t.Errorf("ValidatePrefix(%q) = %v, want nil", tt.prefix, err)
		}
		if !tt.ok && !errors.Is(err, blob.ErrInvalidKey) {
			t.Errorf("ValidatePrefix(%q) = %v, want ErrInvalidKey", tt.prefix, err)
		}
	}
}

func TestValidateKeyErrorShortensLongKeys(t *testing.T) {
	err := blob.ValidateKey(strings.Repeat("x", 5000))
	if err == nil {
		t.Fatal("want error")
	}
	if len(err.Error()) > 300 {
		t.Errorf("error message is %d bytes long, want the key shortened", len(err.Error()))
	}
}
