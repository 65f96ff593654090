// Package archive validates uploaded ZIP archives and extracts them safely.
//
// zipship accepts a ZIP of a web project from an untrusted tenant member.
// The gateway calls [Validate] before it accepts an upload: the check reads
// only the central directory and, for each entry, the fixed part of its
// local header, so it costs a few reads however large the entries claim to
// be, and it rejects everything the build runner must never see: paths
// that escape the workspace, symlinks and device files, duplicate names,
// encryption, exotic compression methods, declared sizes beyond the caps,
// compression ratios typical of zip bombs and overlapping entries (the
// "overlapping files" zip bomb, where many central-directory entries share
// one compressed stream).
//
// The build runner calls [Extract], which validates again (defence in
// depth: the stored blob may not be what the gateway saw, and the runner
// must not trust another process) and then extracts through an [os.Root],
// counting the bytes actually written, so a header that lies about sizes
// cannot push more than the caps onto the disk.
//
// Every rejection is a [*RuleError] naming the [Rule] that was broken and
// the entry that broke it; [Rule.Status] maps it to the HTTP status the
// gateway answers with.
package archive

import (
	"archive/zip"
	"bufio"
	"cmp"
	"compress/flate"
	"container/heap"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits bounds what an archive may contain. A zero or negative field
// takes the value of the same field in [DefaultLimits]: a limit can be
// tightened or loosened, never switched off by accident with a zero value.
type Limits struct {
	// MaxEntries is the largest number of central-directory entries (files
	// and directories). It bounds the work and memory spent per upload
	// before anything else is read.
	MaxEntries int
	// MaxTotalUncompressed caps the sum of the files' uncompressed sizes,
	// declared (Validate) and actually written (Extract). It is the
	// workspace's disk budget.
	MaxTotalUncompressed int64
	// MaxEntryRatio is the largest uncompressed/compressed ratio allowed
	// for an entry whose declared uncompressed size exceeds RatioMinSize.
	MaxEntryRatio float64
	// RatioMinSize is the declared uncompressed size, in bytes, above which
	// MaxEntryRatio applies. Small files may compress extremely well
	// (a file of spaces) and cannot hurt: the total cap covers them.
	RatioMinSize int64
	// MaxNameLength is the longest entry name accepted, in bytes.
	MaxNameLength int
}

// Default limit values; see DefaultLimits for why.
const (
	defaultMaxEntries           = 20_000
	defaultMaxTotalUncompressed = 1 << 30 // 1 GiB
	defaultMaxEntryRatio        = 200
	defaultRatioMinSize         = 1 << 20 // 1 MiB
	defaultMaxNameLength        = 1024

	// maxSegmentLength is NAME_MAX on Linux and most file systems: a
	// longer path segment could not be created by Extract anyway.
	maxSegmentLength = 255

	// copyBufferSize is the size of the buffer Extract copies through; it
	// is also the granularity of the size checks, so at most this many
	// bytes are inflated (never written) past a limit before it trips.
	copyBufferSize = 32 << 10
)

// DefaultLimits returns the limits zipship applies to uploads:
//
//   - 20,000 entries: a web project without node_modules (which the build
//     installs itself) has hundreds to a few thousand files; 20,000 leaves
//     room for large static sites while bounding the per-entry work done
//     on the request path.
//   - 1 GiB uncompressed in total: the disk budget of one build workspace
//     before dependencies are installed.
//   - a compression ratio of at most 200 for entries declaring more than
//     1 MiB: source, HTML, JSON and SVG compress 3-20x, highly repetitive
//     data rarely beyond 100x, while deflate bombs sit near deflate's
//     maximum of about 1032x. Smaller entries are exempt because a tiny
//     file of repeated bytes is legitimate and harmless.
//   - names of at most 1024 bytes: far beyond any real project path, far
//     below PATH_MAX (4096), and it bounds the cost of the name checks.
func DefaultLimits() Limits {
	return Limits{
		MaxEntries:           defaultMaxEntries,
		MaxTotalUncompressed: defaultMaxTotalUncompressed,
		MaxEntryRatio:        defaultMaxEntryRatio,
		RatioMinSize:         defaultRatioMinSize,
		MaxNameLength:        defaultMaxNameLength,
	}
}

// withDefaults replaces every zero or negative field by its default.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxEntries <= 0 {
		l.MaxEntries = d.MaxEntries
	}
	if l.MaxTotalUncompressed <= 0 {
		l.MaxTotalUncompressed = d.MaxTotalUncompressed
	}
	if !(l.MaxEntryRatio > 0) { // also catches NaN
		l.MaxEntryRatio = d.MaxEntryRatio
	}
	if l.RatioMinSize <= 0 {
		l.RatioMinSize = d.RatioMinSize
	}
	if l.MaxNameLength <= 0 {
		l.MaxNameLength = d.MaxNameLength
	}
	return l
}

