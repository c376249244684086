package main

import (
	"errors"

	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/rollback"
	"github.com/urfave/cli/v2"
)

// allowRollbackFlag lets a backup go on into an encrypted store that
// holds less than this host last saw in it.
var allowRollbackFlag = &cli.BoolFlag{Name: "allow-rollback",
	Usage: "back up into an encrypted store older than this host last saw it (put back from an older copy on purpose), or whose key slots are gone: this host then forgets the newer snapshots, or the key"}

// rollbackGuard opens what this host remembers of store s in the state
// file. A state file that cannot be read is an error for an encrypted
// store; for a store without key slots, which is not checked, it is a
// warning (nil Guard): the host cannot tell whether the store lost its
// slots since.
func rollbackGuard(e *env, s catalog.Repository, state string) (*rollback.Guard, error) {
	g, err := rollback.Open(state, s, func(create bool) error { return stateDir(state, create) })
	if err == nil {
		return g, nil
	}
	if slots, serr := s.KeySlots(); serr == nil && len(slots) == 0 {
		warn(e, "%v: not checked whether store %s had key slots when this host last used it", err, s)
		return nil, nil
	}
	return nil, err
}

// rollbackProblems returns what the host finds wrong with store s (for
// volume, or every volume when ""): a rollback, key slots gone. A failure
// to tell is one too.
func rollbackProblems(e *env, s catalog.Repository, state, volume string) (*rollback.Guard, []error) {
	g, err := rollbackGuard(e, s, state)
	if err != nil || g == nil {
		return nil, errs(err)
	}
	problems, err := g.Check(volumes(volume)...)
	if err != nil {
		problems = append(problems, err)
	}
	return g, problems
}

func errs(err error) []error {
	if err == nil {
		return nil
	}
	return []error{err}
}

func volumes(volume string) []string {
	if volume == "" {
		return nil
	}
	return []string{volume}
}

// guardBackup refuses a backup of volume into store s when the host finds
// the store rolled back or its key slots gone (exit 5), unless allow: then
// the host takes the store as it is, saying so.
func guardBackup(e *env, s catalog.Repository, state, volume string, allow bool) (*rollback.Guard, error) {
	g, err := rollbackGuard(e, s, state)
	if err != nil || g == nil {
		return nil, err
	}
	problems, err := g.Check(volume)
	if err != nil {
		return nil, err
	}
	if len(problems) == 0 {
		return g, nil
	}
	if !allow {
		return nil, errors.Join(problems...)
	}
	for _, p := range problems {
		warn(e, "%v", p)
	}
	warn(e, "going on as --allow-rollback asks: this host takes store %s as it is now", s)
	if err := g.Accept(volume); err != nil {
		return nil, err
	}
	return g, nil
}

// remember moves what the host remembers of store s forward to what it
// holds now (volume, or every volume when ""); a failure is a warning:
// the command's work is done.
func remember(e *env, g *rollback.Guard, s catalog.Repository, volume string) {
	if g == nil {
		return
	}
	if err := g.Remember(volumes(volume)...); err != nil {
		warn(e, "%v (what this host last saw in store %s is not remembered)", err, s)
	}
}

// warnRollback prints, as warnings, what the host finds wrong with store
// s, and remembers what it holds when nothing is: list and restore go on
// (the user chose what to read). With refuseKey (restore) a store whose
// key slots are gone, or wrap another key, since this host last used it
// is refused instead: its files are then not the ones this host's key
// wrote (whoever removed the slots may have put files in the clear in
// their place), and restore would write them onto a device.
func warnRollback(e *env, s catalog.Repository, state, volume string, refuseKey bool) error {
	g, problems := rollbackProblems(e, s, state, volume)
	for _, p := range problems {
		var ke *rollback.KeyError
		if refuseKey && errors.As(p, &ke) {
			return p
		}
	}
	for _, p := range problems {
		warn(e, "%v", p)
	}
	if len(problems) == 0 {
		remember(e, g, s, volume)
	}
	return nil
}
