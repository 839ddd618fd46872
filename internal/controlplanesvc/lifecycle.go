package controlplanesvc

import (
	"fmt"
	"log/slog"

	goredis "github.com/redis/go-redis/v9"

	"github.com/tenantguard/tenantguard/controlplane/lifecycle"
	"github.com/tenantguard/tenantguard/controlplane/store"
	"github.com/tenantguard/tenantguard/controlplane/workflow"
	"github.com/tenantguard/tenantguard/extauthz/session"
	"github.com/tenantguard/tenantguard/internal/config"
	"github.com/tenantguard/tenantguard/proxy/pg/rls"
)

// newLifecycle builds the tenant lifecycle operations from the
// configuration's lifecycle section; close releases its connections.
func newLifecycle(lc config.Lifecycle, st *store.Store, fleet lifecycle.Fleet, log *slog.Logger) (ops *lifecycle.Operations, close func(), err error) {
	var closers []func() error
	close = func() {
		for _, c := range closers {
			_ = c()
		}
	}
	defer func() {
		if err != nil {
			close()
		}
	}()
	lcfg := lifecycle.Config{Policy: st, Fleet: fleet, ArchiveDir: lc.ArchiveDir, ReadyTimeout: lc.ReadyTimeout, Logger: log}
	for name, c := range lc.MoveClusters {
		if lcfg.Move == nil {
			lcfg.Move = map[string]lifecycle.MoveCluster{}
		}
		lcfg.Move[name] = lifecycle.MoveCluster{AdminURL: c.AdminURL, PublisherConninfo: c.PublisherConninfo}
	}
	if lc.PostgresURL != "" {
		b, err := rls.NewBinder(lc.BindingKey, lc.BindingMaxAge)
		if err != nil {
			return nil, close, fmt.Errorf("lifecycle.postgres.binding_key: %w", err)
		}
		lcfg.Postgres = lifecycle.NewPostgres(lc.PostgresURL, b)
	}
	if lc.RedisAddr != "" {
		c := goredis.NewClient(&goredis.Options{Addr: lc.RedisAddr, Username: lc.RedisUsername, Password: lc.RedisPassword,
			Protocol: 2, DisableIdentity: true})
		closers = append(closers, c.Close)
		lcfg.Redis = lifecycle.NewRedis(c)
	}
	if lc.SessionStore != "" {
		opt, err := goredis.ParseURL(lc.SessionStore)
		if err != nil {
			return nil, close, fmt.Errorf("lifecycle.sessions.store: %w", err)
		}
		opt.Protocol, opt.DisableIdentity = 2, true
		c := goredis.NewClient(opt)
		closers = append(closers, c.Close)
		lcfg.Sessions = session.NewStore(c, nil, session.Config{})
	}
	svc, err := lifecycle.New(lcfg)
	if err != nil {
		return nil, close, err
	}
	eng, err := workflow.New(workflow.Options{Store: st, Kinds: svc.Kinds(), Lease: lc.Lease, Logger: log})
	if err != nil {
		return nil, close, err
	}
	log.Info("tenant lifecycle operations", "reaches", lc.String(), "lease", lc.Lease, "owner", eng.Owner())
	return &lifecycle.Operations{Engine: eng, Service: svc}, close, nil
}
