package rules_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/tenantguard/tenantguard/proxy/redis/keyspec"
	"github.com/tenantguard/tenantguard/proxy/redis/rules"
)

// minimalArgs returns argv for cmd with the fewest arguments its arity
// allows, each "x".
func minimalArgs(cmd *keyspec.Command) [][]byte {
	var args [][]byte
	for name := range strings.SplitSeq(cmd.Name, "|") {
		args = append(args, []byte(strings.ToUpper(name)))
	}
	for len(args) < max(cmd.Arity, -cmd.Arity) {
		args = append(args, []byte("x"))
	}
	return args
}

// acceptedKeyless are the commands without keys that the most permissive
// Policy forwards or answers (with "x" arguments): a change to the table
// that lets another keyless command through must be added here on purpose.
var acceptedKeyless = []string{
	"asking", "auth", "client|caching", "client|getname", "client|getredir", "client|help",
	"client|id", "client|info", "client|setname", "client|tracking", "client|trackinginfo", "cluster|keyslot",
	"command", "command|count", "command|docs", "command|getkeys", "command|getkeysandflags",
	"command|help", "command|info", "command|list", "dbsize", "discard", "echo", "exec",
	"flushall", "flushdb", "function|help", "hello", "info", "keys", "lolwut", "memory|help", "multi",
	"object|help", "ping", "psubscribe", "publish", "pubsub|channels", "pubsub|help",
	"pubsub|numsub", "pubsub|shardchannels", "pubsub|shardnumsub", "punsubscribe", "quit",
	"readonly", "readwrite", "reset", "scan", "script|exists", "script|flush", "script|help", "script|load",
	"spublish", "ssubscribe", "subscribe", "sunsubscribe", "time", "unsubscribe", "unwatch",
	"wait", "xgroup|help", "xinfo|help",
}

// TestEveryCommand runs every command of the table under the strictest and
// the most permissive policy: nothing panics, admin commands are always
// refused, keyless commands get through only when listed above, and every
// accepted command with keys has them all prefixed.
func TestEveryCommand(t *testing.T) {
	var keyless []string
	for _, cmd := range keyspec.Commands() {
		args := minimalArgs(cmd)
		for _, pol := range []*rules.Policy{nil, open} {
			out, plan, err := rules.NewRewriter(acme, pol).Rewrite(args)
			var re *rules.Error
			if err != nil {
				if !errors.As(err, &re) && !strings.HasPrefix(err.Error(), "ERR ") {
					t.Errorf("%s: error %q", cmd.Name, err)
				}
				continue
			}
			if cmd.Flags.Has(keyspec.FlagAdmin) {
				t.Errorf("admin command %s accepted (%v)", cmd.Name, plan)
			}
			if !cmd.HasKeys() {
				if pol == open && len(cmd.Subcommands) == 0 || cmd.Name == "command" {
					keyless = append(keyless, cmd.Name)
				}
				continue
			}
			if !plan.Forward() {
				t.Errorf("%s with keys answered locally (%v)", cmd.Name, plan)
				continue
			}
			checkKeysPrefixed(t, cmd, out)
		}
	}
	slices.Sort(keyless)
	keyless = slices.Compact(keyless)
	for _, name := range keyless {
		if !slices.Contains(acceptedKeyless, name) {
			t.Errorf("keyless command %s is accepted but not listed in acceptedKeyless", name)
		}
	}
	for _, name := range acceptedKeyless {
		if !slices.Contains(keyless, name) {
			t.Errorf("%s is listed in acceptedKeyless but refused", name)
		}
	}
}

// checkKeysPrefixed checks that every key keyspec locates in out, and for
// SORT the sorted key, carries the tenant's prefix.
func checkKeysPrefixed(t *testing.T, cmd *keyspec.Command, out [][]byte) {
	t.Helper()
	if !cmd.KeysComplete() {
		if _, ok := acme.StripKey(out[1]); !ok {
			t.Errorf("%s: key %q not prefixed", cmd.Name, out[1])
		}
		return
	}
	idx, err := cmd.AppendKeyIndexes(nil, out)
	if err != nil {
		t.Errorf("%s %q: output keys: %v", cmd.Name, join(out), err)
	}
	for _, i := range idx {
		if _, ok := acme.StripKey(out[i]); !ok {
			t.Errorf("%s %q: key %q at %d not prefixed", cmd.Name, join(out), out[i], i)
		}
	}
}
