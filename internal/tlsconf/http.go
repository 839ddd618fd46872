package tlsconf

import (
	"errors"
	"net"
	"net/http"
)

// ServeHTTP serves srv on ln, over TLS when srv.TLSConfig is set (its
// GetCertificate or Certificates, as NewServer's config gives), and returns
// nil once srv has been shut down or closed.
func ServeHTTP(srv *http.Server, ln net.Listener) error {
	var err error
	if srv.TLSConfig != nil {
		err = srv.ServeTLS(ln, "", "")
	} else {
		err = srv.Serve(ln)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
