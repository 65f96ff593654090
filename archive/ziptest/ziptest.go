// Package ziptest builds ZIP archives for tests, including the malformed and
// malicious ones archive/zip.Writer refuses to write (lying sizes, entries
// sharing or nesting local headers). The archive package's tests and the
// gateway's upload tests share it, so both judge the same bytes.
package ziptest

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"hash/crc32"
	"io/fs"
	"testing"
)

// Entry is one entry of a ZIP built by Build.
type Entry struct {
	Header zip.FileHeader
	Body   []byte
	// Raw writes with CreateRaw: Header's CRC32, sizes, flags and method are
	// used verbatim and Body is the already-compressed data.
	Raw bool
}

// File is a deflated regular file.
func File(name, body string) Entry {
	return Entry{Header: zip.FileHeader{Name: name, Method: zip.Deflate}, Body: []byte(body)}
}

// Dir is a directory entry; name should end in "/".
func Dir(name string) Entry {
	return Entry{Header: zip.FileHeader{Name: name, Method: zip.Store}}
}

// WithMode sets the entry's Unix mode (and makes the creator Unix).
func WithMode(e Entry, m fs.FileMode) Entry {
	e.Header.SetMode(m)
	return e
}

// Stored is a raw stored entry with correct CRC and sizes; edit may then
// change any header field (flags, method, sizes) to make it lie.
func Stored(name string, data []byte, edit func(*zip.FileHeader)) Entry {
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
	return Entry{Header: h, Body: data, Raw: true}
}

// DeflatedRaw is a raw deflate entry whose compressed data is
// deflate(data) but whose header declares declared uncompressed bytes.
func DeflatedRaw(t testing.TB, name string, data []byte, declared uint64) Entry {
	comp := Deflate(t, data)
	return Entry{
		Header: zip.FileHeader{
			Name:               name,
			Method:             zip.Deflate,
			CRC32:              crc32.ChecksumIEEE(data),
			CompressedSize64:   uint64(len(comp)),
			UncompressedSize64: declared,
		},
		Body: comp,
		Raw:  true,
	}
}

// Deflate compresses data as a ZIP entry's deflate stream.
func Deflate(t testing.TB, data []byte) []byte {
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

// Build writes entries with archive/zip.Writer.
func Build(t testing.TB, entries ...Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		h := e.Header
		create := zw.CreateHeader
		if e.Raw {
			create = zw.CreateRaw
		}
		w, err := create(&h)
		if err != nil {
			t.Fatalf("create %q: %v", h.Name, err)
		}
		if _, err := w.Write(e.Body); err != nil {
			t.Fatalf("write %q: %v", h.Name, err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Hand writes a ZIP byte by byte, for layouts archive/zip.Writer refuses
// to produce: central-directory entries pointing at shared or nested local
// headers, or declaring sizes the data does not have.
type Hand struct {
	body    bytes.Buffer // local headers and data
	central bytes.Buffer
	records int
}

// CDEntry is one central-directory record of a Hand archive.
type CDEntry struct {
	Name         string
	Method       uint16
	CRC          uint32
	CSize, USize uint32
	Offset       uint32 // local header offset
}

// LocalRecord returns a local header followed by data.
func LocalRecord(name string, method uint16, crc, csize, usize uint32, data []byte) []byte {
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

// Raw appends bytes to the local region and returns their offset.
func (z *Hand) Raw(b []byte) uint32 {
	off := uint32(z.body.Len())
	z.body.Write(b)
	return off
}

// Add appends a central-directory record.
func (z *Hand) Add(e CDEntry) {
	le := binary.LittleEndian
	b := &z.central
	b.Write(le.AppendUint32(nil, 0x02014b50))
	b.Write(le.AppendUint16(nil, 3<<8|20)) // made by Unix, 2.0
	b.Write(le.AppendUint16(nil, 20))      // version needed
	b.Write(le.AppendUint16(nil, 0))       // flags
	b.Write(le.AppendUint16(nil, e.Method))
	b.Write(le.AppendUint16(nil, 0))
	b.Write(le.AppendUint16(nil, 0x21))
	b.Write(le.AppendUint32(nil, e.CRC))
	b.Write(le.AppendUint32(nil, e.CSize))
	b.Write(le.AppendUint32(nil, e.USize))
	b.Write(le.AppendUint16(nil, uint16(len(e.Name))))
	b.Write(le.AppendUint16(nil, 0))            // extra
	b.Write(le.AppendUint16(nil, 0))            // comment
	b.Write(le.AppendUint16(nil, 0))            // disk
	b.Write(le.AppendUint16(nil, 0))            // internal attrs
	b.Write(le.AppendUint32(nil, 0o100644<<16)) // external attrs
	b.Write(le.AppendUint32(nil, e.Offset))
	b.WriteString(e.Name)
	z.records++
}

// Bytes returns the finished archive: local region, central directory,
// end record.
func (z *Hand) Bytes() []byte {
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

// FifieldOverlap is the classic overlapping-files bomb: one local header
// and stored data, and two central-directory entries ("a" and "b")
// pointing at it.
func FifieldOverlap() []byte {
	data := bytes.Repeat([]byte("shared data "), 10)
	crc := crc32.ChecksumIEEE(data)
	n := uint32(len(data))
	var z Hand
	off := z.Raw(LocalRecord("a", zip.Store, crc, n, n, data))
	z.Add(CDEntry{Name: "a", Method: zip.Store, CRC: crc, CSize: n, USize: n, Offset: off})
	z.Add(CDEntry{Name: "b", Method: zip.Store, CRC: crc, CSize: n, USize: n, Offset: off})
	return z.Bytes()
}

// NestedOverlap stores entry "b"'s whole local record as the data of entry
// "a": "b" lies inside "a" (the quoted-overlap construction).
func NestedOverlap() []byte {
	inner := []byte("inner data")
	innerCRC := crc32.ChecksumIEEE(inner)
	bRec := LocalRecord("b", zip.Store, innerCRC, uint32(len(inner)), uint32(len(inner)), inner)
	aCRC := crc32.ChecksumIEEE(bRec)
	var z Hand
	off := z.Raw(LocalRecord("a", zip.Store, aCRC, uint32(len(bRec)), uint32(len(bRec)), bRec))
	z.Add(CDEntry{Name: "a", Method: zip.Store, CRC: aCRC, CSize: uint32(len(bRec)), USize: uint32(len(bRec)), Offset: off})
	z.Add(CDEntry{Name: "b", Method: zip.Store, CRC: innerCRC, CSize: uint32(len(inner)), USize: uint32(len(inner)), Offset: off + 30 + 1})
	return z.Bytes()
}
