package lifecycle

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tenantguard/tenantguard/controlplane/store"
	"github.com/tenantguard/tenantguard/controlplane/workflow"
	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/policy/policypb"
)

// ProvisionParams are a provision's parameters. Tenant is the policy's
// tenant (protojson, as in a policy file: id, credentials as SCRAM
// verifiers — the admin API hashes plaintext ones before it stores the
// operation — allow, limits); its id is the operation's tenant.
type ProvisionParams struct {
	Tenant json.RawMessage `json:"tenant"`
	// Seed, optional: rows per table (JSON objects, column → value; the
	// tenant column is set to the tenant whatever they say) and keys
	// (string values), loaded before the tenant enters the policy.
	Seed *Seed `json:"seed,omitempty"`
	// ReadyTimeout bounds the wait for the data planes to accept the
	// policy (default the control plane's lifecycle.ready_timeout).
	ReadyTimeout duration `json:"ready_timeout,omitempty"`
}

// Seed is a provision's initial data.
type Seed struct {
	Rows map[string][]json.RawMessage `json:"rows,omitempty"`
	Keys map[string]string            `json:"keys,omitempty"`
}

// jsonUnmarshal decodes strictly: unknown fields are errors.
func jsonUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// ParseProvision decodes and checks provision parameters and returns the
// tenant they define.
func ParseProvision(raw json.RawMessage) (ProvisionParams, *policypb.Tenant, error) {
	var p ProvisionParams
	if err := jsonUnmarshal(raw, &p); err != nil {
		return p, nil, err
	}
	if len(p.Tenant) == 0 {
		return p, nil, errors.New("tenant: required")
	}
	t := &policypb.Tenant{}
	if err := (protojson.UnmarshalOptions{}).Unmarshal(p.Tenant, t); err != nil {
		return p, nil, fmt.Errorf("tenant: %w", err)
	}
	if err := policy.CheckTenantID(t.GetId()); err != nil {
		return p, nil, fmt.Errorf("tenant.id: %w", err)
	}
	if t.GetSuspended() {
		return p, nil, errors.New("tenant.suspended: a tenant is provisioned active")
	}
	if len(t.GetCredentials()) == 0 {
		return p, nil, errors.New("tenant.credentials: at least one is required")
	}
	for i, c := range t.GetCredentials() {
		if !strings.HasPrefix(c, policy.VerifierPrefix) {
			return p, nil, fmt.Errorf("tenant.credentials[%d]: not a SCRAM-SHA-256 verifier", i)
		}
	}
	// The tenant must make a valid policy on its own.
	if err := policypb.Validate(&policypb.Policy{Name: "check", Tenants: []*policypb.Tenant{t}}); err != nil {
		return p, nil, err
	}
	if p.Seed != nil {
		for k := range p.Seed.Keys {
			if k == "" {
				return p, nil, errors.New("seed.keys: an empty key name")
			}
		}
	}
	return p, t, nil
}

func (s *Service) provisionKind() workflow.Kind {
	return workflow.Kind{
		Name: KindProvision,
		Steps: func(raw json.RawMessage) ([]workflow.Step, error) {
			if _, _, err := ParseProvision(raw); err != nil {
				return nil, err
			}
			return []workflow.Step{
				{Name: "check", Do: s.provisionCheck},
				{Name: "seed_rows", Do: s.seedRows, Undo: s.undoSeedRows},
				{Name: "seed_keys", Do: s.seedKeys, Undo: s.undoSeedKeys},
				{Name: "add_to_policy", Do: s.addToPolicy, Undo: s.undoAddToPolicy},
				{Name: "wait_ready", Do: s.waitReady},
			}, nil
		},
		Summary: func(raw json.RawMessage) map[string]any {
			p, t, err := ParseProvision(raw)
			if err != nil {
				return nil
			}
			out := map[string]any{"credentials": len(t.GetCredentials())}
			if l := t.GetLimits(); l != nil {
				b, _ := protojson.Marshal(l)
				out["limits"] = json.RawMessage(b)
			}
			if p.Seed != nil {
				rows := map[string]int{}
				for tbl, rs := range p.Seed.Rows {
					rows[tbl] = len(rs)
				}
				out["seed_rows"], out["seed_keys"] = rows, len(p.Seed.Keys)
			}
			return out
		},
	}
}

func provisionParams(r *workflow.Run) (ProvisionParams, *policypb.Tenant, error) {
	var raw json.RawMessage
	if err := r.Params(&raw); err != nil {
		return ProvisionParams{}, nil, err
	}
	p, t, err := ParseProvision(raw)
	if err != nil {
		return p, nil, workflow.Permanent(err)
	}
	if t.GetId() != r.Tenant {
		return p, nil, workflow.Permanent(fmt.Errorf("tenant.id %q is not the operation's tenant %q", t.GetId(), r.Tenant))
	}
	return p, t, nil
}

