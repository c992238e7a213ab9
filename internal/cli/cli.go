// Package cli is the subcommand dispatch the edgehive and cloudhive
// binaries share: `NAME COMMAND [flags]`, plus version and help.
package cli

import (
	"fmt"
	"io"
	"runtime/debug"
)

// Command runs one subcommand with the arguments after its name and returns
// the process's exit code: 0 done, 1 failed, 2 bad usage.
type Command func(args []string, stdout, stderr io.Writer) int

// App is a binary's set of subcommands.
type App struct {
	Name     string // in messages and the version line
	Version  string
	Usage    string // printed for help, no arguments and an unknown command
	Commands map[string]Command
}

// Run dispatches args[0]. version and help (in their flag spellings too)
// are built in; no command or an unknown one prints the usage and returns 2.
func (a App) Run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, a.Usage)
		return 2
	}
	switch args[0] {
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "%s %s (%s)\n", a.Name, a.Version, GoVersion())
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, a.Usage)
		return 0
	}
	if cmd, ok := a.Commands[args[0]]; ok {
		return cmd(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "%s: unknown command %q\n\n%s", a.Name, args[0], a.Usage)
	return 2
}

// GoVersion is the Go release the binary was built with.
func GoVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		return bi.GoVersion
	}
	return "unknown"
}
