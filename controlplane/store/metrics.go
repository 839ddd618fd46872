package store

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	versionDesc = prometheus.NewDesc("tenantguard_controlplane_policy_version",
		"The newest policy version this control plane knows of (0: none stored).", nil, nil)
	listenerUpDesc = prometheus.NewDesc("tenantguard_controlplane_listener_up",
		"1 while the store's LISTEN connection for new versions is up.", nil, nil)
	listenerConnectsDesc = prometheus.NewDesc("tenantguard_controlplane_listener_connects_total",
		"LISTEN connections established, the first one included (more than one means reconnects).", nil, nil)

	auditOKDesc = prometheus.NewDesc("tenantguard_controlplane_audit_chain_ok",
		"1 if the audit chain verified at the last check, 0 if it did not (altered, deleted or inserted entries or versions, bad or missing signatures); a problem stays 0 until a full check passes; absent before the first check.", nil, nil)
	auditLastCheckDesc = prometheus.NewDesc("tenantguard_controlplane_audit_last_check_timestamp_seconds",
		"When a check of the audit chain (incremental or full) last completed, verified or not (Unix time); the control plane's start until the first one.", nil, nil)
	auditLastFullDesc = prometheus.NewDesc("tenantguard_controlplane_audit_last_full_check_timestamp_seconds",
		"When a full check of the audit chain (from its first entry) last completed, verified or not (Unix time); the control plane's start until the first one.", nil, nil)
	auditVerifiedSeqDesc = prometheus.NewDesc("tenantguard_controlplane_audit_verified_seq",
		"The checkpoint: the audit chain verified from its first entry up to this seq.", nil, nil)
	auditKeyedFromDesc = prometheus.NewDesc("tenantguard_controlplane_audit_keyed_from_seq",
		"The first signed audit entry (0: none is); entries before it were written without an audit key.", nil, nil)
	auditSigningKeyDesc = prometheus.NewDesc("tenantguard_controlplane_audit_signing_key_info",
		"1, labelled with the id of the key this control plane signs audit entries with; absent without one.", []string{"key_id"}, nil)
)

// initAudit sets up the audit verification state and its counter.
func (s *Store) initAudit() {
	now := time.Now()
	s.audit = auditState{sem: make(chan struct{}, 1), lastCheck: now, lastFullCheck: now}
	s.auditChecks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tenantguard_controlplane_audit_checks_total",
		Help: "Audit chain checks by mode (incremental, full) and result: ok, broken, or error (the store could not be read).",
	}, []string{"mode", "result"})
	for _, m := range []VerifyMode{VerifyIncremental, VerifyFull} {
		for _, r := range []string{"ok", "broken", "error"} {
			s.auditChecks.WithLabelValues(m.String(), r)
		}
	}
}

// Describe implements prometheus.Collector: register the Store with a
// registry to export its current version, its listener's state and what
// it knows of the audit chain.
func (s *Store) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{versionDesc, listenerUpDesc, listenerConnectsDesc,
		auditOKDesc, auditLastCheckDesc, auditLastFullDesc, auditVerifiedSeqDesc, auditKeyedFromDesc, auditSigningKeyDesc} {
		ch <- d
	}
	s.auditChecks.Describe(ch)
}

// Collect implements prometheus.Collector.
func (s *Store) Collect(ch chan<- prometheus.Metric) {
	up := 0.0
	if s.listenUp.Load() {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(versionDesc, prometheus.GaugeValue, float64(s.curVersion.Load()))
	ch <- prometheus.MustNewConstMetric(listenerUpDesc, prometheus.GaugeValue, up)
	ch <- prometheus.MustNewConstMetric(listenerConnectsDesc, prometheus.CounterValue, float64(s.listens.Load()))

	a := &s.audit
	a.mu.Lock()
	checked, ok := a.checked, a.broken == nil
	lastCheck, lastFull := a.lastCheck, a.lastFullCheck
	var verified int64
	if a.cp != nil {
		verified = a.cp.seq
	}
	keyedFrom := a.keyedFrom
	a.mu.Unlock()
	if checked {
		v := 0.0
		if ok {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(auditOKDesc, prometheus.GaugeValue, v)
	}
	ch <- prometheus.MustNewConstMetric(auditLastCheckDesc, prometheus.GaugeValue, unixSeconds(lastCheck))
	ch <- prometheus.MustNewConstMetric(auditLastFullDesc, prometheus.GaugeValue, unixSeconds(lastFull))
	ch <- prometheus.MustNewConstMetric(auditVerifiedSeqDesc, prometheus.GaugeValue, float64(verified))
	ch <- prometheus.MustNewConstMetric(auditKeyedFromDesc, prometheus.GaugeValue, float64(keyedFrom))
	if s.auditSigner != nil {
		ch <- prometheus.MustNewConstMetric(auditSigningKeyDesc, prometheus.GaugeValue, 1, s.auditSigner.ID())
	}
	s.auditChecks.Collect(ch)
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
