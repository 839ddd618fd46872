package policypb

// TypeURL is the xDS type URL of Policy, the custom resource type the
// control plane pushes to data planes: "type.googleapis.com/" and the
// message's full name, as in the Any that carries it.
const TypeURL = "type.googleapis.com/tenantguard.policy.v1.Policy"

// DefaultName is the resource name of the fleet's policy, the one policy
// resource the control plane serves and data planes subscribe to.
const DefaultName = "default"
