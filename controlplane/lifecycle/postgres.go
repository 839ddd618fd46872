package lifecycle

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/controlplane/workflow"
	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/policy/policypb"
	"github.com/tenantguard/tenantguard/proxy/pg/rls"
)

// Postgres reaches tenants' rows the way a sidecar does: connected as the
// upstream role, which cannot bypass row-level security (checked with
// rls.Check before any row is touched), and bound to one tenant with a
// signed tenantguard.bind. Every statement it runs is also filtered by the
// tenant column, but that is a second line: the database itself lets a
// session bound to one tenant see and change that tenant's rows only.
type Postgres struct {
	url    string
	binder *rls.Binder
}

// NewPostgres returns access to the database at url (the sidecar's
// upstream URL and role) with the sidecars' binding key.
func NewPostgres(url string, binder *rls.Binder) *Postgres {
	return &Postgres{url: url, binder: binder}
}

// table is one row-isolated table of the policy as the database knows it.
type table struct {
	Name         string // schema-qualified, as the policy names it
	TenantColumn string
	oid          uint32
	ident        string   // quoted schema.table
	order        string   // ORDER BY list: the primary key, else the row's JSON
	insertCols   []string // quoted columns an INSERT may set
	insertNames  []string // the same, unquoted
	overriding   bool     // has an identity column GENERATED ALWAYS
}

// tenantSession is one connection bound to one tenant.
type tenantSession struct {
	pg      *Postgres
	conn    *pgx.Conn
	tenant  string
	boundAt time.Time
	tables  []*table // parents before children
}

// errNotIsolated: the database or role would let the control plane see
// more than one tenant's rows.
var errNotIsolated = errors.New("row isolation does not hold for the lifecycle connection")

// session connects, checks that the role cannot bypass isolation for the
// policy's tables, resolves them in foreign-key order and binds tenant.
func (pg *Postgres) session(ctx context.Context, p *policypb.Policy, tenant string) (*tenantSession, error) {
	spec, err := policypb.ToSpec(p)
	if err != nil {
		return nil, err
	}
	spec.Tenants = nil // only the tables matter here
	snap, err := policy.Compile(spec)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	conn, err := pgx.Connect(ctx, pg.url)
	if err != nil {
		return nil, fmt.Errorf("connect to the tenants' database: %w", err)
	}
	s := &tenantSession{pg: pg, conn: conn, tenant: tenant}
	rep, err := rls.Check(ctx, conn, snap, pg.binder)
	if err != nil {
		s.close()
		return nil, fmt.Errorf("isolation check: %w", err)
	}
	if !rep.OK() {
		s.close()
		return nil, fmt.Errorf("%w: %s", errNotIsolated, strings.Join(rep.Problems, "; "))
	}
	if s.tables, err = resolveTables(ctx, conn, snap.Tables()); err != nil {
		s.close()
		return nil, err
	}
	if err := s.bind(ctx); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *tenantSession) close() { _ = s.conn.Close(context.Background()) }

// bind binds the session to its tenant (again): DISCARD SEQUENCES first,
// as the sidecar does, so a bind that fails leaves no tenant bound.
func (s *tenantSession) bind(ctx context.Context) error {
	at := time.Now()
	if !at.After(s.boundAt) {
		at = s.boundAt.Add(time.Microsecond)
	}
	sql, args := s.pg.binder.Statement(s.tenant, s.conn.PgConn().PID(), at)
	pid, _ := strconv.ParseInt(args[1], 10, 32)
	issued, _ := strconv.ParseInt(args[2], 10, 64)
	if _, err := s.conn.Exec(ctx, "DISCARD SEQUENCES"); err != nil {
		return fmt.Errorf("bind tenant %s: %w", s.tenant, err)
	}
	if _, err := s.conn.Exec(ctx, sql, args[0], int32(pid), issued, args[3]); err != nil {
		return fmt.Errorf("bind tenant %s: %w", s.tenant, err)
	}
	s.boundAt = at
	return nil
}

// fresh binds again when the binding is half its maximum age.
func (s *tenantSession) fresh(ctx context.Context) error {
	if time.Since(s.boundAt) < s.pg.binder.MaxAge()/2 {
		return nil
	}
	return s.bind(ctx)
}

