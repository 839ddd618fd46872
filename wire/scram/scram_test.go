package scram

import (
	"strings"
	"testing"

	xdgscram "github.com/xdg-go/scram"
)

// TestSCRAMExchange runs a real SCRAM client against the server side.
func TestSCRAMExchange(t *testing.T) {
	v, err := NewVerifier("s3cret-password")
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := ParseVerifier(v.String())
	if err != nil || !parsed.Equal(v) {
		t.Fatalf("verifier round trip: %v", err)
	}
	for _, tc := range []struct {
		name, password string
		valid          bool
	}{
		{"right", "s3cret-password", true},
		{"wrong", "s3cret-passwore", false},
		{"empty", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, err := xdgscram.SHA256.NewClient("", tc.password, "")
			if err != nil {
				t.Fatal(err)
			}
			conv := client.NewConversation()
			srv, err := NewServer(parsed)
			if err != nil {
				t.Fatal(err)
			}
			first, _ := conv.Step("")
			sfirst, err := srv.Step([]byte(first))
			if err != nil {
				t.Fatal(err)
			}
			final, err := conv.Step(string(sfirst))
			if err != nil {
				t.Fatal(err)
			}
			sfinal, err := srv.Step([]byte(final))
			if srv.Valid() != tc.valid {
				t.Fatalf("valid = %v (err %v)", srv.Valid(), err)
			}
			if tc.valid {
				if _, err := conv.Step(string(sfinal)); err != nil {
					t.Fatalf("client rejects server signature: %v", err)
				}
			}
		})
	}
}

func TestParseVerifierErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"md5abc", "must start with"},
		{"SCRAM-SHA-256$4096:c2FsdA==", "missing keys"},
		{"SCRAM-SHA-256$x:c2FsdA==$a:b", "iteration"},
		{"SCRAM-SHA-256$4096:c2FsdA==$AAAA:BBBB", "StoredKey"},
	} {
		_, err := ParseVerifier(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.in, err, tc.want)
		}
	}
}

// TestMockVerifierIsStable: an unknown user sees the same salt every time,
// so probing cannot tell it from a known user.
func TestMockVerifierIsStable(t *testing.T) {
	a := MockVerifier("nobody", []byte("k"))
	b := MockVerifier("nobody", []byte("k"))
	c := MockVerifier("other", []byte("k"))
	if !a.Equal(b) || string(a.Salt) == string(c.Salt) {
		t.Fatal("mock verifier not deterministic per user")
	}
}

func TestVerifierVerify(t *testing.T) {
	v, err := NewVerifier("open sesame!")
	if err != nil {
		t.Fatal(err)
	}
	if !v.Verify("open sesame!") || v.Verify("open sesame?") || v.Verify("") {
		t.Fatal("Verify disagrees with the password")
	}
}