// Rule names one validation rule. Its value is stable and safe to expose
// in API answers, logs and events (it is snake_case for that reason).
type Rule string

// The rules an archive must satisfy. Each RuleError carries exactly one.
const (
	// RuleNotZip: not a ZIP, shorter than an end-of-central-directory
	// record (22 bytes), or its central directory cannot be read.
	RuleNotZip Rule = "not_zip"
	// RuleEmpty: no file entries (directories alone count as empty).
	RuleEmpty Rule = "empty"
	// RuleEntryCount: more entries than Limits.MaxEntries.
	RuleEntryCount Rule = "entry_count"
	// RuleTotalSize: files add up to more than Limits.MaxTotalUncompressed.
	RuleTotalSize Rule = "total_size"
	// RuleEntrySize: one entry is larger than Limits.MaxTotalUncompressed,
	// or (Extract) yields more bytes than its header declares.
	RuleEntrySize Rule = "entry_size"
	// RuleCompressionRatio: a large entry compresses suspiciously well.
	RuleCompressionRatio Rule = "compression_ratio"
	// RuleAbsolutePath: the name starts with "/".
	RuleAbsolutePath Rule = "absolute_path"
	// RuleParentPath: the name has a ".." segment.
	RuleParentPath Rule = "parent_path"
	// RuleBackslash: the name contains "\", which ZIP forbids and Windows
	// tools treat as a separator.
	RuleBackslash Rule = "backslash"
	// RuleDriveLetter: the first segment contains ":" ("C:/x", "c:x").
	RuleDriveLetter Rule = "drive_letter"
	// RuleSymlink: the entry's mode is a symbolic link.
	RuleSymlink Rule = "symlink"
	// RuleSpecialFile: the entry's mode is a device, FIFO, socket or
	// another non-regular type.
	RuleSpecialFile Rule = "special_file"
	// RuleDuplicateName: two entries name the same path ("a" twice, "a"
	// and "a/"), or a file is also used as a directory ("a" and "a/b").
	RuleDuplicateName Rule = "duplicate_name"
	// RuleEncrypted: the entry is encrypted (flag bit 0 or AES method 99).
	RuleEncrypted Rule = "encrypted"
	// RuleOverlap: the entry's data overlaps another entry's data, or
	// extends past the start of the central directory.
	RuleOverlap Rule = "overlap"
	// RuleUnsupportedMethod: a compression method other than store (0)
	// or deflate (8).
	RuleUnsupportedMethod Rule = "unsupported_method"
	// RuleNameInvalid: empty, too long, not UTF-8, control characters,
	// "." or empty segments, or a segment longer than 255 bytes.
	RuleNameInvalid Rule = "name_invalid"
	// RuleCorrupt: the archive is structurally broken in a way only found
	// when reading an entry: bad local header, inconsistent sizes,
	// invalid deflate data, truncated data or a CRC-32 mismatch.
	RuleCorrupt Rule = "corrupt"
)

// HTTP statuses returned by Rule.Status (the values of net/http's
// constants, spelled here to keep this package free of net/http).
const (
	statusBadRequest            = 400 // http.StatusBadRequest
	statusRequestEntityTooLarge = 413 // http.StatusRequestEntityTooLarge
	statusUnsupportedMediaType  = 415 // http.StatusUnsupportedMediaType
)

// Status returns the HTTP status the gateway should answer when an upload
// breaks r: 415 when the body is not a ZIP at all, 413 when it is too big
// (total size, one entry's size, entry count), 400 for every other rule.
func (r Rule) Status() int {
	switch r {
	case RuleNotZip:
		return statusUnsupportedMediaType
	case RuleTotalSize, RuleEntrySize, RuleEntryCount:
		return statusRequestEntityTooLarge
	default:
		return statusBadRequest
	}
}

// RuleError reports an archive that breaks a Rule. Validate and Extract
// return it (as *RuleError) for every problem caused by the archive's
// content; any other error is an infrastructure problem (I/O, context).
type RuleError struct {
	// Rule is the rule that was broken.
	Rule Rule
	// Entry is the entry's name exactly as stored in the archive, or ""
	// when the problem concerns the whole archive.
	Entry string
	// Message says what is wrong, for humans.
	Message string
	// Err is the underlying error, if any (for example a deflate error).
	Err error
}

