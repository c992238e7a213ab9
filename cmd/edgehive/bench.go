package main

import (
	"fmt"
	"io"
)

func cmdBench(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "edgehive: bench: not built yet")
	return 2
}
