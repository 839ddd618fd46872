// Package authz is tenantguard's Envoy external authorization service: an
// envoy.service.auth.v3.Authorization gRPC server that checks the session
// token in each HTTP request's Authorization header and, when it is good,
// tells Envoy to pass the request on with a trusted tenant identity in
// x-tenant-id, x-user-id and x-session-id.
package authz

import (
	"context"
	"encoding/json"
	"errors"
	"hash/maphash"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"

	"github.com/tenantguard/tenantguard/extauthz/session"
	"github.com/tenantguard/tenantguard/extauthz/token"
	"github.com/tenantguard/tenantguard/policy"
)

// Identity headers the service sets on allowed requests. They overwrite
// whatever the client sent under the same names, so an app behind Envoy
// can trust them.
const (
	HeaderTenant  = "x-tenant-id"
	HeaderUser    = "x-user-id"
	HeaderSession = "x-session-id"
)

// TokenChecker verifies session tokens; *session.Verifier is the
// implementation.
type TokenChecker interface {
	// Verify verifies tok (format, signature, times, revocation) and returns
	// its verdict, which carries the claims and counts the session's
	// requests for its analytics. It must not keep tok after it returns.
	Verify(ctx context.Context, tok string) (*session.Verdict, error)
}

// Options configure a Server.
type Options struct {
	// StripAuthorization removes the Authorization header from allowed
	// requests, so the app never holds the bearer token.
	StripAuthorization bool
	// TenantAllowed, if set, is asked for every verified token: a tenant
	// the current policy no longer has (or has suspended) is refused.
	TenantAllowed func(tenant string) bool
	// Realm goes into WWW-Authenticate; default "tenantguard".
	Realm string
}

// Server implements authv3.AuthorizationServer.
type Server struct {
	authv3.UnimplementedAuthorizationServer
	checker TokenChecker
	opts    Options
	log     *slog.Logger
	m       *metrics
	seed    maphash.Seed
	lastLog atomic.Int64 // unix nanoseconds of the last outage log line
	// strip is Options.StripAuthorization as in force now: a pushed policy
	// changes it with SetStripAuthorization while checks run.
	strip atomic.Bool
	// denials are the encoded answers of each denial code, made once: they
	// depend only on the code and the realm.
	denials map[string]*answer
}

// SetStripAuthorization says whether allowed requests from now on have
// their Authorization header removed (Options.StripAuthorization).
func (s *Server) SetStripAuthorization(strip bool) { s.strip.Store(strip) }

// StripsAuthorization reports whether allowed requests have their
// Authorization header removed now.
func (s *Server) StripsAuthorization() bool { return s.strip.Load() }

// logEvery reports whether a repeated warning may be logged now: at most
// once a second, so an outage under load does not flood the log.
func (s *Server) logEvery(now time.Time) bool {
	last := s.lastLog.Load()
	return now.UnixNano()-last >= int64(time.Second) && s.lastLog.CompareAndSwap(last, now.UnixNano())
}

// New returns a Server checking tokens with c and registering its metrics
// with reg.
func New(c TokenChecker, opts Options, reg prometheus.Registerer, log *slog.Logger) *Server {
	if opts.Realm == "" {
		opts.Realm = "tenantguard"
	}
	if log == nil {
		log = slog.Default()
	}
	s := &Server{checker: c, opts: opts, log: log, m: newMetrics(reg), seed: maphash.MakeSeed()}
	s.strip.Store(opts.StripAuthorization)
	s.denials = make(map[string]*answer, len(denialCodes))
	for _, code := range denialCodes {
		s.denials[code] = encodeAnswer(s.denial(code))
	}
	return s
}

// Denial codes: stable strings in the JSON body of a 401, for clients and
// dashboards. They never say more than the client needs to act: every
// one means "get a new token" except store_unavailable ("retry").
const (
	CodeMissing     = "token_missing"
	CodeWrongScheme = "wrong_scheme"
	CodeMalformed   = "token_malformed"
	CodeInvalid     = "token_invalid" // bad signature or unknown key
	CodeExpired     = "token_expired"
	CodeRevoked     = "session_revoked"
	CodeForbidden   = "tenant_not_allowed"
	CodeUnavailable = "store_unavailable"
)

