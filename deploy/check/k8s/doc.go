// Package k8s checks the Helm chart of wadispatch (deploy/helm/wadispatch)
// offline, with Helm as a Go library: `helm lint --strict` and `helm
// template` with several value sets, every rendered object decoded strictly
// into its real API type (k8s.io/api, prometheus-operator monitoring/v1), and
// the properties the worker relies on asserted (see chart_test.go).
//
// Run it with
//
//	cd deploy/check/k8s && GOWORK=off go test ./...
//
// It is a module of its own so that Helm's and Kubernetes' dependencies stay
// out of the worker's go.mod.
package k8s
