package detect

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"strings"
)

// EnvFile is the dotenv file WriteEnvProduction appends to: the one loaded
// last (Vite, Create React App) or first (Next.js) in a production build,
// so that its values win over the user's other .env files.
const EnvFile = ".env.production.local"

// Variables zipship sets for every build; user variables with these names
// are ignored.
const (
	EnvNodeEnv  = "NODE_ENV"
	EnvBuildID  = "NEXT_PUBLIC_BUILD_ID"
	EnvTenantID = "NEXT_PUBLIC_TENANT_ID"
)

// userEnvFiles are the user's dotenv files that a production build loads
// (Next.js and Create React App read exactly these).
var userEnvFiles = []string{".env.production.local", ".env.local", ".env.production", ".env"}

// reDotenvKey matches the start of an assignment in a dotenv file, as
// dotenv's own parser does.
var reDotenvKey = regexp.MustCompile(`^\s*(?:export\s+)?([\w.-]+)\s*(?:=|:\s)`)

// BuildEnv returns the zipship part of a build's process environment:
// NODE_ENV=production first, then sorted by name NEXT_PUBLIC_BUILD_ID,
// NEXT_PUBLIC_TENANT_ID, NEXT_TELEMETRY_DISABLED=1 (the build has no network;
// the user may override it) and the user's variables. User variables named
// NODE_ENV, NEXT_PUBLIC_BUILD_ID or NEXT_PUBLIC_TENANT_ID are ignored, as are
// names and values no process environment can hold (a NUL byte, or "=" in
// the name; domain.ValidateBuildConfig refuses them earlier). The runner
// adds PATH, HOME and the like; theirs must win over user variables of the
// same name. Pass here the process part of SplitEnv for a project with .env
// files. Values are never logged.
func BuildEnv(buildID, tenant string, user map[string]string) []string {
	vars := map[string]string{"NEXT_TELEMETRY_DISABLED": "1"}
	for name, value := range user {
		if name == "" || strings.ContainsAny(name, "=\x00") || strings.Contains(value, "\x00") {
			continue
		}
		vars[name] = value
	}
	delete(vars, EnvNodeEnv)
	vars[EnvBuildID] = buildID
	vars[EnvTenantID] = tenant
	env := make([]string, 0, len(vars)+1)
	env = append(env, EnvNodeEnv+"=production")
	for _, name := range sortedKeys(vars) {
		env = append(env, name+"="+vars[name])
	}
	return env
}

// SplitEnv splits the user's variables between the two channels (see the
// package documentation, Environment): those that one of the user's .env,
// .env.local, .env.production or .env.production.local files assigns go to
// file (for WriteEnvProduction), the others to process (for BuildEnv).
func SplitEnv(projectDir string, user map[string]string) (process, file map[string]string, err error) {
	root, err := os.OpenRoot(projectDir)
	if err != nil {
		return nil, nil, fmt.Errorf("split env: %w", err)
	}
	defer root.Close()
	inFiles := map[string]bool{}
	for _, name := range userEnvFiles {
		data, err := root.ReadFile(name)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, nil, fmt.Errorf("split env: read %s: %w", name, err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if m := reDotenvKey.FindStringSubmatch(sc.Text()); m != nil {
				inFiles[m[1]] = true
			}
		}
		// A line longer than the buffer ends the scan: the names seen so
		// far still count.
	}
	process, file = map[string]string{}, map[string]string{}
	for name, value := range user {
		if inFiles[name] {
			file[name] = value
		} else {
			process[name] = value
		}
	}
	return process, file, nil
}

// WriteEnvProduction appends env, sorted by name, to the project's
// .env.production.local (EnvFile), after the user's own content of that
// file if any: later lines win inside a file, and this file wins over the
// user's other .env files. NODE_ENV is not written (Next.js ignores it in
// .env files and Vite warns): it belongs to the process environment.
//
// Each value is quoted so that dotenv 16's parser (Next.js, Create React
// App), Node.js's util.parseEnv (Vite 6 and later) and dotenv-expand read it
// back unchanged: every $ is written \$ (dotenv-expand would expand $HOME
// and turns \$ back into $), inside single quotes, else backquotes, else
// double quotes (the only quotes in which dotenv turns \n into a newline,
// so they are used only when the value has no \n or \r). A value holding
// all three quote characters, or a newline, cannot be written: that is an
// error naming the variable, never its value (pass it in the process
// environment instead). The file must not be a symbolic link.
func WriteEnvProduction(projectDir string, env map[string]string) error {
	root, err := os.OpenRoot(projectDir)
	if err != nil {
		return fmt.Errorf("write %s: %w", EnvFile, err)
	}
	defer root.Close()

	var b strings.Builder
	b.WriteString("# zipship: build variables (appended; later lines win)\n")
	n := 0
	for _, name := range sortedKeys(env) {
		if name == EnvNodeEnv {
			continue
		}
		if !reEnvName.MatchString(name) {
			return fmt.Errorf("write %s: variable name %q cannot be written to a dotenv file", EnvFile, name)
		}
		quoted, err := dotenvQuote(env[name])
		if err != nil {
			return fmt.Errorf("write %s: variable %s: %w", EnvFile, name, err)
		}
		b.WriteString(name + "=" + quoted + "\n")
		n++
	}
	if n == 0 {
		return nil
	}

	prefix := ""
	switch fi, err := root.Lstat(EnvFile); {
	case err == nil && !fi.Mode().IsRegular():
		return userErr("", EnvFile, ": not a regular file (a link or a directory): zipship appends the build's variables to it; make it a regular file")
	case err == nil:
		old, err := root.ReadFile(EnvFile)
		if err != nil {
			return fmt.Errorf("write %s: %w", EnvFile, err)
		}
		if len(old) > 0 && old[len(old)-1] != '\n' {
			prefix = "\n"
		}
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("write %s: %w", EnvFile, err)
	}
	f, err := root.OpenFile(EnvFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", EnvFile, err)
	}
	if _, err := f.WriteString(prefix + b.String()); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", EnvFile, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", EnvFile, err)
	}
	return nil
}

// reEnvName is a name every dotenv parser reads (dotenv allows [\w.-]+;
// Node.js's parser is laxer).
var reEnvName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// errUnquotable is the reason a value cannot be written to a dotenv file.
var errUnquotable = errors.New("the value cannot be written to a dotenv file (it has ', \" and ` or a line break): pass it in the process environment")

// dotenvQuote returns value as a dotenv value that reads back unchanged.
func dotenvQuote(value string) (string, error) {
	if strings.ContainsAny(value, "\n\r\x00") {
		return "", errUnquotable
	}
	e := strings.ReplaceAll(value, "$", `\$`)
	switch {
	case !strings.Contains(e, "'"):
		return "'" + e + "'", nil
	case !strings.Contains(e, "`"):
		return "`" + e + "`", nil
	case !strings.Contains(e, `"`) && !strings.Contains(e, `\n`) && !strings.Contains(e, `\r`):
		return `"` + e + `"`, nil
	}
	return "", errUnquotable
}
