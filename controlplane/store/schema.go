package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// migrationLock is the pg_advisory_xact_lock key that serializes schema
// migrations of control planes starting at once on one database
// (0x7467_6370 is "tgcp").
const migrationLock int64 = 0x7467_6370_0000_0001

// migrations are applied in order, each once, recorded in
// tenantguard_cp.schema_migrations. Append; never edit one that shipped.
var migrations = [][]string{
	1: {
		`CREATE TABLE tenantguard_cp.versions (
			version    bigint PRIMARY KEY CHECK (version > 0),
			policy     jsonb NOT NULL,
			author     text NOT NULL,
			created_at timestamptz NOT NULL,
			comment    text NOT NULL,
			diff       text NOT NULL,
			parent     bigint REFERENCES tenantguard_cp.versions (version)
		)`,
		`CREATE TABLE tenantguard_cp.audit (
			seq       bigserial PRIMARY KEY,
			at        timestamptz NOT NULL,
			actor     text NOT NULL,
			action    text NOT NULL CHECK (action IN ('put', 'rollback', 'suspend', 'resume', 'seed')),
			version   bigint NOT NULL,
			detail    jsonb NOT NULL,
			prev_hash bytea NOT NULL,
			hash      bytea NOT NULL
		)`,
		// head is the single row every writer locks (SELECT … FOR UPDATE),
		// so versions and the audit chain advance one writer at a time and
		// never fork; it also records the chain's end, so that deleting the
		// newest audit entries is detected.
		`CREATE TABLE tenantguard_cp.head (
			id         smallint PRIMARY KEY CHECK (id = 1),
			version    bigint NOT NULL,
			audit_seq  bigint NOT NULL,
			audit_hash bytea NOT NULL
		)`,
		`INSERT INTO tenantguard_cp.head (id, version, audit_seq, audit_hash)
			VALUES (1, 0, 0, decode(repeat('00', 32), 'hex'))`,
	},
	// Audit signatures: entries written with a signing key carry its id
	// and an Ed25519 signature of their hash; entries written before stay
	// as they are (NULL), verified by hash. head.audit_key_id is the
	// newest entry's key, so that a writer without a key can see that the
	// chain it would extend is signed.
	2: {
		`ALTER TABLE tenantguard_cp.audit
			ADD COLUMN key_id text,
			ADD COLUMN signature bytea,
			ADD CONSTRAINT audit_signed_with_key CHECK ((key_id IS NULL) = (signature IS NULL))`,
		`ALTER TABLE tenantguard_cp.head ADD COLUMN audit_key_id text`,
	},
	// Tenant placement: a tenant moved to other clusters is an audit
	// action of its own ("place").
	3: {
		`ALTER TABLE tenantguard_cp.audit
			DROP CONSTRAINT audit_action_check,
			ADD CONSTRAINT audit_action_check CHECK (action IN ('put', 'rollback', 'suspend', 'resume', 'seed', 'place'))`,
	},
	// Tenant lifecycle operations (package controlplane/workflow): one row
	// per operation with its steps and progress, and the lease of the
	// control plane running it (lease_owner until lease_expires, in the
	// database's clock). At most one operation per tenant is active. The
	// audit chain gains the actions of operations: 'operation' entries
	// (start and end; they write no version and name the current one) and
	// the policy changes they make, 'add_tenant' and 'remove_tenant'.
	4: {
		`CREATE TABLE tenantguard_cp.operations (
			id               text PRIMARY KEY,
			kind             text NOT NULL,
			tenant           text NOT NULL,
			actor            text NOT NULL,
			params           jsonb NOT NULL,
			state            text NOT NULL CHECK (state IN ('running', 'compensating', 'succeeded', 'failed', 'cancelled')),
			step             int NOT NULL,
			steps            jsonb NOT NULL,
			error            text NOT NULL DEFAULT '',
			result           jsonb NOT NULL DEFAULT '{}',
			cancel_requested boolean NOT NULL DEFAULT false,
			lease_owner      text,
			lease_expires    timestamptz,
			claims           int NOT NULL DEFAULT 0,
			created_at       timestamptz NOT NULL,
			updated_at       timestamptz NOT NULL,
			finished_at      timestamptz
		)`,
		`CREATE UNIQUE INDEX operations_one_active_per_tenant ON tenantguard_cp.operations (tenant)
			WHERE state IN ('running', 'compensating')`,
		`CREATE INDEX operations_active_lease ON tenantguard_cp.operations (lease_expires)
			WHERE state IN ('running', 'compensating')`,
		`CREATE INDEX operations_created ON tenantguard_cp.operations (created_at DESC, id DESC)`,
		`ALTER TABLE tenantguard_cp.audit DROP CONSTRAINT audit_action_check`,
		`ALTER TABLE tenantguard_cp.audit ADD CONSTRAINT audit_action_check
			CHECK (action IN ('put', 'rollback', 'suspend', 'resume', 'seed', 'place', 'add_tenant', 'remove_tenant', 'operation'))`,
	},
	// Tenant move: a tenant's new transactions held at the sidecars
	// (Tenant.paused) and let go is an audit action of its own ("pause";
	// detail: tenant, paused, and the placement when it changes with it).
	5: {
		`ALTER TABLE tenantguard_cp.audit DROP CONSTRAINT audit_action_check`,
		`ALTER TABLE tenantguard_cp.audit ADD CONSTRAINT audit_action_check
			CHECK (action IN ('put', 'rollback', 'suspend', 'resume', 'seed', 'place', 'add_tenant', 'remove_tenant', 'operation', 'pause'))`,
	},
	// The fleet across control-plane instances (fleet.go): each instance
	// publishes what its connected data planes accepted, so that any
	// instance can wait for the whole fleet. A row of an instance that
	// stopped publishing is stale after a few seconds and ignored.
	6: {
		`CREATE TABLE tenantguard_cp.fleet_nodes (
			instance       text NOT NULL,
			node           text NOT NULL,
			streams        int NOT NULL,
			takes_policy   boolean NOT NULL,
			acked_version  text NOT NULL,
			last_ack       timestamptz,
			nacked_version text NOT NULL,
			last_nack      timestamptz,
			last_error     text NOT NULL,
			published_at   timestamptz NOT NULL,
			PRIMARY KEY (instance, node)
		)`,
	},
}

