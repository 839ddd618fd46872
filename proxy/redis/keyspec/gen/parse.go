package main

import (
	"errors"
	"fmt"
	"strings"
)

// command is one COMMAND INFO entry merged with its COMMAND DOCS entry.
type command struct {
	name, group, since string
	arity              int
	flags, categories  []string
	tips, docFlags     []string
	specs              []keySpec
	subs               []string
}

// keySpec is one key specification from COMMAND INFO.
type keySpec struct {
	flags                   []string
	bsType, keyword         string
	index, startFrom        int
	fkType                  string
	lastKey, keyStep, limit int
	keyNumIdx, firstKey     int
	notes                   string
}

// collect asks the server for its version and every command.
func collect(c *conn) (version string, cmds map[string]*command, err error) {
	r, err := c.do("INFO", "server")
	if err != nil {
		return "", nil, fmt.Errorf("INFO server: %w", err)
	}
	info, _ := r.(string)
	for line := range strings.SplitSeq(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "redis_version:"); ok {
			version = v
		}
	}
	if version == "" {
		return "", nil, errors.New("INFO server: no redis_version")
	}
	r, err = c.do("COMMAND", "INFO")
	if err != nil {
		return "", nil, fmt.Errorf("COMMAND INFO: %w", err)
	}
	cmds = map[string]*command{}
	if err := addInfos(cmds, r); err != nil {
		return "", nil, fmt.Errorf("COMMAND INFO: %w", err)
	}
	r, err = c.do("COMMAND", "DOCS")
	if err != nil {
		return "", nil, fmt.Errorf("COMMAND DOCS: %w", err)
	}
	if err := addDocs(cmds, r); err != nil {
		return "", nil, fmt.Errorf("COMMAND DOCS: %w", err)
	}
	return version, cmds, nil
}

// addInfos adds COMMAND INFO entries, and their subcommands, to cmds.
func addInfos(cmds map[string]*command, reply any) error {
	entries, err := array(reply)
	if err != nil {
		return err
	}
	for _, e := range entries {
		f, err := array(e)
		if err != nil {
			return err
		}
		if len(f) < 10 {
			return fmt.Errorf("entry %v has %d fields, want 10 (redis-server 7.0 or later)", f, len(f))
		}
		cmd := &command{}
		if cmd.name, err = str(f[0]); err != nil {
			return err
		}
		if cmd.arity, err = integer(f[1]); err != nil {
			return err
		}
		if cmd.flags, err = strs(f[2]); err != nil {
			return err
		}
		if cmd.categories, err = strs(f[6]); err != nil {
			return err
		}
		if cmd.tips, err = strs(f[7]); err != nil {
			return err
		}
		specs, err := array(f[8])
		if err != nil {
			return err
		}
		for i, s := range specs {
			ks, err := parseKeySpec(s)
			if err != nil {
				return fmt.Errorf("%s key spec %d: %w", cmd.name, i, err)
			}
			cmd.specs = append(cmd.specs, ks)
		}
		if _, dup := cmds[cmd.name]; dup {
			return fmt.Errorf("command %q listed twice", cmd.name)
		}
		cmds[cmd.name] = cmd
		subs, err := array(f[9])
		if err != nil {
			return err
		}
		for _, s := range subs {
			sf, err := array(s)
			if err != nil || len(sf) == 0 {
				return fmt.Errorf("%s: malformed subcommand %v", cmd.name, s)
			}
			name, err := str(sf[0])
			if err != nil {
				return err
			}
			cmd.subs = append(cmd.subs, name)
		}
		if err := addInfos(cmds, f[9]); err != nil {
			return err
		}
	}
	return nil
}

