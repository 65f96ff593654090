package detect

import (
	"errors"
	"path"
	"strings"
)

// UserError is a problem with the uploaded project that only its author can
// fix: retrying the build cannot help. Its message names the file at fault.
type UserError struct {
	// File is the file at fault, relative to the project directory with
	// forward slashes ("package.json", "app/api/hello/route.ts"); "" when
	// the problem is not in a file (the build configuration).
	File string
	// lead and text surround File in the message.
	lead, text string
}

func userErr(lead, file, text string) *UserError {
	return &UserError{File: file, lead: lead, text: text}
}

// Error returns the message, e.g. `app/api/route.ts: a POST route handler
// is not supported by static export: …`.
func (e *UserError) Error() string { return e.lead + e.File + e.text }

// Under returns a copy of e whose File is prefixed with dir, the project
// directory relative to the upload's root ("" "." or "/" for the root), so
// that messages name files as the user sees them in the ZIP.
func (e *UserError) Under(dir string) *UserError {
	c := *e
	dir = strings.Trim(dir, "/")
	if e.File != "" && dir != "" && dir != "." {
		c.File = path.Join(dir, e.File)
		if strings.HasSuffix(e.File, "/") {
			c.File += "/"
		}
	}
	return &c
}

// UserErrors is several problems found together (CheckNextStaticExport
// reports them all at once); errors.As finds the first *UserError.
type UserErrors []*UserError

// Error lists the problems, one a line.
func (es UserErrors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap returns the problems.
func (es UserErrors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// IsUserError reports whether err is (or wraps) a problem of the project,
// not of the build server.
func IsUserError(err error) bool {
	var ue *UserError
	return errors.As(err, &ue)
}

// Under rewrites the file names in a *UserError or UserErrors (directly, not
// wrapped) with (*UserError).Under; any other error is returned unchanged.
func Under(err error, dir string) error {
	switch e := err.(type) {
	case *UserError:
		return e.Under(dir)
	case UserErrors:
		out := make(UserErrors, len(e))
		for i, u := range e {
			out[i] = u.Under(dir)
		}
		return out
	}
	return err
}
