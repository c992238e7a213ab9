// Command edgehub runs the edgehub module as an edgehive plugin; the host starts it.
package main

import (
	"github.com/edgehive/edgehive/plugins/edgehub"
	"github.com/edgehive/edgehive/sdk"
)

func main() { sdk.Serve(edgehub.New()) }
