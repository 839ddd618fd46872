package authz_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/tenantguard/tenantguard/extauthz/authz"
	"github.com/tenantguard/tenantguard/extauthz/session"
	"github.com/tenantguard/tenantguard/extauthz/token"
)

// signatureOnly checks tokens with a token.Verifier alone (no store), so
// the fuzzer exercises header parsing, token parsing and the answer.
type signatureOnly struct{ v *token.Verifier }

func (s signatureOnly) Verify(_ context.Context, tok string) (*session.Verdict, error) {
	c, err := s.v.Verify(tok, time.Now())
	if err != nil {
		return nil, err
	}
	return session.NewVerdict(c), nil
}

// FuzzCheck: any Authorization header gets an answer, never a panic; only
// the untouched valid token is allowed, and a denial is always a 401 with
// a JSON body.
func FuzzCheck(f *testing.F) {
	key, err := token.GenerateKey("fuzz")
	if err != nil {
		f.Fatal(err)
	}
	v, _ := token.NewVerifier(key.Public())
	c, _ := token.NewClaims("acme", "alice", time.Now(), time.Hour)
	good, _ := key.Sign(c)
	srv := authz.New(signatureOnly{v}, authz.Options{StripAuthorization: true}, nil, nil)
	for _, seed := range []string{"", "Bearer ", "Bearer " + good, "bearer  " + good, "Basic x", "Bearer tg1.", "Bearer tg1.AAAA.BBBB", "Bearer " + good[:100], good} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, hdr string) {
		resp, err := srv.Check(context.Background(), envoyRequest(map[string]string{"authorization": hdr}))
		if err != nil {
			t.Fatal(err)
		}
		scheme, tok, _ := strings.Cut(hdr, " ")
		tok = strings.TrimLeft(tok, " ")
		if resp.GetStatus().GetCode() == int32(codes.OK) {
			if !strings.EqualFold(scheme, "bearer") || tok != good {
				t.Fatalf("allowed %q", hdr)
			}
			return
		}
		d := resp.GetDeniedResponse()
		if d == nil || !strings.HasPrefix(d.GetBody(), `{"error":{"code":"`) {
			t.Fatalf("denial without a JSON body: %v", resp)
		}
	})
}
