// Command eventbus runs the eventbus module as an edgehive plugin; the host starts it.
package main

import (
	"github.com/edgehive/edgehive/plugins/eventbus"
	"github.com/edgehive/edgehive/sdk"
)

func main() { sdk.Serve(eventbus.New()) }
