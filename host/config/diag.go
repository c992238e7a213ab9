package config

import (
	"fmt"
	"io"
	"sort"
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

// sortDiags orders diagnostics by file position, then summary and detail. hcldec decodes object specs in map
// order; sorting makes the output deterministic and reads top to bottom.
func sortDiags(diags hcl.Diagnostics) {
	sort.SliceStable(diags, func(i, j int) bool {
		a, b := diags[i].Subject, diags[j].Subject
		switch {
		case a == nil || b == nil:
			return a == nil && b != nil
		case a.Filename != b.Filename:
			return a.Filename < b.Filename
		case a.Start.Line != b.Start.Line:
			return a.Start.Line < b.Start.Line
		case a.Start.Column != b.Start.Column:
			return a.Start.Column < b.Start.Column
		case diags[i].Summary != diags[j].Summary:
			return diags[i].Summary < diags[j].Summary
		}
		return diags[i].Detail < diags[j].Detail
	})
}
