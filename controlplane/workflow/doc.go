// Package workflow runs durable operations in the control plane: each
// operation is a sequence of idempotent steps, each with a compensation,
// recorded in the control plane's PostgreSQL store (tenantguard_cp.operations)
// as it goes, so that whichever control plane holds the operation's lease
// can resume it after a crash.
//
// # Model
//
// An operation has a kind (a Kind: how to build its steps from its
// parameters), a tenant, and a state:
//
//	running       steps run forward; Step is the next one to run
//	compensating  a step failed (or cancel was asked): steps are undone,
//	              newest first, from the one that failed; Step is the next to undo
//	succeeded     every step ran
//	failed        a step failed and what ran before it was undone (or the
//	              undoing itself failed: the error says which step needs a hand)
//	cancelled     cancel was asked and what ran was undone
//
// Every step's Do must be idempotent: it may run again after it has run
// (wholly or in part) when a control plane died during it or before it
// recorded its end. Its Undo must be too, and must cope with a Do that ran
// in part or not at all. A step may save small state of its own (Run.Save)
// and report progress (Run.Progress); both are stored with the operation.
//
// A step marked Forward is a point of no return (deleting a tenant's rows):
// once it has started the operation only goes forward. A failing forward
// step, or one after it, is retried with backoff until it succeeds, and
// cancellation is refused. Before that point a failure is retried up to
// Options.MaxAttempts times (an error wrapped with Permanent fails at once),
// then the steps that ran are undone.
//
// # Leases
//
// The control plane that creates an operation holds its lease and runs
// it. It renews the lease every Options.Lease/3; a control plane that
// stops gracefully releases it, and one that dies leaves it to expire.
// Every control plane polls for operations whose lease has expired and
// claims them (FOR UPDATE SKIP LOCKED: one claimant each), then resumes
// them at their recorded step, which runs again from its start. Lease
// times are the database's clock, so control planes' clocks need not
// agree. Every write of an operation's state is fenced by the lease: a
// control plane that lost it (paused longer than the lease, or cut off
// from the database) gets store.ErrLeaseLost at its next write and stops;
// until it notices, it may run the same step as the new holder, which
// idempotent steps tolerate.
//
// # Audit
//
// Creating an operation and finishing it each write an entry (action
// "operation") to the policy store's audit chain in the same transaction:
// the start with the kind, tenant and a summary of the parameters (never
// secrets), the end with the state, error and the operation's result (a
// tenant's offboarding records there what it deleted).
package workflow
