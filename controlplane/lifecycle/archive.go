package lifecycle

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/tenantguard/tenantguard/policy"
)

// An archive is a tar (POSIX ustar) holding, in this order:
//
//	manifest.json              the Manifest
//	tables/<schema.table>.jsonl  per row-isolated table, the tenant's rows, one
//	                           JSON object (PostgreSQL's to_jsonb of the row) a line
//	redis/keys.jsonl           the tenant's keys, one {"key","pttl","dump"} a
//	                           line (base64 key name without the tenant's
//	                           prefix, milliseconds left to live or 0, DUMP payload)
//
// The manifest gives each file's line count and SHA-256; an import checks
// both before loading anything.

// ArchiveFormat names the format in the manifest.
const ArchiveFormat = "tenantguard-tenant-archive/1"

// Manifest describes an archive.
type Manifest struct {
	Format        string          `json:"format"`
	Tenant        string          `json:"tenant"`
	CreatedAt     time.Time       `json:"created_at"`
	Operation     string          `json:"operation"`
	PolicyVersion string          `json:"policy_version"`
	Tables        []ManifestTable `json:"tables"`
	Redis         *ManifestKeys   `json:"redis,omitempty"`
}

// ManifestTable is one table's file.
type ManifestTable struct {
	Name         string `json:"name"`
	TenantColumn string `json:"tenant_column"`
	File         string `json:"file"`
	Rows         int64  `json:"rows"`
	SHA256       string `json:"sha256"`
}

// ManifestKeys is the keys file.
type ManifestKeys struct {
	File      string `json:"file"`
	Namespace string `json:"namespace"`
	Keys      int64  `json:"keys"`
	SHA256    string `json:"sha256"`
}

const (
	manifestName = "manifest.json"
	keysFile     = "redis/keys.jsonl"
	// maxManifest bounds the manifest an import reads.
	maxManifest = 1 << 20
	// maxEntries bounds the files an archive may hold.
	maxEntries = 10000
)

// tableFileRE is what a table file may be called: the table's name as the
// policy spells it (schema.table), with a restricted alphabet so that a
// name never walks out of the directory it is unpacked into.
var tableFileRE = regexp.MustCompile(`^tables/[A-Za-z0-9_$.-]{1,200}\.jsonl$`)

func tableFile(name string) string { return "tables/" + name + ".jsonl" }

// ErrBadArchive: the archive is malformed or does not match its manifest.
var ErrBadArchive = errors.New("bad archive")

func badArchive(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadArchive, fmt.Sprintf(format, args...))
}

// validate checks the manifest on its own.
func (m *Manifest) validate() error {
	if m.Format != ArchiveFormat {
		return badArchive("format %q, want %q", m.Format, ArchiveFormat)
	}
	if !policy.ValidTenantID(m.Tenant) {
		return badArchive("tenant %q is not a tenant id", m.Tenant)
	}
	seen := map[string]bool{manifestName: true}
	check := func(file string, n int64, sum string) error {
		if seen[file] {
			return badArchive("file %q is named twice", file)
		}
		seen[file] = true
		if n < 0 {
			return badArchive("file %q: negative count", file)
		}
		if b, err := hex.DecodeString(sum); err != nil || len(b) != sha256.Size {
			return badArchive("file %q: sha256 %q is not a SHA-256", file, sum)
		}
		return nil
	}
	if len(m.Tables) > maxEntries {
		return badArchive("%d tables", len(m.Tables))
	}
	for _, t := range m.Tables {
		if t.File != tableFile(t.Name) || !tableFileRE.MatchString(t.File) {
			return badArchive("table %q: file %q", t.Name, t.File)
		}
		if t.TenantColumn == "" {
			return badArchive("table %q: no tenant column", t.Name)
		}
		if err := check(t.File, t.Rows, t.SHA256); err != nil {
			return err
		}
	}
	if m.Redis != nil {
		if m.Redis.File != keysFile {
			return badArchive("keys file %q", m.Redis.File)
		}
		if err := check(m.Redis.File, m.Redis.Keys, m.Redis.SHA256); err != nil {
			return err
		}
	}
	return nil
}

// files maps each file the manifest names to its count and checksum.
func (m *Manifest) files() map[string]struct {
	n   int64
	sum string
} {
	out := map[string]struct {
		n   int64
		sum string
	}{}
	for _, t := range m.Tables {
		out[t.File] = struct {
			n   int64
			sum string
		}{t.Rows, t.SHA256}
	}
	if m.Redis != nil {
		out[m.Redis.File] = struct {
			n   int64
			sum string
		}{m.Redis.Keys, m.Redis.SHA256}
	}
	return out
}

// archiveWriter builds an archive: each file is written to a temporary
// file first (a tar entry needs its size up front), then everything is
// put in the tar, manifest first, and renamed into place.
type archiveWriter struct {
	dir, final string
	work       string
	files      []string // names in the archive, in order
}

