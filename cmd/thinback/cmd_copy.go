package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/archive/keys"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3"
	"github.com/thinback/thinback/catalog/s3store"
	"github.com/thinback/thinback/cmd/internal/metrics"
	"github.com/thinback/thinback/cmd/internal/printable"
	"github.com/thinback/thinback/cmd/internal/secret"
	"github.com/thinback/thinback/cmd/internal/storecopy"
	"github.com/urfave/cli/v2"
)

// The flags of copy besides the source's key flags (keyFlags): where the
// stores are, and the secrets of the destination's key when it is not
// the source's.
var (
	fromFlag = &cli.StringFlag{Name: "from", Usage: "the store to copy from: a directory, s3:https://HOST[:PORT]/BUCKET[/PREFIX] or ssh://[USER@]HOST[:PORT]/PATH"}
	toFlag   = &cli.StringFlag{Name: "to", Usage: "the store to bring up to date (made when missing)"}

	toKeyFileFlag = &cli.StringFlag{Name: "to-key-file", EnvVars: []string{"THINBACK_TO_KEY_FILE"},
		Usage: "unlock the destination with this key file when its key is not the source's (or $THINBACK_TO_KEY_FILE)"}
	toPasswordFileFlag = &cli.StringFlag{Name: "to-password-file",
		Usage: "... with the passphrase on the first line of this file"}
	toPasswordCommandFlag = &cli.StringFlag{Name: "to-password-command",
		Usage: "... with the first line this command (sh -c) prints"}
	decryptFlag = &cli.BoolFlag{Name: "decrypt",
		Usage: "copy an encrypted store into one in the clear (with the source's key): whoever reads the destination reads every volume"}
	dryRunCopyFlag = &cli.BoolFlag{Name: "dry-run", Usage: "only say what would be copied"}
)

func copyCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "copy",
		Usage:     "bring a second store up to date with a first (3-2-1): the snapshots it lacks, each file verified",
		ArgsUsage: "[VOLUME...]",
		Description: "Copies, per volume (every volume of --from, or those named), the snapshots --to\n" +
			"lacks and that are not older than its newest one (older ones its own retention\n" +
			"removed), oldest first, so the chain stays valid in both. Each file is read once\n" +
			"and verified as it is read (its structure, every record's digests and its file\n" +
			"digest, and its header against the source's record) while the same bytes go to the\n" +
			"destination, which commits each file on its own: a copy stopped at any point leaves\n" +
			"--to valid, and the next one carries on. A directory is read without being written\n" +
			"to, so copy runs beside backups into --from; a file a prune of --from replaced or\n" +
			"removed while it was read is left, with what follows it, for the next copy.\n\n" +
			"Encrypted stores: when both stores have the same master key (a --to made by copy\n" +
			"gets --from's key slots), the files are copied as they are and no key is needed;\n" +
			"without one, copy checks each file's structure, size and digest, not its contents,\n" +
			"and says so (\"contents not checked\"). With the source's key (--key-file, ...)\n" +
			"every record is authenticated too. When the keys differ, or --from is in the clear\n" +
			"and --to is encrypted, each file is decrypted and encrypted again under --to's key\n" +
			"(--to-key-file, --to-password-file, --to-password-command, or asked at the\n" +
			"terminal). An encrypted --from into a --to in the clear is refused unless --decrypt.\n" +
			"A missing --to is made: encrypted with --from's key slots when --from is encrypted,\n" +
			"else in the clear (an S3 or ssh:// one only with --no-encrypt; make an encrypted one\n" +
			"first with thinback init --store TO --encrypt).\n\n" +
			"--keep-* applies retention to --to's volumes after their copy, as backup's does.\n" +
			"Both stores take the same S3 options (--cache, --s3-region, ... and AWS_*).\n" +
			"Prints one line per volume (or one JSON object per volume with --json). A volume\n" +
			"that fails is named on its own line and the others go on; a last line names those\n" +
			"that failed, and the exit code is the worst of theirs. With --metrics-file, each\n" +
			"volume's copy is recorded in that node_exporter textfile (command=\"copy\", the\n" +
			"destination as its store).",
		Flags: append(append([]cli.Flag{fromFlag, toFlag, jsonFlag, quietFlag, dryRunCopyFlag, decryptFlag, noEncryptFlag,
			metricsFileFlag, metricsJobFlag,
			toKeyFileFlag, toPasswordFileFlag, toPasswordCommandFlag}, keepFlags()...), keyFlags...),
		Action: func(c *cli.Context) error {
			r, err := retentionFrom(c)
			if err != nil {
				return err
			}
			o := copyOptions{
				from: c.String(fromFlag.Name), to: c.String(toFlag.Name), volumes: c.Args().Slice(),
				retention: r, json: c.Bool(jsonFlag.Name), quiet: c.Bool(quietFlag.Name), dryRun: c.Bool(dryRunCopyFlag.Name),
				decrypt: c.Bool(decryptFlag.Name), noEncrypt: c.Bool(noEncryptFlag.Name),
				srcSecrets: secretSources(c, e), dstSecrets: toSecretSources(c, e),
				metricsFile: c.String(metricsFileFlag.Name), metricsJob: c.String(metricsJobFlag.Name),
			}
			return runCopy(c.Context, e, o)
		},
	}
}

