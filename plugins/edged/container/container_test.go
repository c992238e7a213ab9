package container

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
)

func TestLogFile(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"0.log", "2.log", "10.log", "x.log", "3.txt"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := LogFile(dir, false); err != nil || filepath.Base(got) != "10.log" {
		t.Fatalf("current: %q %v", got, err)
	}
	if got, err := LogFile(dir, true); err != nil || filepath.Base(got) != "2.log" {
		t.Fatalf("previous: %q %v", got, err)
	}
	only := t.TempDir()
	_ = os.WriteFile(filepath.Join(only, "0.log"), nil, 0o644)
	if _, err := LogFile(only, true); err == nil || !strings.Contains(err.Error(), "no previous") {
		t.Fatalf("previous of one: %v", err)
	}
	if _, err := LogFile(filepath.Join(only, "missing"), false); err == nil {
		t.Fatal("missing dir: no error")
	}
}

func TestInSpec(t *testing.T) {
	pod := &v1.Pod{Spec: v1.PodSpec{
		Containers:          []v1.Container{{Name: "app"}},
		InitContainers:      []v1.Container{{Name: "init"}},
		EphemeralContainers: []v1.EphemeralContainer{{EphemeralContainerCommon: v1.EphemeralContainerCommon{Name: "debug"}}},
	}}
	for name, want := range map[string]bool{"app": true, "init": true, "debug": true, "other": false, "": false} {
		if got := InSpec(pod, name); got != want {
			t.Errorf("InSpec(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestLogTail(t *testing.T) {
	const ts = "2026-11-24T19:58:38.1Z"
	tests := []struct {
		name  string
		log   string
		lines int
		max   int
		want  string
	}{
		{"full lines", ts + " stdout F a\n" + ts + " stdout F b\n", 80, 1024, "a\nb\n"},
		{"partial at the end (echo -n)", ts + " stdout P DONE\n", 80, 1024, "DONE"},
		{"partial joined to its full line", ts + " stdout P ab\n" + ts + " stderr F cd\n", 80, 1024, "abcd\n"},
		{"last lines only", ts + " stdout F 1\n" + ts + " stdout F 2\n" + ts + " stdout F 3\n", 2, 1024, "2\n3\n"},
		{"last bytes only", ts + " stdout F 0123456789\n", 80, 4, "789\n"},
		{"garbage lines skipped", "junk\n" + ts + " stdout F ok\n", 80, 1024, "ok\n"},
		{"empty", "", 80, 1024, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "0.log")
			if err := os.WriteFile(path, []byte(tt.log), 0o644); err != nil {
				t.Fatal(err)
			}
			if got := logTail(path, tt.lines, tt.max); got != tt.want {
				t.Fatalf("logTail = %q, want %q", got, tt.want)
			}
		})
	}
}
