// Package systemd holds thinback's systemd units, shipped as files here
// and embedded in the binary for "thinback install-units".
package systemd

import "embed"

// Units are thinback@.service, thinback@.timer and
// thinback-failure@.service.
//
//go:embed *.service *.timer
var Units embed.FS

// ExecPath is the thinback binary the units run; install-units writes
// the path of the one it is instead.
const ExecPath = "/usr/local/bin/thinback"