// provisionCheck: the tenant is not in the policy and has no data, so
// undoing the provision may delete all of its data.
func (s *Service) provisionCheck(ctx context.Context, r *workflow.Run) error {
	if _, _, err := provisionParams(r); err != nil {
		return err
	}
	v, err := s.current(ctx)
	if err != nil {
		return err
	}
	if findTenant(v.Policy, r.Tenant) != nil {
		return workflow.Permanent(fmt.Errorf("tenant %s is already in the policy", r.Tenant))
	}
	return s.requireEmpty(ctx, r.Tenant, "provision needs a tenant without data (import or offboard it instead)")
}

func (s *Service) seedRows(ctx context.Context, r *workflow.Run) error {
	p, _, err := provisionParams(r)
	if err != nil || p.Seed == nil || len(p.Seed.Rows) == 0 {
		return err
	}
	ts, err := s.session(ctx, r.Tenant)
	if err != nil {
		return err
	}
	defer ts.close()
	for name := range p.Seed.Rows {
		if ts.tableByName(name) == nil {
			return workflow.Permanent(fmt.Errorf("seed.rows: %s is not a row-isolated table of the policy", name))
		}
	}
	have, err := ts.count(ctx)
	if err != nil {
		return err
	}
	seeded := map[string]int64{}
	for _, t := range ts.tables { // parents first
		rows := p.Seed.Rows[t.Name]
		if len(rows) == 0 {
			continue
		}
		if have[t.Name] > 0 { // loaded by an earlier attempt: one transaction per table
			seeded[t.Name] = have[t.Name]
			continue
		}
		objs := make([]map[string]json.RawMessage, len(rows))
		for i, row := range rows {
			if err := json.Unmarshal(row, &objs[i]); err != nil || objs[i] == nil {
				return workflow.Permanent(fmt.Errorf("seed.rows[%s][%d]: not a JSON object", t.Name, i))
			}
		}
		n, err := ts.insertObjects(ctx, t, objs)
		var pe *pgconn.PgError
		if errors.As(err, &pe) {
			// A row the database refuses (a constraint, a type) will be
			// refused again.
			return workflow.Permanent(err)
		}
		if err != nil {
			return err
		}
		seeded[t.Name] = n
	}
	return r.SetResult("seeded_rows", seeded)
}

func (s *Service) undoSeedRows(ctx context.Context, r *workflow.Run) error {
	return s.removeAllData(ctx, r.Tenant, true, false)
}

func (s *Service) seedKeys(ctx context.Context, r *workflow.Run) error {
	p, _, err := provisionParams(r)
	if err != nil || p.Seed == nil || len(p.Seed.Keys) == 0 {
		return err
	}
	if s.cfg.Redis == nil {
		return workflow.Permanent(errors.New("seed.keys: the control plane has no lifecycle.redis"))
	}
	v, err := s.current(ctx)
	if err != nil {
		return err
	}
	ns, err := namespaceOf(v.Policy, r.Tenant)
	if err != nil {
		return workflow.Permanent(err)
	}
	if err := s.cfg.Redis.set(ctx, ns, p.Seed.Keys); err != nil {
		return err
	}
	return r.SetResult("seeded_keys", len(p.Seed.Keys))
}

func (s *Service) undoSeedKeys(ctx context.Context, r *workflow.Run) error {
	return s.removeAllData(ctx, r.Tenant, false, true)
}

func (s *Service) addToPolicy(ctx context.Context, r *workflow.Run) error {
	_, t, err := provisionParams(r)
	if err != nil {
		return err
	}
	v, err := s.cfg.Policy.AddTenant(ctx, author(r), r.ID, t)
	switch {
	case errors.Is(err, store.ErrUnchanged): // added by an earlier attempt
	case errors.Is(err, store.ErrExists), errors.Is(err, store.ErrInvalid):
		return workflow.Permanent(err)
	case err != nil:
		return err
	}
	return r.SetResult("policy_version", v.Version)
}

// undoAddToPolicy removes the tenant only if it is the one this operation
// added (a tenant of that id someone else added meanwhile stays).
func (s *Service) undoAddToPolicy(ctx context.Context, r *workflow.Run) error {
	_, t, err := provisionParams(r)
	if err != nil {
		return err
	}
	v, err := s.current(ctx)
	if err != nil {
		return err
	}
	have := findTenant(v.Policy, r.Tenant)
	if have == nil || !proto.Equal(have, t) {
		return nil
	}
	_, err = s.cfg.Policy.RemoveTenant(ctx, author(r), r.ID, r.Tenant)
	if errors.Is(err, store.ErrUnchanged) {
		err = nil
	}
	return err
}

func (s *Service) waitReady(ctx context.Context, r *workflow.Run) error {
	p, _, err := provisionParams(r)
	if err != nil {
		return err
	}
	var version int64
	if ok, err := r.Result("policy_version", &version); err != nil || !ok {
		return workflow.Permanent(fmt.Errorf("no policy version recorded by add_to_policy: %v", err))
	}
	n, err := s.waitAccepted(ctx, r, version, timeDuration(p.ReadyTimeout))
	if err != nil {
		return err
	}
	return r.SetResult("data_planes_ready", n)
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
