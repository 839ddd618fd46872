package lifecycle

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/controlplane/workflow"
)

// ExportParams are an export's parameters (none yet).
type ExportParams struct{}

// ArchiveResult is what an export reports of its archive.
type ArchiveResult struct {
	File   string           `json:"file"` // name in the archive directory
	Bytes  int64            `json:"bytes"`
	SHA256 string           `json:"sha256"`
	Rows   map[string]int64 `json:"rows"`
	Keys   int64            `json:"keys"`
}

func (s *Service) exportKind() workflow.Kind {
	return workflow.Kind{
		Name: KindExport,
		Steps: func(raw json.RawMessage) ([]workflow.Step, error) {
			var p ExportParams
			if err := jsonUnmarshal(raw, &p); err != nil {
				return nil, err
			}
			if s.cfg.ArchiveDir == "" {
				return nil, ErrNoArchiveDir
			}
			return []workflow.Step{
				{Name: "write_archive", Do: s.writeArchiveStep, Undo: s.removeArchive},
			}, nil
		},
	}
}

func (s *Service) writeArchiveStep(ctx context.Context, r *workflow.Run) error {
	res, err := s.writeArchive(ctx, r)
	if err != nil {
		return err
	}
	return r.SetResult("archive", res)
}

// removeArchive deletes the operation's archive.
func (s *Service) removeArchive(ctx context.Context, r *workflow.Run) error {
	if s.cfg.ArchiveDir == "" {
		return nil
	}
	err := os.Remove(filepath.Join(s.cfg.ArchiveDir, r.ID+".tar"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// writeArchive writes the tenant's rows (read in one snapshot, through
// the isolation, as the tenant) and keys to <archive dir>/<operation>.tar.
// It starts over when run again.
func (s *Service) writeArchive(ctx context.Context, r *workflow.Run) (*ArchiveResult, error) {
	if s.cfg.ArchiveDir == "" {
		return nil, workflow.Permanent(ErrNoArchiveDir)
	}
	v, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	final := filepath.Join(s.cfg.ArchiveDir, r.ID+".tar")
	aw, err := newArchiveWriter(s.cfg.ArchiveDir, final)
	if err != nil {
		return nil, err
	}
	defer aw.abort()
	m := &Manifest{Format: ArchiveFormat, Tenant: r.Tenant, CreatedAt: time.Now().UTC().Truncate(time.Second),
		Operation: r.ID, PolicyVersion: strconv.FormatInt(v.Version, 10)}
	res := &ArchiveResult{File: filepath.Base(final), Rows: map[string]int64{}}
	if s.cfg.Postgres != nil {
		ts, err := s.session(ctx, r.Tenant)
		if err != nil {
			return nil, err
		}
		defer ts.close()
		err = ts.snapshot(ctx, func(tx pgx.Tx) error {
			for i, t := range ts.tables {
				file := tableFile(t.Name)
				if !tableFileRE.MatchString(file) {
					return workflow.Permanent(fmt.Errorf("table name %q cannot name an archive file", t.Name))
				}
				f, err := aw.create(file)
				if err != nil {
					return err
				}
				n, sum, err := ts.writeRows(ctx, tx, t, r.Tenant, f)
				if cerr := f.Close(); err == nil {
					err = cerr
				}
				if err != nil {
					return err
				}
				m.Tables = append(m.Tables, ManifestTable{Name: t.Name, TenantColumn: t.TenantColumn, File: file, Rows: n, SHA256: hex.EncodeToString(sum)})
				res.Rows[t.Name] = n
				_ = r.Progress(ctx, int64(i+1), int64(len(ts.tables)+1), "exported "+t.Name)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if s.cfg.Redis != nil {
		ns, err := namespaceOf(v.Policy, r.Tenant)
		if err != nil {
			return nil, workflow.Permanent(err)
		}
		f, err := aw.create(keysFile)
		if err != nil {
			return nil, err
		}
		n, sum, err := s.cfg.Redis.writeKeys(ctx, ns, f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, err
		}
		m.Redis = &ManifestKeys{File: keysFile, Namespace: ns.Mode().String(), Keys: n, SHA256: hex.EncodeToString(sum)}
		res.Keys = n
	}
	if res.Bytes, res.SHA256, err = aw.finish(m); err != nil {
		return nil, err
	}
	s.log.Info("archive written", "operation", r.ID, "tenant", r.Tenant, "file", final, "bytes", res.Bytes)
	return res, nil
}
