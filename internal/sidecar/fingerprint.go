package sidecar

import (
	"fmt"
	"io"
	"strings"

	"github.com/tenantguard/tenantguard/policy"
	"github.com/tenantguard/tenantguard/proxy/pg/firewall"
	"github.com/tenantguard/tenantguard/proxy/pg/rls"
)

// Fingerprint prints a statement's fingerprint as pg_cache rules name it,
// and what the result cache's analysis says of it: whether it may be
// cached (or why not) and the relations it reads. It runs the sidecar's
// own firewall, so the fingerprint is the one the sidecar computes.
func Fingerprint(sql string, out io.Writer) error {
	fw, err := firewall.New(firewall.Config{BindingSetting: rls.Setting, ProtectedSchema: rls.Schema})
	if err != nil {
		return err
	}
	defer fw.Close()
	v := fw.Check(sql)
	if v.Syntax || v.Fingerprint == 0 {
		return fmt.Errorf("the statement does not parse: %s", v.Reason)
	}
	fmt.Fprintf(out, "fingerprint: %s\n", policy.FormatFingerprint(v.Fingerprint))
	ci := v.Cache
	switch {
	case v.Refused() || ci == nil:
		fmt.Fprintf(out, "cacheable: no (refused by the firewall: %s)\n", v.Reason)
	case !ci.Cacheable:
		fmt.Fprintf(out, "cacheable: no (%s)\n", ci.Reason)
	default:
		var reads []string
		for _, r := range ci.Reads {
			reads = append(reads, r.String())
		}
		fmt.Fprintf(out, "cacheable: yes, if every table it reads carries the invalidation trigger\nreads: %s\n", strings.Join(reads, ", "))
		if len(ci.Functions) > 0 {
			fmt.Fprintf(out, "needs in pg_cache.stable_functions: %s\n", strings.Join(ci.Functions, ", "))
		}
	}
	return nil
}