// resolveTables finds the policy's row-isolated tables, their keys and
// columns, and orders them parents first by the foreign keys between them.
func resolveTables(ctx context.Context, conn *pgx.Conn, specs []policy.TableSpec) ([]*table, error) {
	var tables []*table
	byOID := map[uint32]*table{}
	for _, ts := range specs {
		if ts.Shared || ts.TenantColumn == "" {
			continue
		}
		t := &table{Name: ts.Name, TenantColumn: ts.TenantColumn}
		var schema, rel string
		err := conn.QueryRow(ctx, `SELECT c.oid, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE c.oid = to_regclass($1)`, ts.Name).Scan(&t.oid, &schema, &rel)
		if err != nil {
			return nil, fmt.Errorf("table %s: %w", ts.Name, err)
		}
		t.ident = pgx.Identifier{schema, rel}.Sanitize()
		rows, err := conn.Query(ctx, `SELECT a.attname, a.attgenerated <> '', a.attidentity = 'a',
				coalesce(array_position(i.indkey::int2[], a.attnum), 0)
			FROM pg_attribute a LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
			WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`, t.oid)
		if err != nil {
			return nil, fmt.Errorf("table %s columns: %w", ts.Name, err)
		}
		key := map[int]string{}
		for rows.Next() {
			var name string
			var generated, always bool
			var pos int
			if err := rows.Scan(&name, &generated, &always, &pos); err != nil {
				rows.Close()
				return nil, fmt.Errorf("table %s columns: %w", ts.Name, err)
			}
			q := pgx.Identifier{name}.Sanitize()
			if !generated {
				t.insertCols = append(t.insertCols, q)
				t.insertNames = append(t.insertNames, name)
			}
			t.overriding = t.overriding || always
			if pos > 0 {
				key[pos] = "t." + q
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("table %s columns: %w", ts.Name, err)
		}
		if len(key) > 0 {
			cols := make([]string, 0, len(key))
			for i := 1; i <= len(key); i++ {
				cols = append(cols, key[i])
			}
			t.order = strings.Join(cols, ", ")
		} else {
			t.order = "to_jsonb(t)::text"
		}
		tables = append(tables, t)
		byOID[t.oid] = t
	}
	if len(tables) == 0 {
		return nil, nil
	}
	oids := make([]uint32, 0, len(tables))
	for _, t := range tables {
		oids = append(oids, t.oid)
	}
	rows, err := conn.Query(ctx, `SELECT conrelid::oid, confrelid::oid FROM pg_constraint
		WHERE contype = 'f' AND conrelid = ANY($1::oid[]) AND confrelid = ANY($1::oid[]) AND conrelid <> confrelid`, oids)
	if err != nil {
		return nil, fmt.Errorf("foreign keys: %w", err)
	}
	parents := map[*table][]*table{}
	for rows.Next() {
		var child, parent uint32
		if err := rows.Scan(&child, &parent); err != nil {
			rows.Close()
			return nil, fmt.Errorf("foreign keys: %w", err)
		}
		parents[byOID[child]] = append(parents[byOID[child]], byOID[parent])
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("foreign keys: %w", err)
	}
	return parentsFirst(tables, parents)
}

// parentsFirst orders tables so that every table comes after the tables
// its foreign keys reference (keeping the policy's order otherwise).
func parentsFirst(tables []*table, parents map[*table][]*table) ([]*table, error) {
	out := make([]*table, 0, len(tables))
	state := map[*table]int{} // 1 visiting, 2 done
	var visit func(t *table) error
	visit = func(t *table) error {
		switch state[t] {
		case 1:
			return fmt.Errorf("the foreign keys between row-isolated tables form a cycle through %s", t.Name)
		case 2:
			return nil
		}
		state[t] = 1
		for _, p := range parents[t] {
			if err := visit(p); err != nil {
				return err
			}
		}
		state[t] = 2
		out = append(out, t)
		return nil
	}
	for _, t := range tables {
		if err := visit(t); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// tenantFilter is the WHERE clause every statement adds.
func (t *table) tenantFilter() string {
	return "t." + pgx.Identifier{t.TenantColumn}.Sanitize() + " = $1"
}

// count returns the tenant's rows per table.
func (s *tenantSession) count(ctx context.Context) (map[string]int64, error) {
	if err := s.fresh(ctx); err != nil {
		return nil, err
	}
	out := make(map[string]int64, len(s.tables))
	for _, t := range s.tables {
		var n int64
		if err := s.conn.QueryRow(ctx, "SELECT count(*) FROM "+t.ident+" t WHERE "+t.tenantFilter(), s.tenant).Scan(&n); err != nil {
			return nil, fmt.Errorf("count %s: %w", t.Name, err)
		}
		out[t.Name] = n
	}
	return out, nil
}

// total sums a count.
func total(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// writeRows writes the tenant's rows of t to w, one JSON object a line
// (the row's to_jsonb text), in key order, with asTenant in the tenant
// column (the tenant's own id for an export; the source's when verifying
// an import). It returns the line count and the SHA-256 of what it wrote.
func (s *tenantSession) writeRows(ctx context.Context, tx pgx.Tx, t *table, asTenant string, w io.Writer) (int64, []byte, error) {
	rows, err := tx.Query(ctx, "SELECT (to_jsonb(t) || jsonb_build_object($2::text, $3::text))::text FROM "+t.ident+" t WHERE "+t.tenantFilter()+
		" ORDER BY "+t.order, s.tenant, t.TenantColumn, asTenant)
	if err != nil {
		return 0, nil, fmt.Errorf("read %s: %w", t.Name, err)
	}
	defer rows.Close()
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(w, h), 64<<10)
	var n int64
	for rows.Next() {
		raw := rows.RawValues()
		if len(raw) != 1 || raw[0] == nil {
			return n, nil, fmt.Errorf("read %s: unexpected row", t.Name)
		}
		_, _ = bw.Write(raw[0])
		if err := bw.WriteByte('\n'); err != nil {
			return n, nil, fmt.Errorf("write %s: %w", t.Name, err)
		}
		n++
	}
	if err := rows.Err(); err != nil {
		return n, nil, fmt.Errorf("read %s: %w", t.Name, err)
	}
	if err := bw.Flush(); err != nil {
		return n, nil, fmt.Errorf("write %s: %w", t.Name, err)
	}
	return n, h.Sum(nil), nil
}

// snapshot runs f in one REPEATABLE READ, READ ONLY transaction, so that
// every table is read as of one moment.
func (s *tenantSession) snapshot(ctx context.Context, f func(tx pgx.Tx) error) error {
	if err := s.fresh(ctx); err != nil {
		return err
	}
	tx, err := s.conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := f(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// insertBatch is how many rows one INSERT carries.
const insertBatch = 500

// insertRows inserts JSON objects (one per line of r, or the given
// objects) into t as the session's tenant, whatever tenant column they
// carry, in batches, in one transaction. It returns how many it inserted
// and the SHA-256 of the lines it read.
func (s *tenantSession) insertRows(ctx context.Context, t *table, lines *lineReader, progress func(n int64) error) (int64, []byte, error) {
	if err := s.fresh(ctx); err != nil {
		return 0, nil, err
	}
	tx, err := s.conn.Begin(ctx)
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	cols := strings.Join(t.insertCols, ", ")
	sel := make([]string, len(t.insertCols))
	for i, c := range t.insertCols {
		sel[i] = "r." + c
	}
	over := ""
	if t.overriding {
		over = " OVERRIDING SYSTEM VALUE"
	}
	q := "INSERT INTO " + t.ident + " (" + cols + ")" + over + " SELECT " + strings.Join(sel, ", ") +
		" FROM jsonb_array_elements($1::jsonb) e, jsonb_populate_record(NULL::" + t.ident + ", e.value || jsonb_build_object($2::text, $3::text)) r"
	var n int64
	var batch []byte
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		batch = append(batch, ']')
		tag, err := tx.Exec(ctx, q, string(batch), t.TenantColumn, s.tenant)
		if err != nil {
			return fmt.Errorf("insert into %s: %w", t.Name, err)
		}
		n += tag.RowsAffected()
		batch = batch[:0]
		if progress != nil {
			return progress(n)
		}
		return nil
	}
	inBatch := 0
	for {
		line, err := lines.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return n, nil, err
		}
		if len(batch) == 0 {
			batch = append(batch, '[')
		} else {
			batch = append(batch, ',')
		}
		batch = append(batch, line...)
		if inBatch++; inBatch == insertBatch {
			inBatch = 0
			if err := flush(); err != nil {
				return n, nil, err
			}
		}
	}
	if err := flush(); err != nil {
		return n, nil, err
	}
	if err := tx.Commit(ctx); err != nil {
		return n, nil, fmt.Errorf("insert into %s: %w", t.Name, err)
	}
	return n, lines.sum(), nil
}

// insertObjects inserts seed rows into t as the session's tenant, in one
// transaction: each row sets the columns it names (others take their
// defaults), and the tenant column is the tenant's whatever the row says.
func (s *tenantSession) insertObjects(ctx context.Context, t *table, rows []map[string]json.RawMessage) (int64, error) {
	if err := s.fresh(ctx); err != nil {
		return 0, err
	}
	tx, err := s.conn.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	var n int64
	for i, row := range rows {
		var cols, sel []string
		for j, name := range t.insertNames {
			if _, ok := row[name]; ok || name == t.TenantColumn {
				cols = append(cols, t.insertCols[j])
				sel = append(sel, "r."+t.insertCols[j])
			}
		}
		for name := range row {
			if !slices.Contains(t.insertNames, name) {
				return n, workflow.Permanent(fmt.Errorf("row %d of %s: no column %q (or it is generated)", i, t.Name, name))
			}
		}
		obj, err := json.Marshal(row)
		if err != nil {
			return n, err
		}
		over := ""
		if t.overriding {
			over = " OVERRIDING SYSTEM VALUE"
		}
		q := "INSERT INTO " + t.ident + " (" + strings.Join(cols, ", ") + ")" + over + " SELECT " + strings.Join(sel, ", ") +
			" FROM jsonb_populate_record(NULL::" + t.ident + ", $1::jsonb || jsonb_build_object($2::text, $3::text)) r"
		tag, err := tx.Exec(ctx, q, string(obj), t.TenantColumn, s.tenant)
		if err != nil {
			return n, fmt.Errorf("insert row %d into %s: %w", i, t.Name, err)
		}
		n += tag.RowsAffected()
	}
	if err := tx.Commit(ctx); err != nil {
		return n, fmt.Errorf("insert into %s: %w", t.Name, err)
	}
	return n, nil
}

// deleteRows deletes the tenant's rows of t in batches of size, each its
// own short transaction (DELETE … WHERE ctid IN (SELECT … LIMIT n): no
// long lock), pausing between batches; progress is told the running count.
func (s *tenantSession) deleteRows(ctx context.Context, t *table, size int, pause time.Duration, progress func(n int64) error) (int64, error) {
	return deleteBatches(ctx, s.conn, t, s.tenant, size, pause, s.fresh, progress)
}

// deleteBatches deletes tenant's rows of t on conn in batches of size,
// each its own short transaction, calling before ahead of each (nil: none)
// and progress after each with the running count. A move deletes the
// moved tenant's rows at its old cluster with it.
func deleteBatches(ctx context.Context, conn *pgx.Conn, t *table, tenant string, size int, pause time.Duration,
	before func(context.Context) error, progress func(n int64) error) (int64, error) {
	q := "DELETE FROM " + t.ident + " WHERE ctid IN (SELECT t.ctid FROM " + t.ident + " t WHERE " + t.tenantFilter() + " LIMIT $2) AND " +
		pgx.Identifier{t.TenantColumn}.Sanitize() + " = $1"
	var n int64
	for {
		if before != nil {
			if err := before(ctx); err != nil {
				return n, err
			}
		}
		tag, err := conn.Exec(ctx, q, tenant, size)
		if err != nil {
			return n, fmt.Errorf("delete from %s: %w", t.Name, err)
		}
		n += tag.RowsAffected()
		if tag.RowsAffected() == 0 {
			return n, nil
		}
		if progress != nil {
			if err := progress(n); err != nil {
				return n, err
			}
		}
		if pause > 0 {
			timer := time.NewTimer(pause)
			select {
			case <-ctx.Done():
				timer.Stop()
				return n, ctx.Err()
			case <-timer.C:
			}
		}
	}
}

// deleteAll deletes every row of the tenant, children first.
func (s *tenantSession) deleteAll(ctx context.Context) (map[string]int64, error) {
	out := map[string]int64{}
	for i := len(s.tables) - 1; i >= 0; i-- {
		t := s.tables[i]
		n, err := s.deleteRows(ctx, t, 1000, 0, nil)
		if err != nil {
			return out, err
		}
		out[t.Name] = n
	}
	return out, nil
}

// tableByName finds one of the session's tables.
func (s *tenantSession) tableByName(name string) *table {
	for _, t := range s.tables {
		if t.Name == name {
			return t
		}
	}
	return nil
}

// lineReader reads newline-terminated lines of bounded length and hashes
// everything it reads.
type lineReader struct {
	r     *bufio.Reader
	h     hash.Hash
	lines int64
}

// maxLine bounds one row's JSON (PostgreSQL's own limit for a jsonb value
// is 255 MB; rows past this are refused rather than buffered).
const maxLine = 64 << 20

func newLineReader(r io.Reader) *lineReader {
	h := sha256.New()
	return &lineReader{r: bufio.NewReaderSize(io.TeeReader(r, h), 64<<10), h: h}
}

func (l *lineReader) next() ([]byte, error) {
	var line []byte
	for {
		chunk, err := l.r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxLine {
			return nil, fmt.Errorf("a line is longer than %d bytes", maxLine)
		}
		switch {
		case err == nil:
			l.lines++
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if len(line) > 0 {
				return nil, errors.New("the last line has no newline")
			}
			return nil, io.EOF
		default:
			return nil, err
		}
	}
}

func (l *lineReader) sum() []byte { return l.h.Sum(nil) }
