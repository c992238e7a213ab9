package config

import (
	"fmt"
	"io"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// FormatDiagnostics writes one line per diagnostic:
//
//	FILE:LINE:COL: error: SUMMARY: DETAIL
//
// ("warning" for warnings; the location is left out when a diagnostic has
// none, and ": DETAIL" when it has no detail). Newlines inside a detail are
// folded to spaces so that the output stays one line per problem, which is
// what editors, grep and golden tests want. For a multi-line rendering with
// source snippets use hcl.NewDiagnosticTextWriter instead.
func FormatDiagnostics(w io.Writer, diags hcl.Diagnostics) error {
	for _, d := range diags {
		if _, err := io.WriteString(w, FormatDiagnostic(d)+"\n"); err != nil {
			return fmt.Errorf("write diagnostics: %w", err)
		}
	}
	return nil
}

// FormatDiagnostic renders one diagnostic in the FormatDiagnostics format,
// without the trailing newline.
func FormatDiagnostic(d *hcl.Diagnostic) string {
	var b strings.Builder
	if d.Subject != nil && d.Subject.Filename != "" {
		fmt.Fprintf(&b, "%s:%d:%d: ", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column)
	}
	switch d.Severity {
	case hcl.DiagWarning:
		b.WriteString("warning: ")
	default:
		b.WriteString("error: ")
	}
	b.WriteString(oneLine(d.Summary))
	if d.Detail != "" {
		b.WriteString(": ")
		b.WriteString(oneLine(d.Detail))
	}
	return b.String()
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
