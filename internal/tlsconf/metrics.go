package tlsconf

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ExpiryMetric is the gauge RegisterExpiry exports, one series per
// certificate, labelled with its name.
const ExpiryMetric = "tenantguard_tls_certificate_expiry_timestamp_seconds"

// RegisterExpiry exports, as ExpiryMetric{name}, when the certificate
// notAfter reports expires (Unix time); a zero time exports nothing.
// Reading it checks the files, so a renewed certificate shows even before
// a handshake uses it.
func RegisterExpiry(reg prometheus.Registerer, name string, notAfter func() time.Time) error {
	if reg == nil {
		return nil
	}
	return reg.Register(&expiryCollector{
		desc:     prometheus.NewDesc(ExpiryMetric, "When a TLS certificate this process presents expires (Unix time), by configuration name.", nil, prometheus.Labels{"name": name}),
		notAfter: notAfter,
	})
}

type expiryCollector struct {
	desc     *prometheus.Desc
	notAfter func() time.Time
}

func (c *expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *expiryCollector) Collect(ch chan<- prometheus.Metric) {
	if t := c.notAfter(); !t.IsZero() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(t.Unix()))
	}
}
