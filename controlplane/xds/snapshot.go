package xds

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
)

// fleetKey is the one snapshot-cache key every node maps to: the whole
// fleet enforces the same policy, so one snapshot serves it.
const fleetKey = "fleet"

// fleetHash is the cache's NodeHash: every node is fleetKey.
type fleetHash struct{}

func (fleetHash) ID(*core.Node) string { return fleetKey }

// typeResources are the resources of one type URL at one version. They are
// never changed once built, so snapshots share them.
type typeResources struct {
	version  string
	items    map[string]types.ResourceWithTTL
	versions map[string]string // resource name → hash of its bytes (delta xDS)
}

// newTypeResources builds the resources of one type; version "" means the
// hash of their contents.
func newTypeResources(version string, resources ...types.ResourceWithName) (*typeResources, error) {
	t := &typeResources{
		items:    make(map[string]types.ResourceWithTTL, len(resources)),
		versions: make(map[string]string, len(resources)),
	}
	for _, r := range resources {
		b, err := cachev3.MarshalResource(r)
		if err != nil {
			return nil, fmt.Errorf("marshal %s: %w", r.GetName(), err)
		}
		t.items[r.GetName()] = types.ResourceWithTTL{Resource: r}
		t.versions[r.GetName()] = cachev3.HashResource(b)
	}
	t.version = version
	if version == "" {
		h := sha256.New()
		for _, name := range slices.Sorted(maps.Keys(t.versions)) {
			fmt.Fprintf(h, "%s=%s\n", name, t.versions[name])
		}
		t.version = "h" + hex.EncodeToString(h.Sum(nil))[:16]
	}
	return t, nil
}

// snapshot is a cachev3.ResourceSnapshot for any type URL; cachev3.Snapshot
// knows only Envoy's own types, not PolicyTypeURL.
type snapshot struct {
	byType map[string]*typeResources
}

var _ cachev3.ResourceSnapshot = (*snapshot)(nil)

func (s *snapshot) GetVersion(typeURL string) string {
	if t := s.byType[typeURL]; t != nil {
		return t.version
	}
	return ""
}

func (s *snapshot) GetResourcesAndTTL(typeURL string) map[string]types.ResourceWithTTL {
	if t := s.byType[typeURL]; t != nil {
		return t.items
	}
	return nil
}

func (s *snapshot) GetResources(typeURL string) map[string]types.Resource {
	t := s.byType[typeURL]
	if t == nil {
		return nil
	}
	out := make(map[string]types.Resource, len(t.items))
	for name, r := range t.items {
		out[name] = r.Resource
	}
	return out
}

// ConstructVersionMap has nothing to do: the hashes are computed when the
// resources are built.
func (s *snapshot) ConstructVersionMap() error { return nil }

func (s *snapshot) GetVersionMap(typeURL string) map[string]string {
	if t := s.byType[typeURL]; t != nil {
		return t.versions
	}
	return nil
}
