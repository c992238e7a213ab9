package integration

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/validate/*.golden from the binary's output")

// diagLine is one diagnostic as `edgehive validate` prints it.
var diagLine = regexp.MustCompile(`^\$DIR/edgehive\.hcl:[0-9]+:[0-9]+: error: \S.*$`)

// runValidate runs `edgehive validate -config path` and returns its exit code,
// stdout and stderr.
func runValidate(t *testing.T, path string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, edgehiveBin(), "validate", "-config", path)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("run validate: %v", err)
		}
		code = ee.ExitCode()
	}
	return code, stdout.String(), stderr.String()
}

func TestValidateDiagnostics(t *testing.T) {
	hello := filepath.Join(binDir, "plugins", "hello")
	tests := []struct {
		name string
		body string // after writeConfig's header; "$DIR" is the config's directory
	}{
		{
			name: "missing_brace",
			body: fmt.Sprintf("\nplugin \"hello\" {\n  path = %q\n", hello),
		},
		{
			name: "unknown_top_level_key",
			body: "\nbogus = 1\n",
		},
		{
			name: "unknown_plugin_key",
			body: fmt.Sprintf("\nplugin \"hello\" {\n  path   = %q\n  colour = \"red\"\n}\n", hello),
		},
		{
			name: "plugin_config_wrong_type",
			body: fmt.Sprintf("\nplugin \"hello\" {\n  path = %q\n  config {\n    greeting = [\"a\", \"b\"]\n  }\n}\n", hello),
		},
		{
			name: "plugin_config_unknown_key",
			body: fmt.Sprintf("\nplugin \"hello\" {\n  path = %q\n  config {\n    colour = \"red\"\n  }\n}\n", hello),
		},
		{
			name: "plugin_rejects_config",
			body: fmt.Sprintf("\nplugin \"hello\" {\n  path = %q\n  config {\n    greeting = \"\"\n  }\n}\n", hello),
		},
		{
			name: "missing_plugin_binary",
			body: "\nplugin \"hello\" {\n  path = \"$DIR/nope\"\n}\n",
		},
		{
			name: "bad_sha256",
			body: fmt.Sprintf("\nplugin \"hello\" {\n  path   = %q\n  sha256 = \"not-hex\"\n}\n", hello),
		},
		{
			name: "sha256_mismatch",
			body: fmt.Sprintf("\nplugin \"hello\" {\n  path   = %q\n  sha256 = %q\n}\n", hello, strings.Repeat("ab", 32)),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			path, _, _ := writeConfig(t, "")
			dir := filepath.Dir(path)
			body := strings.ReplaceAll(tt.body, "$DIR", dir)
			f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteString(body); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}

			code, stdout, stderr := runValidate(t, path)
			got := strings.ReplaceAll(stderr, dir, "$DIR")
			got = strings.ReplaceAll(got, binDir, "$BIN")
			if code != 1 {
				t.Errorf("exit code %d, want 1\nstderr:\n%s", code, got)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
			if got == "" || len(lines) == 0 {
				t.Fatal("no diagnostics")
			}
			for _, l := range lines {
				if !diagLine.MatchString(l) {
					t.Errorf("diagnostic does not name file:line:col: %q", l)
				}
			}

			golden := filepath.Join("testdata", "validate", tt.name+".golden")
			if *updateGolden {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("read golden (run with -update to create): %v", err)
			}
			if got != string(want) {
				t.Errorf("diagnostics differ from %s\n got:\n%s\nwant:\n%s", golden, got, want)
			}
		})
	}
}

func TestValidateValidConfig(t *testing.T) {
	hello := filepath.Join(binDir, "plugins", "hello")
	path, _, _ := writeConfig(t, fmt.Sprintf("\nplugin \"hello\" {\n  path = %q\n  config {\n    greeting = \"hi\"\n  }\n}\n", hello))
	code, stdout, stderr := runValidate(t, path)
	if code != 0 {
		t.Fatalf("exit code %d, want 0\nstderr:\n%s", code, stderr)
	}
	if stdout != "configuration is valid: 1 plugins\n" {
		t.Errorf("stdout %q", stdout)
	}
	if strings.Contains(stderr, "error") {
		t.Errorf("stderr mentions an error:\n%s", stderr)
	}
}

func TestValidateMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "absent.hcl")
	code, stdout, stderr := runValidate(t, path)
	if code != 1 || stdout != "" || !strings.Contains(stderr, "absent.hcl") {
		t.Fatalf("code %d stdout %q stderr %q; want 1, nothing, a message naming the file", code, stdout, stderr)
	}
}
