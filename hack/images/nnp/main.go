// Command nnp prints its effective user id. Packed set-user-ID root as the
// e2e "nonewprivs" image by hack/images: with allowPrivilegeEscalation
// false (no_new_privs) the set-user-ID bit is ignored and it prints the
// pod's user instead of 0.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Printf("Effective uid: %d\n", os.Geteuid())
}
