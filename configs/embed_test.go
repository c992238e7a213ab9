package configs_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/edgehive/edgehive/configs"
	"github.com/edgehive/edgehive/host/config"
)

func hostname() (string, error) { return "edge-test", nil }

func TestDefaultParses(t *testing.T) {
	cfg, diags := config.Parse(configs.DefaultFilename, configs.Default,
		config.WithBaseDir("/opt/edgehive"), config.WithDefaultPluginDir("/opt/edgehive/plugins"),
		config.WithHostname(hostname))
	if len(diags) != 0 {
		t.Fatalf("diagnostics: %v", diags)
	}
	if len(cfg.Plugins) != 6 {
		t.Fatalf("%d plugins, want 6", len(cfg.Plugins))
	}
}

// The embedded bytes are the file on disk.
func TestDefaultMatchesFile(t *testing.T) {
	disk, err := os.ReadFile("edgehive.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if string(disk) != string(configs.Default) {
		t.Error("embedded default differs from edgehive.hcl")
	}
}

func TestExamplesParse(t *testing.T) {
	files, err := filepath.Glob("examples/*.hcl")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if _, diags := config.LoadFile(f, config.WithHostname(hostname)); len(diags) != 0 {
				t.Fatalf("diagnostics: %v", diags)
			}
		})
	}
}