// toSecretSources are the secret sources of copy's destination.
func toSecretSources(c *cli.Context, e *env) secret.Sources {
	return withPrompt(e, secret.Sources{
		KeyFile:         c.String(toKeyFileFlag.Name),
		PasswordFile:    c.String(toPasswordFileFlag.Name),
		PasswordCommand: c.String(toPasswordCommandFlag.Name),
		Stderr:          e.stderr,
	})
}

type copyOptions struct {
	from, to               string
	volumes                []string
	retention              catalog.Retention
	json, quiet, dryRun    bool
	decrypt, noEncrypt     bool
	srcSecrets, dstSecrets secret.Sources
	// metricsFile records each volume's copy ("": none), with metricsJob
	// as the series' job label.
	metricsFile, metricsJob string
}

// copyLine is the JSON of a volume's copy: storecopy's result and what
// retention removed from the destination.
type copyLine struct {
	*storecopy.Result
	Mode   string   `json:"mode"` // "as stored", "re-encrypted", "encrypted", "decrypted"
	Pruned []uint64 `json:"pruned,omitempty"`
}

func runCopy(ctx context.Context, e *env, o copyOptions) error {
	if o.from == "" || o.to == "" {
		return usageError{msg: "copy: give the store to copy from (--from) and the one to bring up to date (--to)"}
	}
	if o.from == o.to {
		return usageError{msg: fmt.Sprintf("copy: --from and --to are both %s: give two stores", o.from)}
	}
	src, err := openCopySource(ctx, e, o.from)
	if err != nil {
		return err
	}
	defer closeStore(e, src)
	srcKeyID, err := storeKeyID(src)
	if err != nil {
		return err
	}
	if given := o.srcSecrets.Given(); given != "" && srcKeyID == (keys.KeyID{}) {
		// As storeKey refuses it: its slots may have been removed so
		// that planted files in the clear are taken.
		return fmt.Errorf("copy: store %s has no key slots, so it is not encrypted, yet %s was given: %w; "+
			"if it was encrypted, someone who can write to it removed its slots, and what it holds now was not written under your key; "+
			"if it never was, run without a key", src, given, secret.ErrNotEncrypted)
	}
	dst, made, err := openCopyDest(ctx, e, o, src, srcKeyID)
	if err != nil {
		return err
	}
	if dst == nil { // a dry run into a store that does not exist yet
		return printCopyDry(e, o, src)
	}
	defer closeStore(e, dst)
	if made && !o.quiet && !o.json {
		how := "in the clear"
		if srcKeyID != (keys.KeyID{}) && !o.decrypt {
			how = "with the key slots of " + src.String()
		}
		printable.Sayf(e.stderr, "thinback: made store %s %s", dst, how)
	}
	dstKeyID, err := storeKeyID(dst)
	if err != nil {
		return err
	}

	so := storecopy.Options{Volumes: o.volumes, DryRun: o.dryRun, Level: archive.LevelFastest, Tool: toolName(),
		Warn: func(msg string) { warn(e, "%s", msg) }}
	mode := "as stored"
	// srcKey unlocks the source with its secrets; destKey the destination.
	srcKey := func() (*archive.Key, error) { return unlockWith(ctx, src, o.srcSecrets) }
	destKey := func() (*archive.Key, error) { return unlockWith(ctx, dst, o.dstSecrets) }
	var pruneKey *archive.Key
	switch srcEnc, dstEnc := srcKeyID != (keys.KeyID{}), dstKeyID != (keys.KeyID{}); {
	case srcEnc && dstEnc && srcKeyID == dstKeyID:
		// Raw: the source's key only if one was given, to check contents.
		if o.srcSecrets.Given() != "" {
			if so.Key, err = srcKey(); err != nil {
				return err
			}
		}
		pruneKey = so.Key
	case srcEnc && !dstEnc && !o.decrypt:
		return usageError{msg: fmt.Sprintf("copy: %s is encrypted and %s is not: copying would write its volumes there in the clear; "+
			"give --%s to do that (with the source's key), or copy into an encrypted store (thinback init --store %s --encrypt makes one; then give --%s)",
			src, dst, decryptFlag.Name, o.to, toKeyFileFlag.Name)}
	case srcEnc || dstEnc:
		so.Rewrite = true
		mode = "re-encrypted"
		if !srcEnc {
			mode = "encrypted"
		} else if !dstEnc {
			mode = "decrypted"
		}
		if !o.dryRun {
			if srcEnc {
				if so.Key, err = srcKey(); err != nil {
					return err
				}
			}
			if dstEnc {
				if so.DestKey, err = destKey(); err != nil {
					return err
				}
			}
		}
		pruneKey = so.DestKey
	}
	if !o.dryRun {
		if removed, err := dst.RemoveOrphans(); err != nil {
			printable.Sayf(e.stderr, "thinback: removing files of %s left by an interrupted run: %v", dst, err)
		} else if len(removed) > 0 {
			printable.Sayf(e.stderr, "thinback: removed %d file(s) left by an interrupted run: %s", len(removed), strings.Join(removed, ", "))
		}
	}
	var pruned map[string][]uint64
	if !o.retention.IsZero() && !o.dryRun {
		if pruneKey == nil && dstKeyID != (keys.KeyID{}) {
			// The destination's merges need its key: the source's
			// secrets open it when the keys are the same.
			if pruneKey, err = unlockWith(ctx, dst, o.srcSecrets); err != nil {
				return fmt.Errorf("copy: --keep-* merges files of %s, which takes its key: %w", dst, err)
			}
		}
		prune := pruneAfterBackup(dst, archive.LevelFastest, pruneKey)
		pruned = map[string][]uint64{}
		so.After = func(ctx context.Context, volume string) error {
			removed, err := prune(ctx, volume, o.retention)
			pruned[volume] = removed
			return err
		}
	}
	return runCopyVolumes(ctx, e, o, src, dst, so, mode, pruned)
}