// Error formats the error as `entry "a/../b": path contains ".." (rule
// parent_path)`; names are quoted, so control characters are escaped.
func (e *RuleError) Error() string {
	var b strings.Builder
	if e.Entry != "" {
		fmt.Fprintf(&b, "entry %q: ", e.Entry)
	}
	b.WriteString(e.Message)
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	fmt.Fprintf(&b, " (rule %s)", e.Rule)
	return b.String()
}

// Unwrap returns the underlying error, so errors.Is sees through it.
func (e *RuleError) Unwrap() error { return e.Err }

// IsRule reports whether err is, or wraps, a *RuleError for rule r.
func IsRule(err error, r Rule) bool {
	var re *RuleError
	return errors.As(err, &re) && re.Rule == r
}

// Summary describes an accepted archive.
type Summary struct {
	// Files and Dirs count file entries and explicit directory entries.
	Files, Dirs int
	// TotalUncompressed is the sum of the files' declared uncompressed
	// sizes (which Extract also enforces); TotalCompressed is the sum of
	// all entries' compressed sizes.
	TotalUncompressed, TotalCompressed int64
	// Names lists the file entries (not directories), sorted.
	Names []string
}

// entry is one accepted central-directory entry.
type entry struct {
	f     *zip.File
	index int    // position in the central directory
	name  string // cleaned: no trailing slash
	dir   bool
	start int64 // where its data starts (after the local header)
	end   int64 // start + compressed size
}

// checked is the result of validate: what Extract needs besides the Summary.
type checked struct {
	entries []entry
	summary *Summary
}

// Validate checks an archive of size bytes read from r against every Rule
// and lim, reading only the end-of-central-directory record, the central
// directory and each entry's fixed-size local header (about one small
// read per entry; give it a local file or memory, not a remote blob).
//
// It returns a *RuleError for the first entry, in central-directory order,
// that breaks a rule; rules about pairs of entries (duplicates, overlaps)
// are attributed to the later entry of the pair. Rules about the whole
// archive (not_zip, entry_count, empty) come before or after all entries.
// Errors reading r are reported as RuleNotZip or RuleCorrupt, since r is
// expected to be the uploaded bytes themselves.
func Validate(r io.ReaderAt, size int64, lim Limits) (*Summary, error) {
	c, err := validate(r, size, lim.withDefaults())
	if err != nil {
		return nil, err
	}
	return c.summary, nil
}

func validate(r io.ReaderAt, size int64, lim Limits) (*checked, error) {
	if size < directoryEndLen {
		return nil, &RuleError{Rule: RuleNotZip, Message: fmt.Sprintf("%d bytes is too short for a ZIP (at least %d)", size, directoryEndLen)}
	}
	end, err := readDirectoryEnd(r, size)
	if err != nil {
		return nil, &RuleError{Rule: RuleNotZip, Message: "reading end of central directory", Err: err}
	}
	// Count the central-directory headers before archive/zip allocates a
	// File for each of them: the declared count is only 16 bits and
	// archive/zip reads headers until the signature stops matching.
	if err := countEntries(r, size, end.offset, lim.MaxEntries); err != nil {
		return nil, err
	}
	zr, err := zip.NewReader(r, size)
	// With GODEBUG=zipinsecurepath=0, archive/zip reports insecure names
	// with a usable reader. Our own rules below decide about names.
	if err != nil && !(errors.Is(err, zip.ErrInsecurePath) && zr != nil) {
		return nil, &RuleError{Rule: RuleNotZip, Message: "reading central directory", Err: err}
	}
	if len(zr.File) > lim.MaxEntries { // belt and braces: countEntries saw the same headers
		return nil, &RuleError{Rule: RuleEntryCount, Entry: zr.File[lim.MaxEntries].Name,
			Message: fmt.Sprintf("archive has more than %d entries", lim.MaxEntries)}
	}

	sum := &Summary{}
	entries := make([]entry, 0, len(zr.File))
	var total uint64
	// firstErr is the first per-entry failure in central-directory order;
	// only entries before it are checked for pairwise rules below.
	var firstErr *RuleError
	firstIndex := len(zr.File)
	for i, f := range zr.File {
		e, rerr := checkEntry(f, i, lim, end.offset, &total)
		if rerr != nil {
			firstErr, firstIndex = rerr, i
			break
		}
		entries = append(entries, e)
		sum.TotalCompressed += int64(f.CompressedSize64) // bounded by the file size
		if e.dir {
			sum.Dirs++
		} else {
			sum.Files++
			sum.Names = append(sum.Names, e.name)
		}
	}
	if i, rerr := checkNames(entries); rerr != nil && i < firstIndex {
		firstErr, firstIndex = rerr, i
	}
	if i, rerr := checkOverlaps(entries); rerr != nil && i < firstIndex {
		firstErr = rerr
	}
	if firstErr != nil {
		return nil, firstErr
	}
	if sum.Files == 0 {
		msg := "archive has no entries"
		if sum.Dirs > 0 {
			msg = "archive has only directories, no files"
		}
		return nil, &RuleError{Rule: RuleEmpty, Message: msg}
	}
	sum.TotalUncompressed = int64(total) // <= MaxTotalUncompressed
	slices.Sort(sum.Names)
	return &checked{entries: entries, summary: sum}, nil
}

