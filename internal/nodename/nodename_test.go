package nodename

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

func TestValid(t *testing.T) {
	for _, tc := range []struct {
		name string
		want bool
	}{
		{"node-a", true},
		{"a", true},
		{"0", true},
		{"edge-1.example.com", true},
		{"a.b-c.d", true},
		{strings.Repeat("a", 253), true},
		{strings.Repeat("a", 254), false},
		{strings.Repeat("a", 100) + "." + strings.Repeat("b", 100), true},
		{"", false},
		{"Node-A", false},
		{"node_a", false},
		{"-node", false},
		{"node-", false},
		{".node", false},
		{"node.", false},
		{"a..b", false},
		{"a.-b", false},
		{"a-.b", false},
		{"ns/node", false},
		{"node a", false},
		{"nöde", false},
		{"10.0.0.1", true},
		{"[::1]", false},
	} {
		if got := Valid(tc.name); got != tc.want {
			t.Errorf("Valid(%q) = %v, want %v", tc.name, got, tc.want)
		}
		// The API server's own rule agrees.
		if upstream := len(validation.IsDNS1123Subdomain(tc.name)) == 0; upstream != tc.want {
			t.Errorf("%q: table says %v, apimachinery says %v", tc.name, tc.want, upstream)
		}
	}
}
