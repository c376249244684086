package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/printable"
	"github.com/thinback/thinback/cmd/internal/secret"
	"github.com/thinback/thinback/cmd/internal/verify"
	"github.com/urfave/cli/v2"
)

// errVerify is returned when verify found problems (exit code 10).
var errVerify = errors.New("verify found problems")

func verifyCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "verify",
		Usage:     "check every delta file's digests and the chains of a store (or given files)",
		ArgsUsage: "[VOLUME] | FILE... | VOLUME --snapshot ID --device DEV",
		Description: "With --store, reads every delta file of the store (or of VOLUME), decompresses it and\n" +
			"checks every digest (an encrypted file's: authenticates every record, the digests\n" +
			"sealed with it included) and that it is the file the catalog says (its header against\n" +
			"every field of the record: snapshot, parent, volume name, uuid and size, parent\n" +
			"size, digest), then checks the catalog: chains unbroken, no file missing, altered\n" +
			"or unknown (catalog rebuild repairs records out of step with their files).\n" +
			"Without --store, checks the given files. Prints one verdict per file; exits 10 on\n" +
			"any problem.\n\n" +
			"With --device DEV (a block device or a file) and --snapshot or --at, proves DEV equal\n" +
			"to that snapshot of VOLUME without its source: hashes DEV's blocks on all cores and\n" +
			"compares them with the digests the snapshot's delta files carry. Prints the first\n" +
			"ranges that differ (exact byte offsets) and a count, or that DEV is shorter or longer;\n" +
			"exits 10 on a difference. DEV is only read. A block device larger than the volume\n" +
			"(a restore onto a larger LV) is compared over the volume's size.\n\n" +
			"An encrypted store is verified with its key (unlocked as restore unlocks it): every\n" +
			"record is authenticated too. Without a key (none given and no terminal to ask at, or\n" +
			"--no-key) the check is weaker: each file's structure, size and file digest, its\n" +
			"header against its record, every file present and the chains, but not what the\n" +
			"records hold (a byte altered inside a sealed payload is found only with the key),\n" +
			"and it says so (\"contents not checked\"); it exits 0 if that is sound.\n" +
			"--device needs the key. Encrypted FILEs (send -o --key-file streams) are read with\n" +
			"--key-file's own key, or checked the same weaker way without one; a store's files\n" +
			"are verified with --store.",
		Flags: append([]cli.Flag{storeFlag, quietFlag, stateFlag, jsonFlag,
			&cli.StringFlag{Name: "device", TakesFile: true, Usage: "compare this block device or file with a snapshot (with --snapshot or --at)"},
			&cli.StringFlag{Name: "snapshot", Usage: "with --device: the snapshot id (or a unique prefix, or its sequence number)"},
			&cli.StringFlag{Name: "at", Usage: "with --device: the newest snapshot at or before this time"},
			&cli.BoolFlag{Name: "no-key", Usage: "verify an encrypted store without its key: structure, sizes and file digests only (weaker); never asks for a passphrase"},
		}, keyFlags...),
		Action: func(c *cli.Context) error {
			if dev := c.String("device"); dev != "" {
				a, err := args(c, 1, 1, "give the volume whose snapshot --device must hold")
				if err != nil {
					return err
				}
				switch {
				case c.String("store") == "":
					return usageError{msg: "verify: --device needs --store DIR"}
				case c.String("snapshot") == "" && c.String("at") == "":
					return usageError{msg: "verify: --device needs --snapshot ID or --at TIME: the snapshot DEV must hold"}
				case c.String("snapshot") != "" && c.String("at") != "":
					return usageError{msg: "verify: give --at or --snapshot, not both"}
				}
				if c.Bool("json") {
					return usageError{msg: "verify: --json is for the verdicts on files: drop it with --device (the exit code says whether DEV is the snapshot)"}
				}
				if c.Bool("no-key") {
					return usageError{msg: "verify: --device compares the device with the snapshot's contents, which takes the key: drop --no-key"}
				}
				return runVerifyDevice(c.Context, e, verifyDeviceOptions{store: c.String("store"), volume: a[0],
					at: c.String("at"), snapshot: c.String("snapshot"), device: dev, quiet: c.Bool("quiet"), unlock: unlocker(e, c)})
			}
			if c.String("snapshot") != "" || c.String("at") != "" {
				return usageError{msg: "verify: --snapshot and --at go with --device DEV"}
			}
			if c.String("store") == "" {
				files, err := args(c, 1, -1, "give --store DIR, or delta files to verify")
				if err != nil {
					return err
				}
				var unlock func(context.Context) (*archive.Key, error)
				if !c.Bool("no-key") {
					unlock = fileUnlocker(e, c)
				}
				return runVerifyFiles(c.Context, e, files, newVerifyReport(e, c.Bool("quiet"), c.Bool("json")), unlock)
			}
			a, err := args(c, 0, 1, "give at most one volume")
			if err != nil {
				return err
			}
			vol := ""
			if len(a) == 1 {
				vol = a[0]
			}
			var unlock func(context.Context, catalog.Repository) (*archive.Key, error)
			if !c.Bool("no-key") {
				unlock = unlocker(e, c)
			}
			rep := newVerifyReport(e, c.Bool("quiet"), c.Bool("json"))
			rep.out.Store = c.String("store")
			return runVerifyStore(c.Context, e, c.String("store"), vol, rep, stateFilePath(c.String("state")), unlock)
		},
	}
}

