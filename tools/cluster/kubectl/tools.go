//go:build tools

// Package tools pins kubectl, so that `go mod tidy` keeps its dependencies
// in go.sum.
package tools

import _ "k8s.io/kubernetes/cmd/kubectl"
