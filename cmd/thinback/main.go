// Command thinback makes incremental block-level backups of Linux volumes,
// above all LVM thin volumes, and puts them back.
package main

import "os"

func main() {
	os.Exit(Main(os.Args))
}
