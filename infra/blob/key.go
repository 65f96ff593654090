package blob

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxKeyLen is the longest key, in bytes, a Store accepts. It matches the
// S3 limit so a key valid on the filesystem is valid on S3 too.
const MaxKeyLen = 1024

// ValidateKey reports whether key is a well-formed object key: a non-empty,
// relative, slash-separated UTF-8 path of at most MaxKeyLen bytes with no
// empty, "." or ".." segment and no backslash, NUL or control character.
// Every Store adapter calls it before touching storage, so that no key can
// name something outside the store, whatever the backend. The error wraps
// ErrInvalidKey.
func ValidateKey(key string) error {
	switch {
	case key == "":
		return invalidKey(key, "empty")
	case len(key) > MaxKeyLen:
		return invalidKey(key, fmt.Sprintf("longer than %d bytes", MaxKeyLen))
	case key[0] == '/':
		return invalidKey(key, "starts with /")
	}
	if err := checkKeyChars(key); err != nil {
		return err
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch seg {
		case "":
			return invalidKey(key, "empty segment")
		case ".", "..":
			return invalidKey(key, fmt.Sprintf("%q segment", seg))
		}
	}
	return nil
}

// ValidatePrefix reports whether prefix may be passed to Store.List. The
// empty prefix lists everything. Otherwise everything up to the last slash
// must be a valid key, and the rest (a partial last segment, possibly
// empty as in "tenants/acme/") must follow the same character rules, so a
// listing can never walk outside the store either. The error wraps
// ErrInvalidKey.
func ValidatePrefix(prefix string) error {
	switch {
	case prefix == "":
		return nil
	case len(prefix) > MaxKeyLen:
		return invalidKey(prefix, fmt.Sprintf("longer than %d bytes", MaxKeyLen))
	case prefix[0] == '/':
		return invalidKey(prefix, "starts with /")
	}
	if err := checkKeyChars(prefix); err != nil {
		return err
	}
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		if err := ValidateKey(prefix[:i]); err != nil {
			return invalidKey(prefix, "invalid directory part")
		}
	}
	return nil
}

// checkKeyChars rejects invalid UTF-8, backslashes (a path separator on
// Windows and a source of confusion in URLs), NUL and control characters.
func checkKeyChars(key string) error {
	if !utf8.ValidString(key) {
		return invalidKey(key, "not valid UTF-8")
	}
	for _, r := range key {
		switch {
		case r == '\\':
			return invalidKey(key, "contains a backslash")
		case r == 0:
			return invalidKey(key, "contains NUL")
		case unicode.IsControl(r):
			return invalidKey(key, fmt.Sprintf("contains control character %U", r))
		}
	}
	return nil
}

// validSegment reports whether name can be used as one segment of a key,
// such as a tenant or build id: keys built from it must not gain or lose
// levels.
func validSegment(what, name string) error {
	if strings.Contains(name, "/") {
		return invalidKey(name, what+" contains /")
	}
	if err := ValidateKey(name); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// invalidKey builds an ErrInvalidKey error; very long keys are shortened in
// the message.
func invalidKey(key, why string) error {
	const show = 80
	if len(key) > show {
		key = key[:show] + "..."
	}
	return fmt.Errorf("%w %q: %s", ErrInvalidKey, key, why)
}
