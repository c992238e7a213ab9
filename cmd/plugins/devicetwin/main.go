// Command devicetwin runs the devicetwin module as an edgehive plugin; the host starts it.
package main

import (
	"github.com/edgehive/edgehive/plugins/devicetwin"
	"github.com/edgehive/edgehive/sdk"
)

func main() { sdk.Serve(devicetwin.New()) }