// checkEntry applies every rule that concerns one entry alone, in a fixed
// order, adding its declared size to *total.
func checkEntry(f *zip.File, index int, lim Limits, cdStart int64, total *uint64) (entry, *RuleError) {
	fail := func(rule Rule, format string, args ...any) (entry, *RuleError) {
		return entry{}, &RuleError{Rule: rule, Entry: f.Name, Message: fmt.Sprintf(format, args...)}
	}
	if rule, msg := checkName(f.Name, lim.MaxNameLength); rule != "" {
		return fail(rule, "%s", msg)
	}
	if f.Flags&0x1 != 0 || f.Method == methodAES {
		return fail(RuleEncrypted, "entry is encrypted")
	}
	if f.Method != zip.Store && f.Method != zip.Deflate {
		return fail(RuleUnsupportedMethod, "compression method %d is not supported (only store 0 and deflate 8)", f.Method)
	}
	dir, rule, msg := checkType(f)
	if rule != "" {
		return fail(rule, "%s", msg)
	}
	if dir && f.UncompressedSize64 != 0 {
		return fail(RuleCorrupt, "directory entry declares %d bytes of content", f.UncompressedSize64)
	}
	if f.Method == zip.Store && f.CompressedSize64 != f.UncompressedSize64 {
		return fail(RuleCorrupt, "stored entry declares %d bytes compressed but %d uncompressed", f.CompressedSize64, f.UncompressedSize64)
	}
	maxTotal := uint64(lim.MaxTotalUncompressed)
	if f.UncompressedSize64 > maxTotal {
		return fail(RuleEntrySize, "entry declares %d bytes uncompressed, limit is %d", f.UncompressedSize64, maxTotal)
	}
	if f.UncompressedSize64 > uint64(lim.RatioMinSize) {
		if f.CompressedSize64 == 0 {
			return fail(RuleCompressionRatio, "entry declares %d bytes from no compressed data", f.UncompressedSize64)
		}
		if ratio := float64(f.UncompressedSize64) / float64(f.CompressedSize64); ratio > lim.MaxEntryRatio {
			return fail(RuleCompressionRatio, "compression ratio %.0f exceeds %.0f", ratio, lim.MaxEntryRatio)
		}
	}
	// Both terms are <= maxTotal < 2^63, so the sum cannot overflow.
	if *total += f.UncompressedSize64; *total > maxTotal {
		return fail(RuleTotalSize, "files add up to more than %d bytes uncompressed", maxTotal)
	}

	start, err := f.DataOffset() // reads the 30-byte local header
	if err != nil {
		return entry{}, &RuleError{Rule: RuleCorrupt, Entry: f.Name, Message: "reading local header", Err: err}
	}
	if start < 0 || start > cdStart || f.CompressedSize64 > uint64(cdStart-start) {
		return fail(RuleOverlap, "entry data [%d, +%d) extends past the central directory at %d", start, f.CompressedSize64, cdStart)
	}
	return entry{
		f:     f,
		index: index,
		name:  strings.TrimSuffix(f.Name, "/"),
		dir:   dir,
		start: start,
		end:   start + int64(f.CompressedSize64),
	}, nil
}

