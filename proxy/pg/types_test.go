package pg_test

import (
	"net"

	proxypg "github.com/tenantguard/tenantguard/proxy/pg"
)

type (
	proxypgConfig   = proxypg.Config
	proxypgDatabase = proxypg.Database
)

type netDialer = net.Dialer
