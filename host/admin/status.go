package admin

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// maxErrorWidth bounds the LAST ERROR column so one long error does not
// wrap every line of the table; the full text is in WriteStatusJSON.
const maxErrorWidth = 60

// WriteStatusTable prints plugins as an aligned table, in the order given,
// for `edgehive status`. Missing values print as "-" so columns stay
// aligned and visibly empty.
func WriteStatusTable(w io.Writer, plugins []PluginStatus) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tGROUP\tSTATE\tVERSION\tPID\tRESTARTS\tUPTIME\tQUEUE\tLAST ERROR")
	for _, p := range plugins {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%d\t%s\n",
			cell(p.Name), cell(p.Group), cell(p.State), cell(p.Version),
			pid(p.PID), p.Restarts, uptime(p.UptimeSeconds), p.QueueDepth,
			truncate(cell(p.LastError), maxErrorWidth))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write status table: %w", err)
	}
	return nil
}

// WriteStatusJSON prints plugins as indented JSON, for `edgehive status
// -json` and scripts. No plugins print as [] rather than null.
func WriteStatusJSON(w io.Writer, plugins []PluginStatus) error {
	if plugins == nil {
		plugins = []PluginStatus{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(plugins); err != nil {
		return fmt.Errorf("write status JSON: %w", err)
	}
	return nil
}

// cell makes s safe for one tabwriter cell: tabs and line breaks would
// split it into columns or rows.
func cell(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\t' || r == '\n' || r == '\r' || r == '\v' || r == '\f' {
			return ' '
		}
		return r
	}, strings.TrimSpace(s))
	if s == "" {
		return "-"
	}
	return s
}

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func pid(p int) string {
	if p <= 0 {
		return "-"
	}
	return strconv.Itoa(p)
}

// uptime prints seconds as a duration truncated to seconds (1h2m3s);
// sub-second precision is noise in a status table.
func uptime(sec float64) string {
	if sec <= 0 {
		return "-"
	}
	return (time.Duration(sec * float64(time.Second))).Truncate(time.Second).String()
}
