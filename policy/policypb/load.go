package policypb

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// LoadDir reads every *.yaml, *.yml and *.json file directly in dir (not in
// subdirectories; names starting with '.' are skipped, as are Kubernetes
// ConfigMap mounts' "..data" entries) in name order and merges them into one
// Policy: tenants, tables and clusters are appended in file order; version,
// redis, sessions and pg_cache may each be set in at most one file, else the
// error names both files. A directory with no such file is an error. LoadDir does not
// validate: call Validate on the result (its tenants[i] indices count across
// the files in name order).
func LoadDir(dir string) (*Policy, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("policy dir: %w", err)
	}
	out := &Policy{}
	var files int
	var versionFrom, redisFrom, sessionsFrom, pgCacheFrom string
	for _, e := range entries {
		name := e.Name()
		parse := parserFor(name)
		if e.IsDir() || strings.HasPrefix(name, ".") || parse == nil {
			continue
		}
		path := filepath.Join(dir, name)
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("policy dir: %w", err)
		}
		p, err := parse(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		files++
		for _, s := range []struct {
			section string
			set     bool
			from    *string
		}{{"version", p.GetVersion() != "", &versionFrom}, {"redis", p.GetRedis() != nil, &redisFrom}, {"sessions", p.GetSessions() != nil, &sessionsFrom}, {"pg_cache", p.GetPgCache() != nil, &pgCacheFrom}} {
			if !s.set {
				continue
			}
			if *s.from != "" {
				return nil, fmt.Errorf("policy dir %s: %s is set in both %s and %s; set it in one file", dir, s.section, *s.from, path)
			}
			*s.from = path
		}
		if p.Version != "" {
			out.Version = p.Version
		}
		if p.Redis != nil {
			out.Redis = p.Redis
		}
		if p.Sessions != nil {
			out.Sessions = p.Sessions
		}
		if p.PgCache != nil {
			out.PgCache = p.PgCache
		}
		out.Tenants = append(out.Tenants, p.Tenants...)
		out.Tables = append(out.Tables, p.Tables...)
		out.Clusters = append(out.Clusters, p.Clusters...)
	}
	if files == 0 {
		return nil, fmt.Errorf("policy dir %s: no *.yaml, *.yml or *.json file", dir)
	}
	return out, nil
}

// parserFor picks the parser by file extension; nil for other files.
func parserFor(name string) func([]byte) (*Policy, error) {
	switch filepath.Ext(name) {
	case ".yaml", ".yml":
		return ParseYAML
	case ".json":
		return ParseJSON
	}
	return nil
}
