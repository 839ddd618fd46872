package xdsclient

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/tenantguard/tenantguard/policy/policypb"
)

// maxCacheBytes bounds the cache file read at start-up.
const maxCacheBytes = maxMessageBytes

// cacheFile is the cache file's content: the last good policy and its
// version, as JSON.
type cacheFile struct {
	Version string          `json:"version"`
	Policy  json.RawMessage `json:"policy"`
}

// writeCache writes version and p to path atomically: a temporary file in
// the same directory, synced, renamed over path, mode 0600 (the policy
// holds credential verifiers).
func writeCache(path, version string, p *policypb.Policy) (err error) {
	js, err := policypb.MarshalJSON(p)
	if err != nil {
		return err
	}
	data, err := json.MarshalIndent(cacheFile{Version: version, Policy: js}, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*") // mode 0600
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(append(data, '\n')); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	// Make the rename itself durable; not every file system can sync a
	// directory, and the file is in place either way.
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// readCache reads and checks a cache file: it must be one with a version
// and a policy that parses and validates.
func readCache(path string) (string, *policypb.Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxCacheBytes+1))
	if err != nil {
		return "", nil, err
	}
	if len(data) > maxCacheBytes {
		return "", nil, fmt.Errorf("larger than %d bytes", maxCacheBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var cf cacheFile
	if err := dec.Decode(&cf); err != nil {
		return "", nil, fmt.Errorf("not a policy cache file: %w", err)
	}
	if dec.More() {
		return "", nil, errors.New("not a policy cache file: data after the JSON object")
	}
	if cf.Version == "" || len(cf.Policy) == 0 {
		return "", nil, errors.New("not a policy cache file: no version or no policy")
	}
	p, err := policypb.ParseJSON(cf.Policy)
	if err != nil {
		return "", nil, err
	}
	if err := policypb.Validate(p); err != nil {
		return "", nil, fmt.Errorf("invalid policy: %w", err)
	}
	return cf.Version, p, nil
}

// loadCache applies the cached policy, if there is a good one. Anything
// wrong with it is logged and the file is otherwise ignored: the control
// plane will provide the policy.
func (c *Client) loadCache() {
	path := c.opts.CacheFile
	version, p, err := readCache(path)
	if errors.Is(err, fs.ErrNotExist) {
		c.log.Info("xds: no cached policy; waiting for the control plane", "file", path)
		return
	}
	if err == nil {
		err = c.update(version, p, false)
	}
	if err != nil {
		c.log.Warn("xds: ignoring the cached policy", "file", path, "error", err)
		return
	}
	c.log.Info("xds: started from the cached policy", "file", path, "version", version)
}
