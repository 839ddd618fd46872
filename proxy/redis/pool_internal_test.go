package redis

import (
	"strings"
	"testing"
)

// TestCheckClientInfo: a connection is pooled only when CLIENT INFO after
// RESET shows nothing of its last user.
func TestCheckClientInfo(t *testing.T) {
	// redis-server 7.0.15, right after RESET.
	const clean = "id=42 addr=127.0.0.1:5000 laddr=127.0.0.1:6379 fd=9 name= age=3 idle=0 flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=26 qbuf-free=20448 argv-mem=10 multi-mem=0 rbs=1024 rbp=5 obl=0 oll=0 omem=0 tot-mem=22298 events=r cmd=client|info user=default redir=-1 resp=2"
	for _, tc := range []struct {
		name, from, to string // the change to the clean line
		user           string
		ok             bool
	}{
		{name: "clean", ok: true},
		{name: "clean, redis 7.4 fields", from: "multi=-1", to: "multi=-1 watch=0", ok: true},
		{name: "clean, no ssub (before 7.0.3)", from: " ssub=0", to: "", ok: true},
		{name: "proxy's own user", from: "user=default", to: "user=tg", user: "tg", ok: true},
		{name: "subscribed", from: "sub=0", to: "sub=1"},
		{name: "pattern subscribed", from: "psub=0", to: "psub=2"},
		{name: "shard subscribed", from: "ssub=0", to: "ssub=1"},
		{name: "in MULTI", from: "multi=-1", to: "multi=3"},
		{name: "watching", from: "multi=-1", to: "multi=-1 watch=1"},
		{name: "flags", from: "flags=N", to: "flags=x"},
		{name: "tracking", from: "flags=N", to: "flags=t"},
		{name: "named", from: "name= ", to: "name=acme "},
		{name: "another db", from: "db=0", to: "db=3"},
		{name: "RESP3", from: "resp=2", to: "resp=3"},
		{name: "redirecting", from: "redir=-1", to: "redir=7"},
		{name: "another user", from: "user=default", to: "user=other"},
		{name: "no sub field", from: " sub=0", to: ""},
		{name: "no id", from: "id=42 ", to: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			line := clean
			if tc.from != "" {
				line = strings.Replace(clean, tc.from, tc.to, 1)
			}
			user := tc.user
			if user == "" {
				user = "default"
			}
			id, err := checkClientInfo(line, user)
			if tc.ok && (err != nil || id != 42) {
				t.Fatalf("refused: %d %v", id, err)
			}
			if !tc.ok && err == nil {
				t.Fatalf("accepted %q", line)
			}
		})
	}
}

// FuzzCheckClientInfo: any CLIENT INFO text is accepted or refused without
// a panic, and what is accepted names no state of a previous user.
func FuzzCheckClientInfo(f *testing.F) {
	f.Add("id=42 addr=127.0.0.1:5000 fd=9 name= flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 user=default redir=-1 resp=2")
	f.Add("id=7 name= flags=N db=0 sub=0 psub=0 multi=-1 watch=0 user=default redir=-1 resp=2\n")
	f.Add("id=1 name=x flags=P db=1 sub=2 psub=0 multi=3 user=u redir=-1 resp=3")
	f.Add("flags=N flags=x id=1")
	f.Fuzz(func(t *testing.T, info string) {
		if _, err := checkClientInfo(info, "default"); err != nil {
			return
		}
		fields := map[string]string{}
		for _, f := range strings.Fields(info) {
			if k, v, ok := strings.Cut(f, "="); ok {
				fields[k] = v
			}
		}
		for k, v := range map[string]string{"flags": "N", "db": "0", "name": "", "sub": "0", "psub": "0", "multi": "-1", "resp": "2", "user": "default"} {
			if got, ok := fields[k]; !ok || got != v {
				t.Fatalf("accepted %q with %s=%q", info, k, got)
			}
		}
	})
}
