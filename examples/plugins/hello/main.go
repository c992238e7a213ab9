// Command hello is a third-party edgehive plugin: it greets whoever asks.
// Build it with
//
//	go build -o bin/plugins/hello ./examples/plugins/hello
//
// and register it in the host's HCL config; see README.md.
package main

import "github.com/edgehive/edgehive/sdk"

func main() { sdk.Serve(&Hello{}) }
