// Package policypb is the tenantguard policy as protobuf messages: the form
// the control plane stores, versions and pushes over xDS (custom resource
// type type.googleapis.com/tenantguard.policy.v1.Policy), and the form
// operators write by hand as YAML or JSON.
//
// policy.pb.go is generated from policy.proto (go generate, see
// generate.go). The hand-written files around it read and write the
// messages (ParseYAML, ParseJSON, MarshalJSON, MarshalYAML, LoadDir), check
// them (Validate, HashCredentials) and convert them to the data plane's
// policy.Spec (ToSpec, FromSpec). Package policy does not import this
// package; this package imports policy and reuses policy.Compile's rules.
//
// Errors that concern one field are *policy.FieldError values whose Field is
// the field's protojson path with proto names, e.g.
// "tenants[1].credentials[0]".
package policypb