// verifyReport is what verify prints: a verdict per file and notes as they
// come, above a progress line on a terminal; or, with --json, one object
// at the end.
type verifyReport struct {
	e           *env
	quiet, json bool
	prog        progress
	out         verifyJSON
}

// verifyJSON is verify --json's output.
type verifyJSON struct {
	Store string `json:"store,omitempty"`
	// Files: the verdict on each file, in the order they were checked.
	Files []verifyFileJSON `json:"files"`
	// Problems: those of the store besides its files' (a broken chain, a
	// file missing, a store older than this host saw).
	Problems []string `json:"problems"`
	// Notes: what is not a problem but is said (a file left by a killed
	// run, contents not checked for want of the key).
	Notes []string `json:"notes"`
	// Unchecked: encrypted files whose structure only was checked.
	Unchecked int  `json:"unchecked"`
	OK        bool `json:"ok"`
}

type verifyFileJSON struct {
	File          string  `json:"file"`
	Volume        string  `json:"volume,omitempty"`
	Seq           uint64  `json:"seq,omitempty"`
	Snapshot      string  `json:"snapshot,omitempty"`
	Size          int64   `json:"size"`
	Seconds       float64 `json:"seconds"`
	OK            bool    `json:"ok"`
	StructureOnly bool    `json:"structure_only,omitempty"`
	Error         string  `json:"error,omitempty"`
}

func newVerifyReport(e *env, quiet, json bool) *verifyReport {
	return &verifyReport{e: e, quiet: quiet, json: json, prog: noProgress{},
		out: verifyJSON{Files: []verifyFileJSON{}, Problems: []string{}, Notes: []string{}}}
}

// start begins the progress line, over total bytes to read.
func (r *verifyReport) start(total int64) progress {
	r.prog = newProgress(r.e.stderr, r.quiet || r.json, "verified", total)
	return r.prog
}

// file reports the verdict on one file (f.File is its path).
func (r *verifyReport) file(f verifyFileJSON, what, detail string, took time.Duration) {
	f.Seconds = took.Seconds()
	r.out.Files = append(r.out.Files, f)
	if r.json {
		return
	}
	above(r.prog, func() { verdict(r.e, r.quiet, f.OK, what, f.Size, took, detail) })
}

// line reports a problem (bad) or a note, said even with --quiet.
func (r *verifyReport) line(bad bool, msg string) {
	if bad {
		r.out.Problems = append(r.out.Problems, msg)
	} else {
		r.out.Notes = append(r.out.Notes, msg)
	}
	if r.json {
		return
	}
	word := "note"
	if bad {
		word = "BAD "
	}
	above(r.prog, func() { printable.Sayf(r.e.stdout, "%s %s", word, msg) })
}

