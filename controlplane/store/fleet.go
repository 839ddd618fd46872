package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// FleetNode is what one control-plane instance knows of one data plane
// connected to it: the policy versions it accepted and rejected. Several
// instances share one store (replicas behind one address, as istiod's
// are); each publishes its own nodes, so that an operation waiting for the
// fleet to accept a version sees every data plane, whichever instance it
// is connected to.
type FleetNode struct {
	Instance      string
	Node          string
	Streams       int
	Policy        bool // subscribed to the policy (a data plane, not an Envoy)
	AckedVersion  string
	LastAck       time.Time
	NackedVersion string
	LastNack      time.Time
	LastError     string
	PublishedAt   time.Time
}

// PublishFleet replaces what instance published before with nodes, and
// stamps them with the database's clock.
func (s *Store) PublishFleet(ctx context.Context, instance string, nodes []FleetNode) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM tenantguard_cp.fleet_nodes WHERE instance = $1`, instance); err != nil {
			return fmt.Errorf("publish fleet: %w", err)
		}
		if len(nodes) == 0 {
			return nil
		}
		batch := &pgx.Batch{}
		for _, n := range nodes {
			batch.Queue(`INSERT INTO tenantguard_cp.fleet_nodes (instance, node, streams, takes_policy, acked_version, last_ack,
				nacked_version, last_nack, last_error, published_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now())`,
				instance, n.Node, n.Streams, n.Policy, n.AckedVersion, nullTime(n.LastAck), n.NackedVersion, nullTime(n.LastNack), n.LastError)
		}
		if err := tx.SendBatch(ctx, batch).Close(); err != nil {
			return fmt.Errorf("publish fleet: %w", err)
		}
		return nil
	})
}

// WithdrawFleet removes what instance published (it is stopping).
func (s *Store) WithdrawFleet(ctx context.Context, instance string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM tenantguard_cp.fleet_nodes WHERE instance = $1`, instance); err != nil {
		return fmt.Errorf("withdraw fleet: %w", err)
	}
	return nil
}

// Fleet returns what every instance other than except published within
// fresh (by the database's clock): rows of an instance that stopped
// publishing (crashed, partitioned) age out.
func (s *Store) Fleet(ctx context.Context, except string, fresh time.Duration) ([]FleetNode, error) {
	rows, err := s.pool.Query(ctx, `SELECT instance, node, streams, takes_policy, acked_version, last_ack,
			nacked_version, last_nack, last_error, published_at
		FROM tenantguard_cp.fleet_nodes
		WHERE instance <> $1 AND published_at > now() - make_interval(secs => $2)
		ORDER BY node, instance`, except, fresh.Seconds())
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (FleetNode, error) {
		var n FleetNode
		var lastAck, lastNack *time.Time
		err := row.Scan(&n.Instance, &n.Node, &n.Streams, &n.Policy, &n.AckedVersion, &lastAck,
			&n.NackedVersion, &lastNack, &n.LastError, &n.PublishedAt)
		if lastAck != nil {
			n.LastAck = *lastAck
		}
		if lastNack != nil {
			n.LastNack = *lastNack
		}
		return n, err
	})
}

func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}
