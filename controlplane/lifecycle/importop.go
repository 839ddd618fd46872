package lifecycle

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/controlplane/workflow"
)

// ImportParams are an import's parameters: the archive, either the id of
// the operation that wrote it (an export, or an offboarding that
// exported) or the name SaveUpload gave an uploaded one. The rows and
// keys are loaded into the operation's tenant, which may be the archive's
// own tenant or another: rows get the operation's tenant in their tenant
// column, keys its namespace.
type ImportParams struct {
	Archive string `json:"archive"`
}

func (s *Service) importKind() workflow.Kind {
	return workflow.Kind{
		Name: KindImport,
		Steps: func(raw json.RawMessage) ([]workflow.Step, error) {
			var p ImportParams
			if err := jsonUnmarshal(raw, &p); err != nil {
				return nil, err
			}
			if _, err := s.archiveSource(p.Archive); err != nil {
				return nil, err
			}
			return []workflow.Step{
				{Name: "verify_archive", Do: s.verifyArchive},
				{Name: "load_rows", Do: s.loadRows, Undo: s.undoLoadRows},
				{Name: "load_keys", Do: s.loadKeys, Undo: s.undoLoadKeys},
				{Name: "verify_import", Do: s.verifyImport},
			}, nil
		},
		Summary: func(raw json.RawMessage) map[string]any {
			var p ImportParams
			_ = json.Unmarshal(raw, &p)
			return map[string]any{"archive": p.Archive}
		},
	}
}

// openArchive opens the import's archive.
func (s *Service) openArchive(r *workflow.Run) (*os.File, error) {
	var p ImportParams
	if err := r.Params(&p); err != nil {
		return nil, err
	}
	path, err := s.archiveSource(p.Archive)
	if err != nil {
		return nil, workflow.Permanent(err)
	}
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, workflow.Permanent(fmt.Errorf("archive %s: not found", p.Archive))
	}
	return f, err
}

// verifyArchive checks the whole archive against its manifest, that the
// target tenant is in the policy, that the archive's tables are the
// policy's, and that the tenant has no data (so that undoing the import
// may delete all of its data).
func (s *Service) verifyArchive(ctx context.Context, r *workflow.Run) error {
	f, err := s.openArchive(r)
	if err != nil {
		return err
	}
	defer f.Close()
	m, err := readArchive(f, nil, nil)
	if err != nil {
		return workflow.Permanent(err)
	}
	// The tenant must be in the policy already (provisioned without
	// seed): data of a tenant no sidecar serves could be neither
	// provisioned over (provision wants a tenant without data) nor
	// offboarded (offboarding suspends it in the policy first).
	v, err := s.current(ctx)
	if err != nil {
		return err
	}
	if findTenant(v.Policy, r.Tenant) == nil {
		return workflow.Permanent(fmt.Errorf("tenant %s is not in the policy: provision it (without seed) first", r.Tenant))
	}
	if len(m.Tables) > 0 && s.cfg.Postgres == nil {
		return errNoPostgres
	}
	if m.Redis != nil && m.Redis.Keys > 0 && s.cfg.Redis == nil {
		return workflow.Permanent(errors.New("the archive has keys and the control plane has no lifecycle.redis"))
	}
	if s.cfg.Postgres != nil {
		ts, err := s.session(ctx, r.Tenant)
		if err != nil {
			return err
		}
		defer ts.close()
		for _, mt := range m.Tables {
			t := ts.tableByName(mt.Name)
			if t == nil {
				return workflow.Permanent(fmt.Errorf("the archive's table %s is not a row-isolated table of the policy", mt.Name))
			}
			if t.TenantColumn != mt.TenantColumn {
				return workflow.Permanent(fmt.Errorf("table %s: the archive's tenant column is %s, the policy's %s", mt.Name, mt.TenantColumn, t.TenantColumn))
			}
		}
	}
	if err := s.requireEmpty(ctx, r.Tenant, "import loads into a tenant without data"); err != nil {
		return err
	}
	rows := map[string]int64{}
	for _, t := range m.Tables {
		rows[t.Name] = t.Rows
	}
	var keys int64
	if m.Redis != nil {
		keys = m.Redis.Keys
	}
	return errors.Join(r.SetResult("source_tenant", m.Tenant), r.SetResult("archive_rows", rows), r.SetResult("archive_keys", keys))
}

