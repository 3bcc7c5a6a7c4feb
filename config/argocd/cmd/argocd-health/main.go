// Command argocd-health prints the health Argo CD shows for one cellos.dev
// object, read as JSON (as the API server returns it) on standard input,
// with the checks of this module installed. The end-to-end tests run it on
// real objects, as they run kubectl, so that the operator's module does not
// link a Lua interpreter.
//
// It prints one JSON object, {"status": ..., "message": ...}, and exits 1
// when the object cannot be read or its check fails.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"cellos.dev/cellos-operator/config/argocd"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "argocd-health:", err)
		os.Exit(1)
	}
}

func run() error {
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		return err
	}
	// Decoded as a Kubernetes client decodes it, numbers as int64 or float64.
	var obj unstructured.Unstructured
	if err := obj.UnmarshalJSON(in); err != nil {
		return fmt.Errorf("reading the object: %w", err)
	}
	h, err := argocd.ResourceHealth(obj.Object)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(map[string]string{"status": h.Status, "message": h.Message})
}
