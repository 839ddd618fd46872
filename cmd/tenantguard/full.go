//go:build !sidecar && !extauthz

package main

// buildNote follows the version in `tenantguard version`: the full build,
// with every subcommand, adds nothing.
const buildNote = ""
