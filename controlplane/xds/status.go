package xds

import (
	"context"
	"log/slog"
	"maps"
	"sync"
	"time"
	"unicode/utf8"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	deltav3 "github.com/envoyproxy/go-control-plane/pkg/server/delta/v3"
	sotwv3 "github.com/envoyproxy/go-control-plane/pkg/server/sotw/v3"
)

// NodeStatus is what the server knows of one node (data plane) and the
// policy: what it accepted and what it rejected. Envoy-only nodes, which do
// not subscribe to the policy, have only Cluster, Streams and LastSeen.
type NodeStatus struct {
	// Cluster is the node's cluster as it reported it.
	Cluster string
	// Streams is the number of ADS streams the node has open now; 0 for a
	// node that disconnected (kept for Options.ForgetAfter).
	Streams int
	// AckedVersion is the last policy version the node accepted, and
	// LastAck when.
	AckedVersion string
	LastAck      time.Time
	// NackedVersion is the last policy version the node rejected, LastError
	// the error it gave (error_detail.message) and LastNack when. A later
	// ACK does not clear them: compare LastAck and LastNack.
	NackedVersion string
	LastError     string
	LastNack      time.Time
	// LastSeen is when the node last sent a request or closed a stream.
	LastSeen time.Time
	// Policy says the node has subscribed to the policy (a data plane,
	// not an Envoy that takes only listeners and clusters).
	Policy bool
}

// sentResponse is the last response of one type on one stream.
type sentResponse struct {
	nonce, version string
}

// streamState is what the tracker keeps per stream.
type streamState struct {
	node string                  // "" until a request names the node
	sent map[string]sentResponse // by type URL
}

// streamKey tells SotW and delta streams apart: the two servers number
// their streams independently.
type streamKey struct {
	delta bool
	id    int64
}

// tracker implements the server callbacks: it follows every stream's
// responses and the ACKs and NACKs that answer them.
type tracker struct {
	log         *slog.Logger
	m           *metrics
	onStatus    func(node string, st NodeStatus)
	forgetAfter time.Duration
	now         func() time.Time

	mu        sync.Mutex
	streams   map[streamKey]*streamState
	nodes     map[string]*NodeStatus
	lastPrune time.Time
}

var (
	_ sotwv3.Callbacks  = (*tracker)(nil)
	_ deltav3.Callbacks = (*tracker)(nil)
)

func newTracker(log *slog.Logger, m *metrics, onStatus func(string, NodeStatus), forgetAfter time.Duration) *tracker {
	return &tracker{
		log: log, m: m, onStatus: onStatus, forgetAfter: forgetAfter, now: time.Now,
		streams: make(map[streamKey]*streamState),
		nodes:   make(map[string]*NodeStatus),
	}
}

func (t *tracker) open(k streamKey) {
	t.mu.Lock()
	t.streams[k] = &streamState{sent: make(map[string]sentResponse)}
	t.mu.Unlock()
	t.m.streams.WithLabelValues(protocol(k.delta)).Inc()
}

func (t *tracker) closed(k streamKey) {
	t.m.streams.WithLabelValues(protocol(k.delta)).Dec()
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.streams[k]
	delete(t.streams, k)
	now := t.now()
	if st != nil && st.node != "" {
		if n := t.nodes[st.node]; n != nil {
			n.Streams--
			n.LastSeen = now
		}
	}
	// Forget long-gone nodes, at most once a minute.
	if now.Sub(t.lastPrune) >= time.Minute {
		t.lastPrune = now
		for id, n := range t.nodes {
			if n.Streams <= 0 && now.Sub(n.LastSeen) > t.forgetAfter {
				delete(t.nodes, id)
			}
		}
	}
}

// identify records the stream's node from its first request that names one.
func (t *tracker) identify(st *streamState, node *core.Node) {
	if st.node != "" || node.GetId() == "" {
		return
	}
	st.node = node.GetId()
	n := t.nodes[st.node]
	if n == nil {
		n = &NodeStatus{}
		t.nodes[st.node] = n
	}
	n.Cluster = node.GetCluster()
	n.Streams++
}

