package main

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/tenantguard/tenantguard/bench/internal/benchkit"
)

// service is a proxy child process (tenantguard or PgBouncer) with the port
// clients connect to and a client login to check readiness. Stop sends
// SIGINT, a clean shutdown for both (PgBouncer exits 1 on SIGTERM).
type service struct {
	*benchkit.Service
	port           int
	adminPort      int    // tenantguard's metrics listener; 0 for PgBouncer
	user, password string // a client login, to check readiness
}

// newService creates the service's temporary directory; start runs it.
func newService(name string) (*service, error) {
	s, err := benchkit.NewService(name, "bench-"+name+"-")
	if err != nil {
		return nil, err
	}
	return &service{Service: s}, nil
}

// start runs bin and waits until a client can log in as s.user and run a
// query on s.port. On error the service is stopped and its directory
// removed.
func (s *service) start(ctx context.Context, bin string, args ...string) error {
	s.Addr = benchkit.LocalAddr(s.port)
	ready := func(ctx context.Context) error { return ping(ctx, s.url(s.user, s.password)) }
	return s.Start(ctx, ready, bin, args...)
}

// url is a connection URL for database bench through the service.
func (s *service) url(user, password string) string {
	return fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/%s?sslmode=disable", user, password, s.port, dbName)
}

// ping connects to url and runs one query with the simple protocol.
func ping(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, "SELECT 1", pgx.QueryExecModeSimpleProtocol)
	return err
}