// runCopyVolumes copies each volume and prints its line as it is done.
func runCopyVolumes(ctx context.Context, e *env, o copyOptions, src, dst catalog.Repository, so storecopy.Options, mode string, pruned map[string][]uint64) error {
	names := o.volumes
	if len(names) == 0 {
		var err error
		if names, err = storecopy.VolumeNames(src); err != nil {
			return fmt.Errorf("copy: %s: %w", src, err)
		}
	}
	for _, name := range names {
		if err := catalog.ValidVolumeName(name); err != nil {
			return usageError{msg: fmt.Sprintf("copy: volume %q: %v", name, err)}
		}
	}
	var codes []int
	var failed []string
	var outcomes []metrics.Outcome
	for i, name := range names {
		if ctx.Err() != nil {
			for _, rest := range names[i:] {
				failed = append(failed, rest+" (not started)")
				codes = append(codes, exitInterrupted)
			}
			break
		}
		start := time.Now()
		res, err := copyVolume(ctx, e, o, src, dst, so, name, mode, pruned)
		if len(names) == 1 && o.metricsFile == "" {
			return err // one volume: its error as it is
		}
		code := exitCode(err)
		if err != nil && ctx.Err() != nil {
			code = exitInterrupted
		}
		codes = append(codes, code)
		if o.metricsFile != "" && !o.dryRun {
			outcomes = append(outcomes, copyOutcome(o, dst, name, res, start, code))
		}
		if err == nil {
			continue
		}
		if len(names) == 1 {
			// One volume: its error as it is, once the metrics say so.
			if merr := writeMetrics(e, o.metricsFile, outcomes); merr != nil {
				printable.Sayf(e.stderr, "thinback: %s", errorLine(ctx, merr))
			}
			return err
		}
		failed = append(failed, fmt.Sprintf("%s (exit %d)", name, code))
		msg := errorLine(ctx, err)
		printable.Sayf(e.stderr, "thinback: %s: %s", name, msg)
		if o.json {
			if jerr := json.NewEncoder(e.stdout).Encode(volumeFailure{Volume: name, Error: msg, ExitCode: code}); jerr != nil {
				return fmt.Errorf("copy: %w", jerr)
			}
		}
	}
	if ctx.Err() != nil {
		codes = append(codes, exitInterrupted)
	}
	if len(failed) > 0 {
		printable.Sayf(e.stderr, "copy: %d of %d volumes failed: %s", len(failed), len(names), strings.Join(failed, ", "))
	}
	if err := writeMetrics(e, o.metricsFile, outcomes); err != nil {
		printable.Sayf(e.stderr, "thinback: %s", errorLine(ctx, err))
		codes = append(codes, exitCode(err))
	}
	if code := worstExit(codes); code != exitOK {
		return multiError{code: code, failed: len(failed), total: len(names)}
	}
	return nil
}

