// Command boxlite-net is one box's user-mode network; see package boxnet.
package main

import (
	"os"

	boxnet "boxlite.dev/net"
)

func main() {
	os.Exit(boxnet.Main(os.Args[1:], os.Stdin, os.Stdout))
}
