package detect

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// nextConfigs are the configuration files Next.js loads, in the order it
// looks for them; it uses the first that exists and ignores the others.
var nextConfigs = []string{"next.config.js", "next.config.mjs", "next.config.ts"}

// nextUnsupportedConfigs are configuration files Next.js refuses when none
// of nextConfigs exists (next.config.mts loads only on Node.js with native
// TypeScript, 22.10 and later).
var nextUnsupportedConfigs = []string{"next.config.cjs", "next.config.mts", "next.config.cts", "next.config.json", "next.config.jsx", "next.config.tsx"}

// wrapperMarker starts every configuration PrepareNextExport writes.
const wrapperMarker = "// zipship: generated"

// staticExportJS is the shared body of the wrappers: the user's export
// resolved as Next.js resolves it (the module's default export, else the
// module; a function is called with the phase and {defaultConfig}, and may
// be async), then output 'export'. images.unoptimized is forced unless the
// user configured a loader of their own (a custom loader works in a static
// export; unoptimized would bypass it). distDir is dropped: with output
// 'export' Next.js writes the export into a custom distDir instead of out/,
// and zipship collects out/. trailingSlash and everything else stay as the
// user set them.
const staticExportJS = `  const exported = userModule.default || userModule
  const resolved = typeof exported === 'function' ? await exported(phase, context) : await exported
  const config = { ...(resolved || {}) }
  delete config.distDir
  const images = config.images || {}
  const ownLoader = Boolean((images.loader && images.loader !== 'default') || images.loaderFile)
  return {
    ...config,
    output: 'export',
    images: ownLoader ? images : { ...images, unoptimized: true },
  }
}
`

const wrapperMJS = wrapperMarker + ` by zipship: your configuration is in %[1]s;
// this wrapper loads it and forces a static export (output: 'export').
import * as userModule from './%[1]s'

export default async function zipshipStaticExport(phase, context) {
` + staticExportJS

const wrapperTS = wrapperMarker + ` by zipship: your configuration is in %[1]s;
// this wrapper loads it and forces a static export (output: 'export').
import type { NextConfig } from 'next'
import * as userModule from './next.config.user'

type ZipshipContext = { defaultConfig: NextConfig }
type ZipshipConfigFunction = (phase: string, context: ZipshipContext) => NextConfig | Promise<NextConfig>

export default async function zipshipStaticExport(phase: string, context: ZipshipContext): Promise<NextConfig> {
  const mod = userModule as unknown as { default?: unknown }
  const exported = (mod.default || mod) as NextConfig | Promise<NextConfig> | ZipshipConfigFunction
  const resolved: NextConfig = typeof exported === 'function' ? await exported(phase, context) : await exported
  const config: NextConfig = { ...(resolved || {}) }
  delete config.distDir
  const images: NonNullable<NextConfig['images']> = config.images || {}
  const ownLoader = Boolean((images.loader && images.loader !== 'default') || images.loaderFile)
  return {
    ...config,
    output: 'export',
    images: ownLoader ? images : { ...images, unoptimized: true },
  }
}
`

const minimalMJS = wrapperMarker + ` by zipship (the project has no next.config): a static export.
export default { output: 'export', images: { unoptimized: true } }
`

