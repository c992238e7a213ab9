// Command metamanager runs the metamanager module as an edgehive plugin; the host starts it.
package main

import (
	"github.com/edgehive/edgehive/plugins/metamanager"
	"github.com/edgehive/edgehive/sdk"
)

func main() { sdk.Serve(metamanager.New()) }
