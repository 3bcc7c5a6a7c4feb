package main

import (
	"strings"
	"testing"
)

// The simulator names its NATS server in errors and logs without the
// password, and does not repeat a URL that does not parse at all.
func TestRedactedURLHoldsNoPassword(t *testing.T) {
	shown, ok := redactedURL("nats://sim:s3cret@127.0.0.1:4222, nats://sim:s3cret@127.0.0.2:4222")
	if !ok || strings.Contains(shown, "s3cret") || !strings.Contains(shown, "127.0.0.2") {
		t.Errorf("got %q, %v; want both servers without the password", shown, ok)
	}
	if shown, ok := redactedURL("nats://sim:s3cr/et#?x@127.0.0.1:4222"); ok || shown != "" {
		t.Errorf("an unparsable URL shown as %q", shown)
	}
}