// finish ends the progress line and, with --json, prints the object.
func (r *verifyReport) finish(ok bool) error {
	r.prog.Done()
	if !r.json {
		return nil
	}
	r.out.OK = ok
	enc := json.NewEncoder(r.e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(r.out)
}

func verdict(e *env, quiet bool, ok bool, what string, size int64, took time.Duration, detail string) {
	if ok && quiet {
		return
	}
	rate := ""
	if s := took.Seconds(); s > 0 && size > 0 {
		rate = fmt.Sprintf(", %s/s", bytesHuman(int64(float64(size)/s)))
	}
	word := "ok  "
	if !ok {
		word = "BAD "
	}
	printable.Sayf(e.stdout, "%s %s (%s%s)%s", word, what, bytesHuman(size), rate, detail)
}

// runVerifyFiles verifies delta files. unlock gives the key of the
// encrypted ones (fileKey), asked for only when one is; without one
// (nil, or nothing given) an encrypted file has its structure checked
// (archive.CheckStructure) and the command says its contents were not.
func runVerifyFiles(ctx context.Context, e *env, files []string, rep *verifyReport, unlock func(context.Context) (*archive.Key, error)) error {
	encrypted, any := map[string]bool{}, false
	var total int64
	for _, p := range files {
		if f, err := os.Open(p); err == nil {
			_, encrypted[p], _ = peekEncrypted(f)
			any = any || encrypted[p]
			if fi, err := f.Stat(); err == nil {
				total += fi.Size()
			}
			f.Close()
		}
	}
	var key *archive.Key
	if unlock != nil && any {
		var err error
		key, err = unlock(ctx)
		if errors.Is(err, secret.ErrNoSecret) {
			key, err = nil, nil // checked without it, and said so
		}
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
	}
	prog := rep.start(total)
	bad, unchecked := 0, 0
	for _, p := range files {
		start := time.Now()
		var size int64
		if fi, err := os.Stat(p); err == nil {
			size = fi.Size()
		}
		detail := ""
		structure := false
		err := func() error {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			r := io.TeeReader(f, progressWriter{prog})
			if !encrypted[p] {
				_, _, err = verify.File(ctx, r, true)
				return err
			}
			if key != nil {
				_, _, err = verify.FileKey(ctx, r, true, key)
				return err
			}
			unchecked++
			detail, structure = " structure only", true
			_, err = archive.CheckStructure(r)
			return err
		}()
		if errors.Is(err, context.Canceled) {
			prog.Done()
			return err
		}
		f := verifyFileJSON{File: p, Size: size, OK: err == nil, StructureOnly: structure}
		if err != nil {
			bad++
			f.Error = err.Error()
			rep.file(f, p, ": "+err.Error(), time.Since(start))
			continue
		}
		rep.file(f, p, detail, time.Since(start))
	}
	rep.out.Unchecked = unchecked
	if unchecked > 0 {
		rep.line(false, fmt.Sprintf("contents not checked: %d file(s) are encrypted and no key was given (structure and file digests checked; give --key-file or --store to check every record)", unchecked))
	}
	if err := rep.finish(bad == 0); err != nil {
		return err
	}
	if bad > 0 {
		return fmt.Errorf("%d of %d files are damaged: %w", bad, len(files), errVerify)
	}
	return nil
}

// runVerifyStore verifies a store. unlock gives its key (storeKey); nil,
// or no secret given, verifies an encrypted store without it (see
// verify.Options.Keyless).
func runVerifyStore(ctx context.Context, e *env, dir, volume string, rep *verifyReport, state string, unlock func(context.Context, catalog.Repository) (*archive.Key, error)) error {
	s, err := openStore(ctx, e, dir, false)
	if err != nil {
		return err
	}
	defer closeStore(e, s)
	var key *archive.Key
	if unlock != nil {
		key, err = unlock(ctx, s)
		if errors.Is(err, secret.ErrNoSecret) {
			key, err = nil, nil // checked without it, and said so
		}
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
	}
	res, err := verify.Store(ctx, s, verify.Options{Volume: volume, Key: key, Keyless: key == nil,
		Progress: func(total int64) verify.Progress { return rep.start(total) },
		File: func(f verify.FileResult) {
			snap := f.Snapshot
			what := fmt.Sprintf("%s #%d %s %s", snap.Volume, snap.Seq, snap.ID, snap.File)
			j := verifyFileJSON{File: snap.File, Volume: snap.Volume, Seq: snap.Seq, Snapshot: snap.ID,
				Size: snap.FileSize, OK: f.Err == nil, StructureOnly: f.Unchecked}
			if f.Err != nil {
				j.Error = f.Err.Error()
				rep.file(j, what, ": "+f.Err.Error(), f.Took)
				return
			}
			detail := ""
			if f.Unchecked {
				detail = " structure only"
			}
			rep.file(j, what, detail, f.Took)
		}})
	rep.prog.Done()
	if err != nil {
		if err == ctx.Err() {
			return err
		}
		return fmt.Errorf("verify: %w", err)
	}
	bad := res.Bad()
	for _, p := range res.Problems {
		var ce *catalog.CheckError
		if verify.IsOrphan(p) && errors.As(p, &ce) {
			// A file renamed into place by a run killed before it
			// recorded it: harmless, and nothing refers to it.
			if ce.Detail != "" { // what an S3 store knows of it
				rep.line(false, fmt.Sprintf("%s: %s", ce.File, ce.Detail))
				continue
			}
			rep.line(false, fmt.Sprintf("%s is not in the catalog (left by an interrupted run: the next backup removes it, thinback catalog rebuild adopts it)", ce.File))
			continue
		}
		rep.line(true, fmt.Sprint(p))
	}
	// An encrypted store older than this host saw it is a problem.
	guard, rolledBack := rollbackProblems(e, s, state, volume)
	for _, p := range rolledBack {
		rep.line(true, fmt.Sprint(p))
	}
	rep.out.Unchecked = res.Unchecked
	if res.Unchecked > 0 {
		// Said even with --quiet: the verdict below is a weaker one.
		rep.line(false, fmt.Sprintf("contents not checked: the store is encrypted and no key was given (%d file(s): structure, sizes, file digests and records checked; give the key to check every record)", res.Unchecked))
	}
	bad += len(rolledBack)
	if err := rep.finish(bad == 0); err != nil {
		return err
	}
	if bad > 0 {
		return fmt.Errorf("%d problem(s) in store %s: %w", bad, dir, errVerify)
	}
	if res.Unchecked == 0 {
		// Only what the key authenticated moves this host's memory.
		remember(e, guard, s, volume)
	}
	if !rep.quiet && !rep.json {
		if res.Unchecked > 0 {
			printable.Sayf(e.stderr, "verified the structure of %d file(s) of store %s, %d of them without their contents: no problems", res.Files, dir, res.Unchecked)
		} else {
			printable.Sayf(e.stderr, "verified %d file(s) of store %s: no problems", res.Files, dir)
		}
	}
	return nil
}
