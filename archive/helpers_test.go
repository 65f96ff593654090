package archive

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io/fs"
	"testing"
)

// fixture is one entry of a ZIP built by buildZip.
type fixture struct {
	hdr  zip.FileHeader
	body []byte
	// raw: write with CreateRaw, so hdr's CRC32, sizes, flags and method
	// are used verbatim and body is the already-compressed data.
	raw bool
}

// file is a deflated regular file.
func file(name, body string) fixture {
	return fixture{hdr: zip.FileHeader{Name: name, Method: zip.Deflate}, body: []byte(body)}
}

// dir is a directory entry; name should end in "/".
func dir(name string) fixture {
	return fixture{hdr: zip.FileHeader{Name: name, Method: zip.Store}}
}

// withMode sets the entry's Unix mode (and makes the creator Unix).
func withMode(f fixture, m fs.FileMode) fixture {
	f.hdr.SetMode(m)
	return f
}

// stored is a raw stored entry with correct CRC and sizes; edit may then
// change any header field (flags, method, sizes) to make it lie.
func stored(name string, data []byte, edit func(*zip.FileHeader)) fixture {
	h := zip.FileHeader{
		Name:               name,
		Method:             zip.Store,
		CRC32:              crc32.ChecksumIEEE(data),
		CompressedSize64:   uint64(len(data)),
		UncompressedSize64: uint64(len(data)),
	}
	if edit != nil {
		edit(&h)
	}
	return fixture{hdr: h, body: data, raw: true}
}

// deflatedRaw is a raw deflate entry whose compressed data is
// deflate(data) but whose header declares declared uncompressed bytes.
func deflatedRaw(t testing.TB, name string, data []byte, declared uint64) fixture {
	comp := deflate(t, data)
	return fixture{
		hdr: zip.FileHeader{
			Name:               name,
			Method:             zip.Deflate,
			CRC32:              crc32.ChecksumIEEE(data),
			CompressedSize64:   uint64(len(comp)),
			UncompressedSize64: declared,
		},
		body: comp,
		raw:  true,
	}
}

