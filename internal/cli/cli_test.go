package cli

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	app := App{
		Name:    "demo",
		Version: "1.2.3",
		Usage:   "Usage: demo greet\n",
		Commands: map[string]Command{
			"greet": func(args []string, stdout, _ io.Writer) int {
				_, _ = io.WriteString(stdout, "hello "+strings.Join(args, ","))
				return 0
			},
			"fail": func(_ []string, _, stderr io.Writer) int {
				_, _ = io.WriteString(stderr, "failed")
				return 1
			},
		},
	}
	for _, tc := range []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string // a prefix
		wantStderr string // a prefix
	}{
		{"no command", nil, 2, "", "Usage: demo"},
		{"command gets the rest", []string{"greet", "a", "-b"}, 0, "hello a,-b", ""},
		{"command's exit code", []string{"fail"}, 1, "", "failed"},
		{"unknown command", []string{"nope"}, 2, "", "demo: unknown command \"nope\"\n\nUsage: demo"},
		{"version", []string{"version"}, 0, "demo 1.2.3 (", ""},
		{"--version", []string{"--version"}, 0, "demo 1.2.3 (", ""},
		{"help", []string{"help"}, 0, "Usage: demo", ""},
		{"-h", []string{"-h"}, 0, "Usage: demo", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := app.Run(tc.args, &stdout, &stderr)
			if code != tc.wantCode {
				t.Errorf("exit code %d, want %d", code, tc.wantCode)
			}
			if !strings.HasPrefix(stdout.String(), tc.wantStdout) || (tc.wantStdout == "" && stdout.Len() > 0) {
				t.Errorf("stdout %q, want it to start with %q", stdout.String(), tc.wantStdout)
			}
			if !strings.HasPrefix(stderr.String(), tc.wantStderr) || (tc.wantStderr == "" && stderr.Len() > 0) {
				t.Errorf("stderr %q, want it to start with %q", stderr.String(), tc.wantStderr)
			}
		})
	}
}