// request handles a request: the first on a type subscribes; one carrying
// the nonce of the last response of its type ACKs or NACKs that response;
// one with an older nonce is stale (the server ignores it too). It returns
// the version the request NACKs, "" if it is no NACK.
func (t *tracker) request(k streamKey, node *core.Node, typeURL, nonce, errMsg string, isNack bool) string {
	errMsg = truncate(errMsg, maxErrorLen)
	now := t.now()
	t.mu.Lock()
	st := t.streams[k]
	if st == nil { // cannot happen: opened before any request
		t.mu.Unlock()
		return ""
	}
	t.identify(st, node)
	n := t.nodes[st.node]
	if n != nil {
		n.LastSeen = now
		if typeURL == PolicyTypeURL {
			n.Policy = true
		}
	}
	sent, ok := st.sent[typeURL]
	if nonce == "" || !ok || sent.nonce != nonce {
		t.mu.Unlock()
		return ""
	}
	label := typeLabel(typeURL)
	var status NodeStatus
	policy := typeURL == PolicyTypeURL && n != nil
	if policy {
		if isNack {
			n.NackedVersion, n.LastError, n.LastNack = sent.version, errMsg, now
		} else {
			n.AckedVersion, n.LastAck = sent.version, now
		}
		status = *n
	}
	nodeID := st.node
	t.mu.Unlock()

	if isNack {
		t.m.nacks.WithLabelValues(label).Inc()
		t.log.Warn("xds: node rejected an update", "node", nodeID, "type", label, "version", sent.version, "error", errMsg)
	} else {
		t.m.acks.WithLabelValues(label).Inc()
	}
	if policy && t.onStatus != nil {
		t.onStatus(nodeID, status)
	}
	if isNack {
		return sent.version
	}
	return ""
}

func (t *tracker) response(k streamKey, typeURL, nonce, version string) {
	t.mu.Lock()
	if st := t.streams[k]; st != nil {
		st.sent[typeURL] = sentResponse{nonce: nonce, version: version}
	}
	t.mu.Unlock()
	t.m.responses.WithLabelValues(typeLabel(typeURL)).Inc()
}

// status returns a copy of every node's status.
func (t *tracker) status() map[string]NodeStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]NodeStatus, len(t.nodes))
	for id, n := range t.nodes {
		out[id] = *n
	}
	return out
}

// countAcked counts connected nodes whose last ACK is for version.
func (t *tracker) countAcked(version string) int {
	if version == "" {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var n int
	for st := range maps.Values(t.nodes) {
		if st.Streams > 0 && st.AckedVersion == version {
			n++
		}
	}
	return n
}

// maxErrorLen bounds a NACK's error message as kept and logged: it comes
// from the node.
const maxErrorLen = 1024

// truncate cuts s to at most n bytes, at a UTF-8 boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func protocol(delta bool) string {
	if delta {
		return protocolDelta
	}
	return protocolSotW
}

// The go-control-plane callbacks. They run on the stream's goroutine.

func (t *tracker) OnStreamOpen(_ context.Context, id int64, _ string) error {
	t.open(streamKey{id: id})
	return nil
}

func (t *tracker) OnStreamClosed(id int64, _ *core.Node) { t.closed(streamKey{id: id}) }

func (t *tracker) OnDeltaStreamOpen(_ context.Context, id int64, _ string) error {
	t.open(streamKey{delta: true, id: id})
	return nil
}

func (t *tracker) OnDeltaStreamClosed(id int64, _ *core.Node) {
	t.closed(streamKey{delta: true, id: id})
}

// OnStreamRequest tracks a SotW request. A NACK's version_info is the last
// version the node accepted, which differs from the snapshot's, so the
// snapshot cache would resend the rejected response at once, and again
// after every NACK. The request is rewritten to name the rejected version
// instead: the cache then holds the watch until a newer version exists.
func (t *tracker) OnStreamRequest(id int64, req *discovery.DiscoveryRequest) error {
	nacked := t.request(streamKey{id: id}, req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(),
		req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
	if nacked != "" {
		req.VersionInfo = nacked
	}
	return nil
}

func (t *tracker) OnStreamResponse(_ context.Context, id int64, _ *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
	t.response(streamKey{id: id}, resp.GetTypeUrl(), resp.GetNonce(), resp.GetVersionInfo())
}

// OnStreamDeltaRequest tracks a delta request. Delta needs no rewrite: the
// server remembers what it sent per resource and resends only changes.
func (t *tracker) OnStreamDeltaRequest(id int64, req *discovery.DeltaDiscoveryRequest) error {
	t.request(streamKey{delta: true, id: id}, req.GetNode(), req.GetTypeUrl(), req.GetResponseNonce(),
		req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
	return nil
}

func (t *tracker) OnStreamDeltaResponse(id int64, _ *discovery.DeltaDiscoveryRequest, resp *discovery.DeltaDiscoveryResponse) {
	t.response(streamKey{delta: true, id: id}, resp.GetTypeUrl(), resp.GetNonce(), resp.GetSystemVersionInfo())
}