func deflate(t testing.TB, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := flate.NewWriter(&b, flate.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// buildZip writes entries with archive/zip.Writer.
func buildZip(t testing.TB, entries ...fixture) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		create := zw.CreateHeader
		if e.raw {
			create = zw.CreateRaw
		}
		w, err := create(&h)
		if err != nil {
			t.Fatalf("create %q: %v", h.Name, err)
		}
		if _, err := w.Write(e.body); err != nil {
			t.Fatalf("write %q: %v", h.Name, err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// handZip writes a ZIP byte by byte, for layouts archive/zip.Writer
// refuses to produce: central-directory entries pointing at shared or
// nested local headers, or declaring sizes the data does not have.
type handZip struct {
	body    bytes.Buffer // local headers and data
	central bytes.Buffer
	records int
}

// cdEntry is one central-directory record of a handZip.
type cdEntry struct {
	name         string
	method       uint16
	crc          uint32
	csize, usize uint32
	offset       uint32 // local header offset
}

// localRecord returns a local header followed by data.
func localRecord(name string, method uint16, crc, csize, usize uint32, data []byte) []byte {
	var b bytes.Buffer
	le := binary.LittleEndian
	b.Write(le.AppendUint32(nil, 0x04034b50))
	b.Write(le.AppendUint16(nil, 20))     // version needed
	b.Write(le.AppendUint16(nil, 0))      // flags
	b.Write(le.AppendUint16(nil, method)) // method
	b.Write(le.AppendUint16(nil, 0))      // time
	b.Write(le.AppendUint16(nil, 0x21))   // date (1980-01-01)
	b.Write(le.AppendUint32(nil, crc))
	b.Write(le.AppendUint32(nil, csize))
	b.Write(le.AppendUint32(nil, usize))
	b.Write(le.AppendUint16(nil, uint16(len(name))))
	b.Write(le.AppendUint16(nil, 0)) // extra length
	b.WriteString(name)
	b.Write(data)
	return b.Bytes()
}

// raw appends bytes to the local region and returns their offset.
func (z *handZip) raw(b []byte) uint32 {
	off := uint32(z.body.Len())
	z.body.Write(b)
	return off
}

// add appends a central-directory record.
func (z *handZip) add(e cdEntry) {
	le := binary.LittleEndian
	b := &z.central
	b.Write(le.AppendUint32(nil, 0x02014b50))
	b.Write(le.AppendUint16(nil, 3<<8|20)) // made by Unix, 2.0
	b.Write(le.AppendUint16(nil, 20))      // version needed
	b.Write(le.AppendUint16(nil, 0))       // flags
	b.Write(le.AppendUint16(nil, e.method))
	b.Write(le.AppendUint16(nil, 0))
	b.Write(le.AppendUint16(nil, 0x21))
	b.Write(le.AppendUint32(nil, e.crc))
	b.Write(le.AppendUint32(nil, e.csize))
	b.Write(le.AppendUint32(nil, e.usize))
	b.Write(le.AppendUint16(nil, uint16(len(e.name))))
	b.Write(le.AppendUint16(nil, 0))            // extra
	b.Write(le.AppendUint16(nil, 0))            // comment
	b.Write(le.AppendUint16(nil, 0))            // disk
	b.Write(le.AppendUint16(nil, 0))            // internal attrs
	b.Write(le.AppendUint32(nil, 0o100644<<16)) // external attrs
	b.Write(le.AppendUint32(nil, e.offset))
	b.WriteString(e.name)
	z.records++
}

// bytes returns the finished archive: local region, central directory,
// end record.
func (z *handZip) bytes() []byte {
	le := binary.LittleEndian
	var out bytes.Buffer
	out.Write(z.body.Bytes())
	cdOffset := uint32(out.Len())
	out.Write(z.central.Bytes())
	out.Write(le.AppendUint32(nil, 0x06054b50))
	out.Write(le.AppendUint16(nil, 0))
	out.Write(le.AppendUint16(nil, 0))
	out.Write(le.AppendUint16(nil, uint16(z.records)))
	out.Write(le.AppendUint16(nil, uint16(z.records)))
	out.Write(le.AppendUint32(nil, uint32(z.central.Len())))
	out.Write(le.AppendUint32(nil, cdOffset))
	out.Write(le.AppendUint16(nil, 0))
	return out.Bytes()
}

// fifieldZip is the classic overlap: one local header and stored data,
// and two central-directory entries ("a" and "b") pointing at it.
func fifieldZip() []byte {
	data := bytes.Repeat([]byte("shared data "), 10)
	crc := crc32.ChecksumIEEE(data)
	n := uint32(len(data))
	var z handZip
	off := z.raw(localRecord("a", zip.Store, crc, n, n, data))
	z.add(cdEntry{name: "a", method: zip.Store, crc: crc, csize: n, usize: n, offset: off})
	z.add(cdEntry{name: "b", method: zip.Store, crc: crc, csize: n, usize: n, offset: off})
	return z.bytes()
}

// nestedOverlapZip stores entry "b"'s whole local record as the data of
// entry "a": "b" lies inside "a" (the quoted-overlap construction).
func nestedOverlapZip() []byte {
	inner := []byte("inner data")
	innerCRC := crc32.ChecksumIEEE(inner)
	bRec := localRecord("b", zip.Store, innerCRC, uint32(len(inner)), uint32(len(inner)), inner)
	aCRC := crc32.ChecksumIEEE(bRec)
	var z handZip
	off := z.raw(localRecord("a", zip.Store, aCRC, uint32(len(bRec)), uint32(len(bRec)), bRec))
	z.add(cdEntry{name: "a", method: zip.Store, crc: aCRC, csize: uint32(len(bRec)), usize: uint32(len(bRec)), offset: off})
	z.add(cdEntry{name: "b", method: zip.Store, crc: innerCRC, csize: uint32(len(inner)), usize: uint32(len(inner)), offset: off + 30 + 1})
	return z.bytes()
}

// webProject is a normal nested web project.
func webProject() []fixture {
	return []fixture{
		file("package.json", `{"name":"site","scripts":{"build":"vite build"}}`),
		file("index.html", "<!doctype html><script type=module src=/src/main.js></script>"),
		dir("src/"),
		file("src/main.js", "import './style.css'\nconsole.log('hi')\n"),
		file("src/style.css", "body { margin: 0 }\n"),
		dir("src/components/"),
		file("src/components/App.jsx", "export default () => <h1>Hello</h1>\n"),
		file("public/favicon.ico", string([]byte{0, 0, 1, 0, 1, 0, 16, 16, 0xff, 0xfe})),
		file("public/img/logo.svg", `<svg xmlns="http://www.w3.org/2000/svg"/>`),
		file("README.md", "# site\n"),
		dir("empty/"),
	}
}

// wantRule fails unless err is a *RuleError for rule naming entry, whose
// status is status.
func wantRule(t *testing.T, err error, rule Rule, entry string, status int) {
	t.Helper()
	var re *RuleError
	if !errors.As(err, &re) {
		t.Fatalf("error = %v (%T), want *RuleError %s", err, err, rule)
	}
	if re.Rule != rule || re.Entry != entry {
		t.Fatalf("got rule %s entry %q (%v), want rule %s entry %q", re.Rule, re.Entry, err, rule, entry)
	}
	if got := re.Rule.Status(); got != status {
		t.Fatalf("status = %d, want %d", got, status)
	}
	if !IsRule(err, rule) {
		t.Fatalf("IsRule(%v, %s) = false", err, rule)
	}
}

// reject validates data and checks the rejection.
func reject(t *testing.T, data []byte, lim Limits, rule Rule, entry string, status int) {
	t.Helper()
	sum, err := Validate(bytes.NewReader(data), int64(len(data)), lim)
	if err == nil {
		t.Fatalf("Validate accepted (%+v), want rule %s on %q", sum, rule, entry)
	}
	if sum != nil {
		t.Fatalf("Validate returned a summary with an error")
	}
	wantRule(t, err, rule, entry, status)
}