// denialCodes are all the denial codes; resultOK is the result label of an
// allowed request.
var denialCodes = [...]string{CodeMissing, CodeWrongScheme, CodeMalformed, CodeInvalid, CodeExpired, CodeRevoked, CodeForbidden, CodeUnavailable}

const resultOK = "ok"

// request is what a decision reads of a CheckRequest.
type request struct {
	auth         string // the Authorization header
	hasAuth      bool
	method, path string
}

// requestOf reads a decoded CheckRequest.
func requestOf(req *authv3.CheckRequest) request {
	h := req.GetAttributes().GetRequest().GetHttp()
	auth, ok := header(h, "authorization")
	return request{auth: auth, hasAuth: ok, method: h.GetMethod(), path: h.GetPath()}
}

// Check answers one request from Envoy. Register serves the same answers
// without decoding the whole request; Check is for a server registered
// with authv3.RegisterAuthorizationServer.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	start := time.Now()
	r := requestOf(req)
	result, vd := s.decide(ctx, &r)
	var resp *authv3.CheckResponse
	if vd != nil {
		resp = okResponse(vd.Claims(), s.strip.Load())
	} else {
		resp = s.denial(result)
	}
	s.m.observe(result, start)
	return resp, nil
}

// decide judges a request: it returns resultOK and the token's verdict, or
// a denial code.
func (s *Server) decide(ctx context.Context, r *request) (string, *session.Verdict) {
	if !r.hasAuth || r.auth == "" {
		return CodeMissing, nil
	}
	scheme, tok, found := strings.Cut(r.auth, " ")
	// RFC 6750 §2.1: "Bearer" 1*SP b64token; the scheme is case-insensitive.
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return CodeWrongScheme, nil
	}
	tok = strings.TrimLeft(tok, " ")
	vd, err := s.checker.Verify(ctx, tok)
	if err != nil {
		code := denialCode(err)
		if code == CodeUnavailable && s.logEvery(time.Now()) {
			s.log.Warn("session store unavailable; refusing checks (logged at most once a second)", "error", err)
		}
		return code, nil
	}
	if s.opts.TenantAllowed != nil && !s.opts.TenantAllowed(vd.Claims().TenantID) {
		vd.Record(0, "tenant_not_allowed")
		return CodeForbidden, nil
	}
	vd.Record(s.fingerprint(r.method, r.path), "")
	return resultOK, vd
}

// okResponse allows a request, setting the identity headers.
func okResponse(c token.Claims, strip bool) *authv3.CheckResponse {
	ok3 := &authv3.OkHttpResponse{
		Headers: []*corev3.HeaderValueOption{
			setHeader(HeaderTenant, c.TenantID),
			setHeader(HeaderUser, c.UserID),
			setHeader(HeaderSession, c.SessionID.String()),
		},
	}
	if strip {
		ok3.HeadersToRemove = []string{"authorization"}
	}
	return &authv3.CheckResponse{
		Status:       &status.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok3},
	}
}

// fingerprint identifies a request's shape for the session's analytics:
// method and path without the query string.
func (s *Server) fingerprint(method, p string) uint64 {
	var mh maphash.Hash
	mh.SetSeed(s.seed)
	mh.WriteString(method)
	mh.WriteByte(' ')
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	mh.WriteString(p)
	return mh.Sum64()
}

// header finds a request header: Envoy sends lower-case names in Headers,
// or in HeaderMap when encode_raw_headers is on.
func header(h *authv3.AttributeContext_HttpRequest, name string) (string, bool) {
	if v, ok := h.GetHeaders()[name]; ok {
		return v, true
	}
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		if strings.EqualFold(hv.GetKey(), name) {
			if hv.GetRawValue() != nil {
				return string(hv.GetRawValue()), true
			}
			return hv.GetValue(), true
		}
	}
	return "", false
}

