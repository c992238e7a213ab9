package kuberuntime

import (
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPodHostnameTruncated(t *testing.T) {
	long := strings.Repeat("a", 62) + "-bbbb"
	tests := []struct {
		name, hostname, want string
	}{
		{name: "short", want: "short"},
		{name: "pod", hostname: "chosen", want: "chosen"},
		{name: strings.Repeat("x", 63), want: strings.Repeat("x", 63)},
		{name: long, want: strings.Repeat("a", 62)}, // cut at 63 leaves a trailing '-'
		{name: strings.Repeat("y", 70), want: strings.Repeat("y", 63)},
	}
	for _, tt := range tests {
		pod := &v1.Pod{ObjectMeta: metav1.ObjectMeta{Name: tt.name}, Spec: v1.PodSpec{Hostname: tt.hostname}}
		if got := podHostname(pod); got != tt.want {
			t.Errorf("podHostname(%q, %q) = %q, want %q", tt.name, tt.hostname, got, tt.want)
		}
	}
}
