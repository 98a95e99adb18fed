// Package deploytest proves what deploy/ ships without a Kubernetes cluster or a Docker
// engine: the Helm chart passes `helm lint`, renders for its value variants into objects
// that decode strictly into the Kubernetes API types, wires the tagcache binary the way
// the binary says it works (its flags, ports, probe paths and memory limit), and its
// `helm test` steps pass against a real node; the Dockerfile and the systemd unit run
// the binary with flags it has.
//
// It is test code only, in the deploy tools module (deploy/tools/go.mod) with the pinned
// Helm it runs, so that the main module's go.mod stays lean. `make chart-test` runs it.
package deploytest
