package pg_test

import proxypg "github.com/tenantguard/tenantguard/proxy/pg"

type (
	proxypgConfig   = proxypg.Config
	proxypgDatabase = proxypg.Database
)
