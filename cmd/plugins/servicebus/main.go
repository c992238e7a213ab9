// Command servicebus runs the servicebus module as an edgehive plugin; the host starts it.
package main

import (
	"github.com/edgehive/edgehive/plugins/servicebus"
	"github.com/edgehive/edgehive/sdk"
)

func main() { sdk.Serve(servicebus.New()) }