// migrate creates or upgrades the schema in one transaction under an
// advisory lock: a second control plane starting at the same time waits,
// then finds the work done.
func migrate(ctx context.Context, db interface {
	Begin(context.Context) (pgx.Tx, error)
}) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLock); err != nil {
		return fmt.Errorf("migrate: lock: %w", err)
	}
	for _, q := range []string{
		`CREATE SCHEMA IF NOT EXISTS tenantguard_cp`,
		`CREATE TABLE IF NOT EXISTS tenantguard_cp.schema_migrations (
			version    int PRIMARY KEY,
			applied_at timestamptz NOT NULL DEFAULT now()
		)`,
	} {
		if _, err := tx.Exec(ctx, q); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
	}
	var applied int
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM tenantguard_cp.schema_migrations`).Scan(&applied); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if applied >= len(migrations) {
		return fmt.Errorf("migrate: the database schema is at version %d, newer than this control plane knows (%d)", applied, len(migrations)-1)
	}
	for v := applied + 1; v < len(migrations); v++ {
		for _, q := range migrations[v] {
			if _, err := tx.Exec(ctx, q); err != nil {
				return fmt.Errorf("migrate to %d: %w", v, err)
			}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO tenantguard_cp.schema_migrations (version) VALUES ($1)`, v); err != nil {
			return fmt.Errorf("migrate to %d: %w", v, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("migrate: commit: %w", err)
	}
	return nil
}