func newArchiveWriter(dir, final string) (*archiveWriter, error) {
	work, err := os.MkdirTemp(dir, ".work-")
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	return &archiveWriter{dir: dir, final: final, work: work}, nil
}

// create opens the file name of the archive for writing.
func (a *archiveWriter) create(name string) (*os.File, error) {
	a.files = append(a.files, name)
	return os.Create(filepath.Join(a.work, strings.ReplaceAll(name, "/", "_")))
}

// finish writes the tar with m and the files, atomically, and removes the
// temporary files. It returns the archive's size and SHA-256.
func (a *archiveWriter) finish(m *Manifest) (int64, string, error) {
	defer a.abort()
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return 0, "", err
	}
	tmp, err := os.CreateTemp(a.dir, ".archive-*.tar")
	if err != nil {
		return 0, "", fmt.Errorf("archive: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(tmp, h)}
	tw := tar.NewWriter(cw)
	now := time.Now().UTC().Truncate(time.Second)
	header := func(name string, size int64) *tar.Header {
		return &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o600, ModTime: now, Format: tar.FormatPAX}
	}
	if err := tw.WriteHeader(header(manifestName, int64(len(mb)))); err != nil {
		tmp.Close()
		return 0, "", err
	}
	if _, err := tw.Write(mb); err != nil {
		tmp.Close()
		return 0, "", err
	}
	for _, name := range a.files {
		f, err := os.Open(filepath.Join(a.work, strings.ReplaceAll(name, "/", "_")))
		if err != nil {
			tmp.Close()
			return 0, "", err
		}
		fi, err := f.Stat()
		if err == nil {
			err = tw.WriteHeader(header(name, fi.Size()))
		}
		if err == nil {
			_, err = io.Copy(tw, f)
		}
		f.Close()
		if err != nil {
			tmp.Close()
			return 0, "", fmt.Errorf("archive %s: %w", name, err)
		}
	}
	if err := tw.Close(); err != nil {
		tmp.Close()
		return 0, "", err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return 0, "", err
	}
	if err := tmp.Close(); err != nil {
		return 0, "", err
	}
	if err := os.Chmod(tmp.Name(), 0o600); err != nil {
		return 0, "", err
	}
	if err := os.Rename(tmp.Name(), a.final); err != nil {
		return 0, "", fmt.Errorf("archive: %w", err)
	}
	return cw.n, hex.EncodeToString(h.Sum(nil)), nil
}

// abort removes the temporary files.
func (a *archiveWriter) abort() { _ = os.RemoveAll(a.work) }

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// readArchive reads an archive: its manifest (validated), then each file
// the manifest names, in any order, each exactly once, handed to f as a
// lineReader; after f returns (having read the file to its end or not)
// the rest of the file is read, and its line count and SHA-256 are
// checked against the manifest. Anything else in the archive (other
// names, links, directories, a second manifest) is refused. f may be nil
// to verify only. f is never called for a file before the manifest is
// read, so f may rely on it (onManifest, if set, sees it first).
func readArchive(r io.Reader, onManifest func(*Manifest) error, f func(m *Manifest, file string, lines *lineReader) error) (*Manifest, error) {
	tr := tar.NewReader(r)
	hdr, err := tr.Next()
	if err != nil {
		return nil, badArchive("no manifest: %v", err)
	}
	if hdr.Name != manifestName || hdr.Typeflag != tar.TypeReg {
		return nil, badArchive("the first entry is %q, not %s", hdr.Name, manifestName)
	}
	if hdr.Size > maxManifest {
		return nil, badArchive("manifest of %d bytes", hdr.Size)
	}
	mb, err := io.ReadAll(io.LimitReader(tr, maxManifest))
	if err != nil {
		return nil, badArchive("manifest: %v", err)
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(mb))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, badArchive("manifest: %v", err)
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	if onManifest != nil {
		if err := onManifest(&m); err != nil {
			return &m, err
		}
	}
	want := m.files()
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return &m, badArchive("%v", err)
		}
		exp, ok := want[hdr.Name]
		if !ok {
			return &m, badArchive("unexpected entry %q", hdr.Name)
		}
		if hdr.Typeflag != tar.TypeReg {
			return &m, badArchive("entry %q is not a regular file", hdr.Name)
		}
		delete(want, hdr.Name)
		lines := newLineReader(tr)
		if f != nil {
			if err := f(&m, hdr.Name, lines); err != nil {
				return &m, err
			}
		}
		for { // the rest, counted and hashed
			if _, err := lines.next(); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return &m, badArchive("%s: %v", hdr.Name, err)
			}
		}
		if lines.lines != exp.n {
			return &m, badArchive("%s has %d lines, the manifest says %d", hdr.Name, lines.lines, exp.n)
		}
		if got := hex.EncodeToString(lines.sum()); got != exp.sum {
			return &m, badArchive("%s: checksum %s, the manifest says %s", hdr.Name, got, exp.sum)
		}
	}
	for name := range want {
		return &m, badArchive("%s is missing", name)
	}
	return &m, nil
}