func setHeader(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: k, Value: v},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

// denialCode maps a verification error to its stable code.
func denialCode(err error) string {
	switch {
	case errors.Is(err, policy.ErrSessionUnavailable):
		return CodeUnavailable
	case errors.Is(err, token.ErrExpired), errors.Is(err, token.ErrNotYetValid), errors.Is(err, policy.ErrSessionExpired):
		return CodeExpired
	case errors.Is(err, policy.ErrSessionRevoked):
		return CodeRevoked
	case errors.Is(err, token.ErrMalformed), errors.Is(err, token.ErrUnsupportedVersion):
		return CodeMalformed
	default:
		return CodeInvalid
	}
}

func denialMessage(code string) string {
	switch code {
	case CodeExpired:
		return "the session token has expired or is not yet valid; refresh the session or sign in again"
	case CodeRevoked:
		return "the session has been revoked"
	case CodeMalformed:
		return "the bearer token is not a tenantguard session token"
	case CodeUnavailable:
		return "sessions cannot be checked right now; retry shortly"
	case CodeForbidden:
		return "the session's tenant is not allowed by the current policy"
	default:
		return "the session token is not valid"
	}
}

// errorBody is the JSON body of a denial, the same shape as the session
// API's errors.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// denial is the answer of a denial code.
func (s *Server) denial(code string) *authv3.CheckResponse {
	switch code {
	case CodeMissing:
		return s.deny(code, "the request has no Authorization header", "")
	case CodeWrongScheme:
		return s.deny(code, "the Authorization header must use the Bearer scheme", "invalid_request")
	}
	return s.deny(code, denialMessage(code), "invalid_token")
}

// deny builds a 401 with RFC 6750 WWW-Authenticate and a JSON body. A
// request with no credentials gets a challenge without an error code
// (RFC 6750 §3.1). A store outage is a 503 with Retry-After instead: the
// token may be fine, and the client should retry, not sign in again.
func (s *Server) deny(code, msg, oauthErr string) *authv3.CheckResponse {
	var b errorBody
	b.Error.Code, b.Error.Message = code, msg
	body, _ := json.Marshal(b)
	grpcCode, httpCode := codes.Unauthenticated, typev3.StatusCode_Unauthorized
	headers := []*corev3.HeaderValueOption{setHeader("content-type", "application/json")}
	if code == CodeUnavailable {
		grpcCode, httpCode = codes.Unavailable, typev3.StatusCode_ServiceUnavailable
		headers = append(headers, setHeader("retry-after", "1"))
	} else {
		challenge := `Bearer realm="` + s.opts.Realm + `"`
		if oauthErr != "" {
			challenge += `, error="` + oauthErr + `", error_description="` + msg + `"`
		}
		headers = append(headers, setHeader("www-authenticate", challenge))
	}
	return &authv3.CheckResponse{
		Status: &status.Status{Code: int32(grpcCode), Message: code},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: httpCode},
			Headers: headers,
			Body:    string(body),
		}},
	}
}

type metrics struct {
	checks   *prometheus.CounterVec
	latency  prometheus.Histogram
	byResult map[string]prometheus.Counter // checks' children, resolved once
}

// observe counts one answered check.
func (m *metrics) observe(result string, start time.Time) {
	m.byResult[result].Inc()
	m.latency.Observe(time.Since(start).Seconds())
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tenantguard_extauthz_checks_total",
			Help: "ext_authz Check calls by result (ok or a denial code).",
		}, []string{"result"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tenantguard_extauthz_check_seconds",
			Help:    "Time to answer one ext_authz Check.",
			Buckets: []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 50e-3},
		}),
	}
	if reg != nil {
		reg.MustRegister(m.checks, m.latency)
	}
	m.byResult = map[string]prometheus.Counter{resultOK: m.checks.WithLabelValues(resultOK)}
	for _, code := range denialCodes {
		m.byResult[code] = m.checks.WithLabelValues(code)
	}
	return m
}