func parseKeySpec(v any) (keySpec, error) {
	var ks keySpec
	m, err := fields(v)
	if err != nil {
		return ks, err
	}
	if ks.flags, err = strs(m["flags"]); err != nil {
		return ks, err
	}
	if n, ok := m["notes"]; ok {
		if ks.notes, err = str(n); err != nil {
			return ks, err
		}
	}
	bs, err := fields(m["begin_search"])
	if err != nil {
		return ks, fmt.Errorf("begin_search: %w", err)
	}
	if ks.bsType, err = str(bs["type"]); err != nil {
		return ks, err
	}
	spec, err := fields(bs["spec"])
	if err != nil {
		return ks, err
	}
	switch ks.bsType {
	case "index":
		ks.index, err = integer(spec["index"])
	case "keyword":
		if ks.keyword, err = str(spec["keyword"]); err == nil {
			ks.startFrom, err = integer(spec["startfrom"])
		}
	case "unknown":
	default:
		err = fmt.Errorf("unsupported begin_search type %q", ks.bsType)
	}
	if err != nil {
		return ks, fmt.Errorf("begin_search: %w", err)
	}
	fk, err := fields(m["find_keys"])
	if err != nil {
		return ks, fmt.Errorf("find_keys: %w", err)
	}
	if ks.fkType, err = str(fk["type"]); err != nil {
		return ks, err
	}
	if spec, err = fields(fk["spec"]); err != nil {
		return ks, err
	}
	switch ks.fkType {
	case "range":
		err = ints(spec, map[string]*int{"lastkey": &ks.lastKey, "keystep": &ks.keyStep, "limit": &ks.limit})
	case "keynum":
		err = ints(spec, map[string]*int{"keynumidx": &ks.keyNumIdx, "firstkey": &ks.firstKey, "keystep": &ks.keyStep})
	case "unknown":
	default:
		err = fmt.Errorf("unsupported find_keys type %q", ks.fkType)
	}
	if err != nil {
		return ks, fmt.Errorf("find_keys: %w", err)
	}
	return ks, nil
}

// addDocs merges COMMAND DOCS group, since and doc_flags into cmds.
func addDocs(cmds map[string]*command, reply any) error {
	docs, err := fields(reply)
	if err != nil {
		return err
	}
	for name, d := range docs {
		cmd := cmds[name]
		if cmd == nil {
			return fmt.Errorf("%q has docs but no COMMAND INFO entry", name)
		}
		doc, err := fields(d)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if cmd.group, err = str(doc["group"]); err != nil {
			return fmt.Errorf("%s group: %w", name, err)
		}
		if cmd.since, err = str(doc["since"]); err != nil {
			return fmt.Errorf("%s since: %w", name, err)
		}
		if f, ok := doc["doc_flags"]; ok {
			if cmd.docFlags, err = strs(f); err != nil {
				return fmt.Errorf("%s doc_flags: %w", name, err)
			}
		}
		if subs, ok := doc["subcommands"]; ok {
			if err := addDocs(cmds, subs); err != nil {
				return err
			}
		}
	}
	return nil
}

func array(v any) ([]any, error) {
	a, ok := v.([]any)
	if !ok && v != nil {
		return nil, fmt.Errorf("want array, got %T %v", v, v)
	}
	return a, nil
}

func str(v any) (string, error) {
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("want string, got %T %v", v, v)
	}
	return s, nil
}

func integer(v any) (int, error) {
	i, ok := v.(int64)
	if !ok {
		return 0, fmt.Errorf("want integer, got %T %v", v, v)
	}
	return int(i), nil
}

func strs(v any) ([]string, error) {
	a, err := array(v)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(a))
	for i, e := range a {
		if out[i], err = str(e); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// fields reads a RESP2 map: an array of alternating names and values.
func fields(v any) (map[string]any, error) {
	a, err := array(v)
	if err != nil {
		return nil, err
	}
	if len(a)%2 != 0 {
		return nil, fmt.Errorf("map with odd length %d", len(a))
	}
	m := make(map[string]any, len(a)/2)
	for i := 0; i < len(a); i += 2 {
		k, err := str(a[i])
		if err != nil {
			return nil, err
		}
		m[k] = a[i+1]
	}
	return m, nil
}

func ints(m map[string]any, dst map[string]*int) error {
	for name, p := range dst {
		var err error
		if *p, err = integer(m[name]); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}