// copyVolume copies one volume and prints its line.
func copyVolume(ctx context.Context, e *env, o copyOptions, src, dst catalog.Repository, so storecopy.Options, name, mode string, pruned map[string][]uint64) (*storecopy.Result, error) {
	var p progress = noProgress{}
	if !o.dryRun {
		p = newProgress(e.stderr, o.quiet || o.json, "copied "+name, 0)
		so.Progress = p.Add
	}
	res, err := storecopy.Volume(ctx, src, dst, name, so)
	p.Done()
	if errors.Is(err, catalog.ErrNotFound) && res == nil {
		return nil, fmt.Errorf("%w (thinback list --store %s lists its volumes)", err, src)
	}
	if res != nil {
		if perr := printCopy(e, o, copyLine{Result: res, Mode: mode, Pruned: pruned[name]}); perr != nil && err == nil {
			err = perr
		}
	}
	return res, err
}

// copyOutcome is a volume's copy in the metrics file: what it wrote, and
// what the destination then holds of the volume.
func copyOutcome(o copyOptions, dst catalog.Repository, name string, res *storecopy.Result, start time.Time, code int) metrics.Outcome {
	out := metrics.Outcome{Job: o.metricsJob, Volume: name, Store: o.to, Command: "copy", Start: start, End: time.Now(), ExitCode: code}
	if res != nil {
		out.BytesRead, out.BytesStored = res.Bytes, res.Bytes // read from --from, written to --to as they are
	}
	// The chain and its bytes, as backup records them (unknown, and kept
	// from the last run, if the catalog cannot be read).
	out.ChainLength, out.StoreBytes = storeUsage(dst, name)
	return out
}

// printCopy prints a volume's copy: one JSON object, or one line.
func printCopy(e *env, o copyOptions, l copyLine) error {
	if o.json {
		return json.NewEncoder(e.stdout).Encode(l)
	}
	if o.quiet {
		return nil
	}
	n := len(l.Copied)
	var line string
	if l.DryRun {
		line = fmt.Sprintf("copy %s: would copy %s, %s (%s)", l.Volume, snapshotsN(n), bytesHuman(l.Bytes), l.Mode)
	} else {
		line = fmt.Sprintf("copy %s: %s, %s, in %s (%s", l.Volume, snapshotsN(n), bytesHuman(l.Bytes),
			time.Duration(l.Seconds*float64(time.Second)).Round(time.Millisecond), l.Mode)
		if l.Unchecked {
			line += ", contents not checked"
		}
		line += ")"
	}
	if len(l.Left) > 0 {
		line += fmt.Sprintf("; %d left for the next copy", len(l.Left))
	}
	if len(l.Pruned) > 0 {
		var s []string
		for _, q := range l.Pruned {
			s = append(s, fmt.Sprintf("#%d", q))
		}
		line += "; pruned " + strings.Join(s, " ")
	}
	printable.Sayf(e.stdout, "%s", line)
	return nil
}

func snapshotsN(n int) string {
	if n == 1 {
		return "1 snapshot"
	}
	return fmt.Sprintf("%d snapshots", n)
}

// printCopyDry says what a dry run into a store that does not exist yet
// would copy: every snapshot.
func printCopyDry(e *env, o copyOptions, src catalog.Repository) error {
	return src.View(func(tx *catalog.Tx) error {
		names := o.volumes
		if len(names) == 0 {
			vols, err := tx.Volumes()
			if err != nil {
				return err
			}
			for _, v := range vols {
				names = append(names, v.Name)
			}
		}
		for _, name := range names {
			snaps, err := tx.Snapshots(name)
			if err != nil {
				return fmt.Errorf("copy %s: %s: %w", name, src, err)
			}
			res := &storecopy.Result{Volume: name, Copied: snaps, DryRun: true}
			for _, sn := range snaps {
				res.Bytes += sn.FileSize
			}
			if err := printCopy(e, o, copyLine{Result: res, Mode: "as stored"}); err != nil {
				return err
			}
		}
		return nil
	})
}