// loadRows loads each table, parents first, in one transaction per table;
// a table that already has the tenant's rows was loaded by an earlier
// attempt (the tenant had none when the import began).
func (s *Service) loadRows(ctx context.Context, r *workflow.Run) error {
	f, err := s.openArchive(r)
	if err != nil {
		return err
	}
	defer f.Close()
	// The tar is read in its own order, but tables are loaded parents
	// first: the archive is read once per table, loading only that
	// table's file.
	var ts *tenantSession
	defer func() {
		if ts != nil {
			ts.close()
		}
	}()
	if ts, err = s.session(ctx, r.Tenant); err != nil {
		return err
	}
	have, err := ts.count(ctx)
	if err != nil {
		return err
	}
	loaded := map[string]int64{}
	var order []*table
	m, err := readArchive(f, nil, nil)
	if err != nil {
		return workflow.Permanent(err)
	}
	inArchive := map[string]bool{}
	for _, mt := range m.Tables {
		inArchive[mt.Name] = true
	}
	for _, t := range ts.tables {
		if inArchive[t.Name] {
			order = append(order, t)
		}
	}
	for i, t := range order {
		if have[t.Name] > 0 {
			loaded[t.Name] = have[t.Name]
			continue
		}
		if _, err := f.Seek(0, 0); err != nil {
			return err
		}
		_, err := readArchive(f, nil, func(m *Manifest, file string, lines *lineReader) error {
			if file != tableFile(t.Name) {
				return nil
			}
			n, _, err := ts.insertRows(ctx, t, lines, func(n int64) error {
				return r.Progress(ctx, int64(i), int64(len(order)), fmt.Sprintf("%s: %d rows", t.Name, n))
			})
			loaded[t.Name] = n
			return err
		})
		var pe interface{ SQLState() string }
		if errors.As(err, &pe) || errors.Is(err, ErrBadArchive) {
			return workflow.Permanent(err)
		}
		if err != nil {
			return err
		}
	}
	return r.SetResult("loaded_rows", loaded)
}

func (s *Service) undoLoadRows(ctx context.Context, r *workflow.Run) error {
	return s.removeAllData(ctx, r.Tenant, true, false)
}

func (s *Service) loadKeys(ctx context.Context, r *workflow.Run) error {
	if s.cfg.Redis == nil {
		return nil
	}
	f, err := s.openArchive(r)
	if err != nil {
		return err
	}
	defer f.Close()
	v, err := s.current(ctx)
	if err != nil {
		return err
	}
	ns, err := namespaceOf(v.Policy, r.Tenant)
	if err != nil {
		return workflow.Permanent(err)
	}
	var loaded int64
	_, err = readArchive(f, nil, func(m *Manifest, file string, lines *lineReader) error {
		if file != keysFile {
			return nil
		}
		n, _, err := s.cfg.Redis.restoreKeys(ctx, ns, lines, func(n int64) error {
			return r.Progress(ctx, n, m.Redis.Keys, fmt.Sprintf("%d keys", n))
		})
		loaded = n
		return err
	})
	if errors.Is(err, ErrBadArchive) {
		return workflow.Permanent(err)
	}
	if err != nil {
		return err
	}
	return r.SetResult("loaded_keys", loaded)
}

func (s *Service) undoLoadKeys(ctx context.Context, r *workflow.Run) error {
	return s.removeAllData(ctx, r.Tenant, false, true)
}

// verifyImport reads the loaded rows back through the isolation, with the
// archive's tenant in the tenant column, and compares each table's count
// and SHA-256 with the manifest's; and counts the keys. A difference fails
// the import, which then removes what it loaded.
func (s *Service) verifyImport(ctx context.Context, r *workflow.Run) error {
	f, err := s.openArchive(r)
	if err != nil {
		return err
	}
	defer f.Close()
	m, err := readArchive(f, nil, nil)
	if err != nil {
		return workflow.Permanent(err)
	}
	if len(m.Tables) > 0 {
		ts, err := s.session(ctx, r.Tenant)
		if err != nil {
			return err
		}
		defer ts.close()
		err = ts.snapshot(ctx, func(tx pgx.Tx) error {
			for _, mt := range m.Tables {
				t := ts.tableByName(mt.Name)
				if t == nil {
					return workflow.Permanent(fmt.Errorf("table %s is gone from the policy", mt.Name))
				}
				var discard bytes.Buffer
				n, sum, err := ts.writeRows(ctx, tx, t, m.Tenant, &discard)
				if err != nil {
					return err
				}
				if n != mt.Rows || hex.EncodeToString(sum) != mt.SHA256 {
					return workflow.Permanent(fmt.Errorf("table %s: %d rows with checksum %x loaded, the archive has %d with %s",
						mt.Name, n, sum, mt.Rows, mt.SHA256))
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if m.Redis != nil && s.cfg.Redis != nil {
		v, err := s.current(ctx)
		if err != nil {
			return err
		}
		ns, err := namespaceOf(v.Policy, r.Tenant)
		if err != nil {
			return workflow.Permanent(err)
		}
		n, err := s.cfg.Redis.count(ctx, ns)
		if err != nil {
			return err
		}
		// Keys with a time to live may have expired since: fewer is not
		// an error, more is.
		if n > m.Redis.Keys {
			return workflow.Permanent(fmt.Errorf("%d keys after the import, the archive has %d", n, m.Redis.Keys))
		}
		if err := r.SetResult("keys_present", n); err != nil {
			return err
		}
	}
	return r.SetResult("verified", true)
}