// PrepareNextExport makes `next build` in projectDir produce a static export
// in out/ without losing the user's configuration. The configuration Next.js
// would load (the first of next.config.js, .mjs, .ts) is renamed to
// next.config.user.<ext> and a wrapper takes its place: next.config.mjs for
// a .js or .mjs one (importing a CommonJS next.config.js from .mjs yields
// its module.exports), next.config.ts for a .ts one. The wrapper resolves
// the user's export as Next.js does, then sets output: 'export' and
// images.unoptimized: true (unless the user has an image loader of their
// own), and drops distDir so that the export lands in out/. trailingSlash
// is left as the user set it: zipship's edge serves /about from about.html
// as well as about/index.html.
//
// With no configuration it writes a minimal next.config.mjs. A
// next.config.mjs that Next.js was ignoring (next.config.js wins) is moved
// to next.config.ignored.mjs. Only a next.config.cjs, .mts, .cts, .json,
// .jsx or .tsx is a *UserError: Next.js refuses them. A project already
// prepared (the wrapper is there) is left alone.
//
// detail says what was done, for the configure step.
func PrepareNextExport(projectDir string) (detail string, err error) {
	root, err := os.OpenRoot(projectDir)
	if err != nil {
		return "", fmt.Errorf("prepare next export: %w", err)
	}
	defer root.Close()

	exists := func(name string) (bool, error) {
		fi, err := root.Lstat(name)
		switch {
		case err == nil:
			if !fi.Mode().IsRegular() {
				return false, userErr("", name, ": not a regular file (a link or a directory): make it a regular file")
			}
			return true, nil
		case errors.Is(err, fs.ErrNotExist):
			return false, nil
		default:
			return false, fmt.Errorf("prepare next export: %w", err)
		}
	}

	var found []string
	for _, name := range nextConfigs {
		ok, err := exists(name)
		if err != nil {
			return "", err
		}
		if ok {
			found = append(found, name)
		}
	}
	if len(found) > 0 {
		if data, err := root.ReadFile(found[0]); err == nil && bytes.HasPrefix(data, []byte(wrapperMarker)) {
			return "already prepared: " + found[0] + " is zipship's wrapper", nil
		}
	}

	if len(found) == 0 {
		for _, name := range nextUnsupportedConfigs {
			if _, err := root.Lstat(name); err == nil {
				return "", userErr("", name, ": Next.js does not load next.config.cjs/.mts (nor .cts, .json, .jsx, .tsx): rename it to next.config.js, next.config.mjs or next.config.ts")
			}
		}
		if err := createFile(root, "next.config.mjs", minimalMJS); err != nil {
			return "", err
		}
		return "no next.config: wrote next.config.mjs (output: 'export', images.unoptimized)", nil
	}

	user := found[0]
	ext := strings.TrimPrefix(user, "next.config.")
	userCopy := "next.config.user." + ext
	if ok, err := exists(userCopy); err != nil {
		return "", err
	} else if ok {
		return "", userErr("", userCopy, ": zipship needs this name for your "+user+" while it forces a static export: rename the file")
	}

	var notes []string
	wrapperName, wrapper := "next.config.mjs", fmt.Sprintf(wrapperMJS, userCopy)
	if ext == "ts" {
		wrapperName, wrapper = "next.config.ts", fmt.Sprintf(wrapperTS, userCopy)
	}
	if user == "next.config.js" && len(found) > 1 && found[1] == "next.config.mjs" {
		if ok, err := exists("next.config.ignored.mjs"); err != nil {
			return "", err
		} else if ok {
			return "", userErr("", "next.config.mjs", ": Next.js ignores it (next.config.js wins) and next.config.ignored.mjs exists: remove one of them")
		}
		if err := root.Rename("next.config.mjs", "next.config.ignored.mjs"); err != nil {
			return "", fmt.Errorf("prepare next export: %w", err)
		}
		notes = append(notes, "next.config.mjs (ignored by Next.js) moved to next.config.ignored.mjs")
	}
	for _, other := range found[1:] {
		if other != "next.config.mjs" || user != "next.config.js" {
			notes = append(notes, other+" ignored, as Next.js does")
		}
	}
	if err := root.Rename(user, userCopy); err != nil {
		return "", fmt.Errorf("prepare next export: %w", err)
	}
	if err := createFile(root, wrapperName, wrapper); err != nil {
		return "", err
	}
	detail = fmt.Sprintf("%s wrapped (yours is now %s): output: 'export', images.unoptimized unless you set a loader, distDir dropped", wrapperName, userCopy)
	if len(notes) > 0 {
		detail += "; " + strings.Join(notes, "; ")
	}
	return detail, nil
}

// createFile writes a new file; it fails if name exists.
func createFile(root *os.Root, name, content string) error {
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}