// openCopySource opens copy's source: a directory read-only (nothing is
// created, cleaned or written there, so backups go on beside the copy),
// a store on S3 or over ssh as every command opens it.
func openCopySource(ctx context.Context, e *env, loc string) (catalog.Repository, error) {
	if s3.IsLocation(loc) || isSSHStore(loc) {
		return openStoreAt(ctx, e, loc, false)
	}
	if _, err := os.Stat(loc + "/catalog.db"); err != nil {
		return nil, fmt.Errorf("--from %s is not a thinback store (no catalog.db): %w", loc, err)
	}
	return catalog.OpenReadOnly(loc)
}

// openCopyDest opens copy's destination, making it when it is missing
// (not in a dry run: then it returns nil): with the source's key slots,
// copied as they are, when the source is encrypted; else in the clear,
// which a store off this machine is only with --no-encrypt.
func openCopyDest(ctx context.Context, e *env, o copyOptions, src catalog.Repository, srcKeyID keys.KeyID) (catalog.Repository, bool, error) {
	dst, err := openStoreAt(ctx, e, o.to, false)
	if err == nil || (!errors.Is(err, fs.ErrNotExist) && !errors.Is(err, s3store.ErrNotStore)) {
		return dst, false, err
	}
	if o.dryRun {
		return nil, false, nil
	}
	withSlots := srcKeyID != (keys.KeyID{}) && !o.decrypt
	if !withSlots && (s3.IsLocation(o.to) || isSSHStore(o.to)) && !o.noEncrypt {
		return nil, false, usageError{msg: fmt.Sprintf("copy: %s holds no store yet, and a store off this machine is made only when asked how: "+
			"give --%s (in the clear: whoever reads it reads every volume), or make it encrypted first (thinback init --store %s --encrypt) and copy with --%s",
			o.to, noEncryptFlag.Name, o.to, toKeyFileFlag.Name)}
	}
	if dst, err = openStoreAt(ctx, e, o.to, true); err != nil {
		return nil, false, err
	}
	if withSlots {
		if err := copySlots(src, dst); err != nil {
			closeStore(e, dst)
			return nil, false, err
		}
	}
	return dst, true, nil
}

// copySlots gives dst, a store just made, src's key slots as they are:
// the same master key, opened by the same secrets.
func copySlots(src, dst catalog.Repository) error {
	slots, err := src.KeySlots()
	if err != nil {
		return fmt.Errorf("key slots of %s: %w", src, err)
	}
	unlock, err := dst.LockKeySlots()
	if err != nil {
		return fmt.Errorf("key slots of %s: %w", dst, err)
	}
	defer unlock()
	for id, data := range slots {
		if err := dst.PutKeySlot(id, data); err != nil {
			return fmt.Errorf("key slot %s of %s: %w", id, dst, err)
		}
	}
	return nil
}

// storeKeyID returns the id of the master key repo's key slots wrap, or
// the zero id for a store without slots (in the clear).
func storeKeyID(repo catalog.Repository) (keys.KeyID, error) {
	ring, err := keys.Load(repo)
	if errors.Is(err, keys.ErrNoSlots) {
		return keys.KeyID{}, nil
	}
	if err != nil {
		return keys.KeyID{}, fmt.Errorf("key slots of %s: %w", repo, err)
	}
	for _, s := range ring.Slots() {
		return s.KeyID, nil
	}
	return keys.KeyID{}, fmt.Errorf("key slots of %s: none is intact: %w", repo, keys.ErrCorrupt)
}

// unlockWith opens repo's master key with the secrets src.
func unlockWith(ctx context.Context, repo catalog.Repository, src secret.Sources) (*archive.Key, error) {
	ring, err := keys.Load(repo)
	if err != nil {
		return nil, fmt.Errorf("key slots of %s: %w", repo, err)
	}
	mk, _, err := secret.Unlock(ctx, ring, src, repo.String())
	if err != nil {
		return nil, err
	}
	defer mk.Destroy()
	return archive.NewKey(mk.Bytes())
}
