package config

import (
	"fmt"
	"os"

	"github.com/hashicorp/hcl/v2"
)

// CheckPluginPaths reports every enabled plugin whose binary is missing, is
// not a regular file (after following symlinks) or is not executable, so
// that the host refuses to start with all such problems listed at once.
// It is separate from Parse because `validate` may run on another machine
// than the one the binaries are installed on.
func CheckPluginPaths(cfg *Config) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, p := range cfg.Plugins {
		if !p.Enabled {
			continue
		}
		subject := p.DeclRange.Ptr()
		how := "the default path"
		if p.PathRange != nil {
			subject = p.PathRange
			how = "path"
		}
		fail := func(summary, format string, args ...any) {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  summary,
				Detail:   fmt.Sprintf(format, args...),
				Subject:  subject,
			})
		}
		fi, err := os.Stat(p.Path)
		switch {
		case os.IsNotExist(err):
			fail("Plugin binary not found", "Plugin %q: %s %s does not exist.", p.Name, how, p.Path)
		case err != nil:
			fail("Plugin binary not accessible", "Plugin %q: %v.", p.Name, err)
		case !fi.Mode().IsRegular():
			fail("Plugin binary is not a regular file", "Plugin %q: %s %s is a %s.", p.Name, how, p.Path, kind(fi.Mode()))
		case fi.Mode().Perm()&0o111 == 0:
			fail("Plugin binary is not executable", "Plugin %q: %s %s has mode %s.", p.Name, how, p.Path, fi.Mode().Perm())
		}
	}
	return diags
}

func kind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "directory"
	case m&os.ModeNamedPipe != 0:
		return "named pipe"
	case m&os.ModeSocket != 0:
		return "socket"
	case m&os.ModeDevice != 0:
		return "device"
	}
	return "non-regular file"
}
