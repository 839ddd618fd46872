// Package sections decodes what every tenantguard configuration file
// shares — durations, errors that name the file and the field, listener and
// client TLS, bearer tokens, the `sessions:` and `controlplane:` sections —
// and the ext_authz service's file, which is made of nothing else.
//
// It imports nothing from proxy/ (nor the control plane, nor Kubernetes'
// types), so that the ext_authz service, which needs only this, links
// neither pg_query_go nor the data planes (make extauthz).
// internal/config builds the sidecar's, the control plane's and the
// injector's files on top of it and re-exports its types.
package sections

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written as "5s", "250ms".
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (e.g. 5s, 250ms)", n.Line, s)
	}
	if v < 0 {
		return fmt.Errorf("line %d: duration must not be negative", n.Line)
	}
	*d = Duration(v)
	return nil
}

// Error is a configuration error: which file, which field, what is wrong.
type Error struct {
	File  string
	Field string
	Msg   string
}

func (e *Error) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("%s: %s: %s", e.File, e.Field, e.Msg)
}

// DecodeStrict decodes one YAML document into v, refusing fields v does
// not have; errors name the file.
func DecodeStrict(name string, data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return &Error{File: name, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	return nil
}

// FieldError is a configuration error in one field, before it is tied to
// a file.
type FieldError struct{ Field, Msg string }

func failf(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// In ties the error to the file it was found in.
func (e *FieldError) In(file string) *Error { return &Error{File: file, Field: e.Field, Msg: e.Msg} }

// Resolve makes a path named in a configuration file relative to base
// (the file's directory) unless it is absolute.
func Resolve(base, p string) string {
	if filepath.IsAbs(p) || base == "" {
		return p
	}
	return filepath.Join(base, p)
}