// checkName applies the path rules to a raw entry name. It returns the
// broken rule and a message, or "" when the name is acceptable.
func checkName(name string, maxLen int) (Rule, string) {
	switch {
	case name == "":
		return RuleNameInvalid, "name is empty"
	case len(name) > maxLen:
		return RuleNameInvalid, fmt.Sprintf("name is %d bytes long, limit is %d", len(name), maxLen)
	case !utf8.ValidString(name):
		return RuleNameInvalid, "name is not valid UTF-8"
	case strings.ContainsFunc(name, unicode.IsControl):
		return RuleNameInvalid, "name contains a NUL or control character"
	case strings.Contains(name, `\`):
		return RuleBackslash, `name contains a backslash`
	case strings.HasPrefix(name, "/"):
		return RuleAbsolutePath, "path is absolute"
	}
	segments := strings.Split(strings.TrimSuffix(name, "/"), "/")
	if strings.Contains(segments[0], ":") {
		return RuleDriveLetter, `first path segment contains ":" (drive letter or stream)`
	}
	for _, s := range segments {
		switch {
		case s == "..":
			return RuleParentPath, `path contains ".."`
		case s == ".":
			return RuleNameInvalid, `path contains a "." segment`
		case s == "":
			return RuleNameInvalid, "path contains an empty segment"
		case len(s) > maxSegmentLength:
			return RuleNameInvalid, fmt.Sprintf("path segment is %d bytes long, limit is %d", len(s), maxSegmentLength)
		}
	}
	return "", ""
}

// Unix file-type bits of the mode stored in the upper 16 bits of a
// central-directory entry's external attributes.
const (
	unixTypeMask    = 0o170000
	unixTypeRegular = 0o100000
	unixTypeDir     = 0o040000
	unixTypeSymlink = 0o120000

	creatorUnix   = 3  // "version made by" host: UNIX
	creatorMacOSX = 19 // "version made by" host: OS X (Darwin)

	methodAES = 99 // WinZip AES encryption, always encrypted
)

// checkType decides whether an entry is a directory and rejects entries
// that are neither regular files nor directories.
//
// The upper 16 bits of the external attributes hold a Unix mode when the
// creator is Unix or macOS, and also when other creators (7-Zip on
// Windows) set them; a non-zero value is therefore read as a Unix mode
// whatever the creator, which is stricter than archive/zip's FileMode.
func checkType(f *zip.File) (dir bool, rule Rule, msg string) {
	dir = strings.HasSuffix(f.Name, "/") || f.Mode().IsDir()
	unixMode := f.ExternalAttrs >> 16
	creator := f.CreatorVersion >> 8
	if unixMode == 0 && creator != creatorUnix && creator != creatorMacOSX {
		return dir, "", ""
	}
	switch t := unixMode & unixTypeMask; t {
	case 0, unixTypeRegular:
		// A trailing slash makes a directory whatever the mode says, as in
		// archive/zip; some writers store directories with a file mode.
		return dir, "", ""
	case unixTypeDir:
		return true, "", ""
	case unixTypeSymlink:
		return dir, RuleSymlink, "entry is a symbolic link"
	default:
		return dir, RuleSpecialFile, fmt.Sprintf("entry is not a regular file or directory (mode %s, type %#o)", f.Mode(), t)
	}
}

// checkNames finds duplicate names ("a" twice, "a" and "a/") and files
// used as directories ("a" and "a/b"). It returns the central-directory
// index of the first entry (in that order) that completes such a pair.
//
// It sorts the names instead of inserting every parent prefix in a set:
// 20,000 names nested 500 deep would make millions of prefixes.
func checkNames(entries []entry) (int, *RuleError) {
	sorted := make([]*entry, len(entries))
	for i := range entries {
		sorted[i] = &entries[i]
	}
	slices.SortFunc(sorted, func(a, b *entry) int {
		return cmp.Or(strings.Compare(a.name, b.name), cmp.Compare(a.index, b.index))
	})
	best, bestErr := -1, (*RuleError)(nil)
	consider := func(later, earlier *entry, msg string) {
		if best < 0 || later.index < best {
			best = later.index
			bestErr = &RuleError{Rule: RuleDuplicateName, Entry: later.f.Name,
				Message: fmt.Sprintf(msg, earlier.f.Name)}
		}
	}
	for i, e := range sorted {
		// Equal names are adjacent and sorted by index: the second one of
		// a group is the first duplicate in central-directory order.
		if i > 0 && sorted[i-1].name == e.name && (i < 2 || sorted[i-2].name != e.name) {
			consider(e, sorted[i-1], "same path as entry %q")
		}
		if e.dir {
			continue
		}
		// Names below file e ("e/...") are contiguous in sorted order, in
		// [e/, e0) since '0' follows '/'. The first of them in central-
		// directory order is paired with e.
		lo, _ := slices.BinarySearchFunc(sorted, e.name+"/", func(x *entry, t string) int { return strings.Compare(x.name, t) })
		hi, _ := slices.BinarySearchFunc(sorted, e.name+"0", func(x *entry, t string) int { return strings.Compare(x.name, t) })
		if lo >= hi {
			continue
		}
		under := sorted[lo]
		for _, x := range sorted[lo+1 : hi] {
			if x.index < under.index {
				under = x
			}
		}
		if under.index > e.index {
			consider(under, e, "path is below entry %q, which is a file")
		} else {
			consider(e, under, "file has the same path as a directory implied by entry %q")
		}
	}
	return best, bestErr
}

// checkOverlaps finds entries whose data ranges overlap, the signature of
// the "overlapping files" zip bomb (many entries sharing one stream). It
// returns the central-directory index of the first entry, in that order,
// that overlaps an earlier one.
//
// Ranges are swept by start offset; the heap holds the ranges started so
// far, smallest index on top, and drops those that end before the current
// start. The top is then the earliest entry still overlapping.
func checkOverlaps(entries []entry) (int, *RuleError) {
	ranges := make([]*entry, 0, len(entries))
	for i := range entries {
		if entries[i].end > entries[i].start {
			ranges = append(ranges, &entries[i])
		}
	}
	slices.SortFunc(ranges, func(a, b *entry) int {
		return cmp.Or(cmp.Compare(a.start, b.start), cmp.Compare(a.index, b.index))
	})
	best, bestErr := -1, (*RuleError)(nil)
	var active entryHeap
	for _, e := range ranges {
		for len(active) > 0 && active[0].end <= e.start {
			heap.Pop(&active)
		}
		if len(active) > 0 {
			other := active[0]
			later, earlier := e, other
			if other.index > e.index {
				later, earlier = other, e
			}
			if best < 0 || later.index < best {
				best = later.index
				bestErr = &RuleError{Rule: RuleOverlap, Entry: later.f.Name,
					Message: fmt.Sprintf("entry data [%d, %d) overlaps entry %q [%d, %d)",
						later.start, later.end, earlier.f.Name, earlier.start, earlier.end)}
			}
		}
		heap.Push(&active, e)
	}
	return best, bestErr
}

// entryHeap is a min-heap of entries by central-directory index.
type entryHeap []*entry

func (h entryHeap) Len() int           { return len(h) }
func (h entryHeap) Less(i, j int) bool { return h[i].index < h[j].index }
func (h entryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *entryHeap) Push(x any)        { *h = append(*h, x.(*entry)) }
func (h *entryHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// Central-directory record layout (APPNOTE.TXT 4.3.12 - 4.3.16).
const (
	directoryEndLen          = 22
	directoryEndSignature    = 0x06054b50
	directory64LocLen        = 20
	directory64LocSignature  = 0x07064b50
	directory64EndLen        = 56
	directory64EndSignature  = 0x06064b50
	directoryHeaderLen       = 46
	directoryHeaderSignature = 0x02014b50
)

// directoryEnd is what Validate needs from the end-of-central-directory
// record: where the central directory starts.
type directoryEnd struct {
	offset int64 // start of the central directory
}

// readDirectoryEnd finds the end-of-central-directory record (and the
// ZIP64 one if the record says so) the same way archive/zip does, and
// returns where the central directory starts.
//
// archive/zip tolerates a "base offset" (bytes prepended to the archive,
// as in self-extracting executables); we reject it: the central directory
// must end exactly where the end records begin, so the central directory
// start is known and data ranges can be checked against it.
func readDirectoryEnd(r io.ReaderAt, size int64) (directoryEnd, error) {
	var buf []byte
	var endOffset int64 = -1
	for _, n := range []int64{1024, 65 * 1024} {
		n = min(n, size)
		buf = make([]byte, n)
		if _, err := r.ReadAt(buf, size-n); err != nil && err != io.EOF {
			return directoryEnd{}, err
		}
		if p := findSignature(buf); p >= 0 {
			buf = buf[p:]
			endOffset = size - n + int64(p)
			break
		}
		if n == size {
			break
		}
	}
	if endOffset < 0 {
		return directoryEnd{}, zip.ErrFormat
	}
	le := binary.LittleEndian
	records := uint64(le.Uint16(buf[10:]))
	dirSize := uint64(le.Uint32(buf[12:]))
	dirOffset := uint64(le.Uint32(buf[16:]))
	if records == 0xffff || dirSize == 0xffff || dirOffset == 0xffffffff {
		p, err := findDirectory64End(r, endOffset)
		if err != nil {
			return directoryEnd{}, err
		}
		if p >= 0 {
			b := make([]byte, directory64EndLen)
			if _, err := r.ReadAt(b, p); err != nil {
				return directoryEnd{}, err
			}
			if le.Uint32(b) != directory64EndSignature {
				return directoryEnd{}, zip.ErrFormat
			}
			endOffset = p
			dirSize = le.Uint64(b[40:])
			dirOffset = le.Uint64(b[48:])
		}
	}
	if dirSize > uint64(endOffset) || dirOffset != uint64(endOffset)-dirSize {
		return directoryEnd{}, fmt.Errorf("central directory claims [%d, +%d) but ends at %d (prepended data or inconsistent offsets): %w",
			dirOffset, dirSize, endOffset, zip.ErrFormat)
	}
	return directoryEnd{offset: int64(dirOffset)}, nil
}

// findSignature returns the offset of the last end-of-central-directory
// signature in b whose comment fits in b, or -1; like archive/zip, it
// gives up at the last signature whose comment is truncated.
func findSignature(b []byte) int {
	for i := len(b) - directoryEndLen; i >= 0; i-- {
		if binary.LittleEndian.Uint32(b[i:]) == directoryEndSignature {
			n := int(binary.LittleEndian.Uint16(b[i+directoryEndLen-2:]))
			if n+directoryEndLen+i > len(b) {
				return -1
			}
			return i
		}
	}
	return -1
}

// findDirectory64End returns the offset of the ZIP64 end record named by
// the locator just before the end record, or -1 if there is none.
func findDirectory64End(r io.ReaderAt, endOffset int64) (int64, error) {
	loc := endOffset - directory64LocLen
	if loc < 0 {
		return -1, nil
	}
	b := make([]byte, directory64LocLen)
	if _, err := r.ReadAt(b, loc); err != nil {
		return -1, err
	}
	le := binary.LittleEndian
	if le.Uint32(b) != directory64LocSignature || le.Uint32(b[4:]) != 0 || le.Uint32(b[16:]) != 1 {
		return -1, nil
	}
	p := le.Uint64(b[8:])
	if p > uint64(endOffset) {
		return -1, zip.ErrFormat
	}
	return int64(p), nil
}

// countEntries walks the central-directory headers from start the way
// archive/zip will (until a header is incomplete or its signature does not
// match) and fails with RuleEntryCount as soon as there are more than limit.
func countEntries(r io.ReaderAt, size, start int64, limit int) error {
	br := bufio.NewReader(io.NewSectionReader(r, start, size-start))
	var h [directoryHeaderLen]byte
	for n := 0; ; n++ {
		if _, err := io.ReadFull(br, h[:]); err != nil {
			return nil
		}
		if binary.LittleEndian.Uint32(h[:]) != directoryHeaderSignature {
			return nil
		}
		nameLen := int(binary.LittleEndian.Uint16(h[28:]))
		rest := nameLen + int(binary.LittleEndian.Uint16(h[30:])) + int(binary.LittleEndian.Uint16(h[32:]))
		if n == limit {
			name := make([]byte, nameLen)
			got, _ := io.ReadFull(br, name) // best effort: the name is only for the message
			return &RuleError{Rule: RuleEntryCount, Entry: string(name[:got]),
				Message: fmt.Sprintf("archive has more than %d entries", limit)}
		}
		if _, err := br.Discard(rest); err != nil {
			return nil
		}
	}
}

// Extract validates the archive like Validate and extracts it under dest,
// an existing directory that should be empty (files are created with
// O_EXCL, so an existing file with an entry's name is an error).
//
// All file system access goes through os.OpenRoot(dest), so no entry can
// land outside dest, even through symbolic links planted in dest. Files
// are created with mode 0o644 and directories 0o755 (less the umask).
// Entries are streamed in central-directory order through a limiter that
// counts the bytes actually produced: an entry yielding more bytes than
// its header declares fails with RuleEntrySize, and the running total is
// held to Limits.MaxTotalUncompressed (RuleTotalSize) before each write,
// so a lying header can neither exceed the caps on disk nor make Extract
// inflate more than one copy buffer past them. Invalid deflate data,
// short entries and CRC-32 mismatches fail with RuleCorrupt. ctx is
// checked between entries and on every buffer copied.
//
// On failure, whatever was extracted so far is left in dest: dest is the
// caller's workspace, and the caller removes it.
func Extract(ctx context.Context, r io.ReaderAt, size int64, dest string, lim Limits) (*Summary, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("archive: extract: %w", err)
	}
	lim = lim.withDefaults()
	c, err := validate(r, size, lim)
	if err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(dest)
	if err != nil {
		return nil, fmt.Errorf("archive: extract: open destination: %w", err)
	}
	defer root.Close()

	budget := lim.MaxTotalUncompressed
	buf := make([]byte, copyBufferSize)
	for i := range c.entries {
		e := &c.entries[i]
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("archive: extract: %w", err)
		}
		if e.dir {
			if err := root.MkdirAll(e.name, 0o755); err != nil {
				return nil, fmt.Errorf("archive: extract %q: %w", e.f.Name, err)
			}
			continue
		}
		if err := extractFile(ctx, root, e, &budget, buf); err != nil {
			if _, ok := errors.AsType[*RuleError](err); ok {
				return nil, err
			}
			return nil, fmt.Errorf("archive: extract %q: %w", e.f.Name, err)
		}
	}
	return c.summary, nil
}

// extractFile writes one file entry, streaming it through a limitWriter.
func extractFile(ctx context.Context, root *os.Root, e *entry, budget *int64, buf []byte) error {
	if parent := path.Dir(e.name); parent != "." {
		if err := root.MkdirAll(parent, 0o755); err != nil {
			return err
		}
	}
	raw, err := e.f.OpenRaw()
	if err != nil {
		return &RuleError{Rule: RuleCorrupt, Entry: e.f.Name, Message: "opening entry data", Err: err}
	}
	src := raw
	if e.f.Method == zip.Deflate {
		fr := flate.NewReader(raw)
		defer fr.Close()
		src = fr
	}
	out, err := root.OpenFile(e.name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	w := &limitWriter{ctx: ctx, w: out, entry: e, left: int64(e.f.UncompressedSize64), budget: budget, crc: crc32.NewIEEE()}
	_, err = io.CopyBuffer(w, &entryReader{ctx: ctx, r: src, entry: e}, buf)
	if cerr := out.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if w.written != e.f.UncompressedSize64 {
		return &RuleError{Rule: RuleCorrupt, Entry: e.f.Name,
			Message: fmt.Sprintf("entry yields %d bytes, header declares %d", w.written, e.f.UncompressedSize64)}
	}
	if got := w.crc.Sum32(); got != e.f.CRC32 {
		return &RuleError{Rule: RuleCorrupt, Entry: e.f.Name,
			Message: fmt.Sprintf("CRC-32 is %08x, header declares %08x", got, e.f.CRC32)}
	}
	return nil
}

// entryReader reads an entry's (decompressed) data, checking ctx before
// every read and reporting read errors, which can only come from the
// archive's content, as RuleCorrupt.
type entryReader struct {
	ctx   context.Context
	r     io.Reader
	entry *entry
}

func (r *entryReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		err = &RuleError{Rule: RuleCorrupt, Entry: r.entry.f.Name, Message: "reading entry data", Err: err}
	}
	return n, err
}

// limitWriter is the counting limiter: it refuses, before writing, any
// chunk that would take the entry past its declared size or the archive
// past its budget, so the bytes on disk never exceed either.
type limitWriter struct {
	ctx     context.Context
	w       io.Writer
	entry   *entry
	left    int64  // bytes this entry may still write
	budget  *int64 // bytes the whole archive may still write
	written uint64
	crc     hash.Hash32
}

func (w *limitWriter) Write(p []byte) (int, error) {
	if err := w.ctx.Err(); err != nil {
		return 0, err
	}
	n := int64(len(p))
	if n > w.left {
		return 0, &RuleError{Rule: RuleEntrySize, Entry: w.entry.f.Name,
			Message: fmt.Sprintf("entry yields more than the %d bytes its header declares", w.entry.f.UncompressedSize64)}
	}
	if n > *w.budget {
		return 0, &RuleError{Rule: RuleTotalSize, Entry: w.entry.f.Name,
			Message: "files yield more than the total uncompressed limit"}
	}
	m, err := w.w.Write(p)
	w.left -= int64(m)
	*w.budget -= int64(m)
	w.written += uint64(m)
	w.crc.Write(p[:m])
	return m, err
}
