// Command kube-apiserver is the upstream Kubernetes API server, built from the k8s.io/kubernetes module
// so plumb's kube-real test lane can run a real control plane. It adds nothing of its own: it runs the
// same cobra command as upstream's cmd/kube-apiserver, with the same side-effect imports.
package main

import (
	"os"
	_ "time/tzdata" // as upstream: time zones for CronJob validation

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // as upstream: the JSON log format
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // as upstream: client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // as upstream: the version metric
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
