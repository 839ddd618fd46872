// Package xds is the control plane's xDS server: it pushes the fleet's
// policy to every sidecar and ext_authz instance, and optionally the Envoy
// configuration that puts tenantguard's ext_authz filter in front of an
// application, over the Aggregated Discovery Service (ADS), in both the
// state-of-the-world and the incremental (delta) variant.
//
// It is built on go-control-plane: pkg/cache/v3's snapshot cache holds one
// snapshot that serves every node (a NodeHash maps all nodes to one key),
// pkg/server/v3 serves it. The policy is the custom resource type
// PolicyTypeURL, one resource named PolicyResourceName, whose version_info
// is the version given to SetPolicy. Envoy's Listener, RouteConfiguration
// and Cluster resources (SetEnvoy) are versioned by their content, so a
// policy push does not resend them.
//
// The server watches every stream's ACKs and NACKs (metrics, NodeStatus)
// and does not resend a response a node has rejected (go-control-plane's
// snapshot cache would, at once and forever: a NACK carries the last good
// version, which differs from the snapshot's); the node gets the next
// version SetPolicy installs.
package xds
