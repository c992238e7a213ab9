// Command edged runs the edged module as an edgehive plugin; the host starts it.
package main

import (
	"github.com/edgehive/edgehive/plugins/edged"
	"github.com/edgehive/edgehive/sdk"
)

func main() { sdk.Serve(edged.New()) }
