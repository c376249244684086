package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"syscall"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/backup"
	"github.com/thinback/thinback/cmd/internal/printable"
	"github.com/thinback/thinback/cmd/internal/remote"
	"github.com/thinback/thinback/lvmthin"
	"github.com/thinback/thinback/restore"
	"github.com/urfave/cli/v2"
)

func sendCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "send",
		Usage:     "write a delta file of a snapshot: a full, or what changed since a base",
		ArgsUsage: "[VG/SNAP] (or --file IMAGE)",
		Description: "VG/SNAP (or /dev/VG/SNAP, /dev/mapper/VG-SNAP) is a thin snapshot: its changed blocks since\n" +
			"--base are found in the thin pool's metadata (read under a metadata snapshot, released\n" +
			"before any data is read; --discovery) and read from SNAP, opened read-only; a full reads\n" +
			"its mapped blocks only. A live thin volume is refused: snapshot it first (lvcreate -s), or use\n" +
			"thinback backup, which does that.\n\n" +
			"VG/SNAP may also be a classic snapshot of a thick LV (lvcreate -s -L SIZE): with --base, an\n" +
			"older classic snapshot of the same LV, the changed chunks are those in the base's exception\n" +
			"table (and the snapshot's own), read from SNAP; a full reads all of SNAP.\n\n" +
			"With --file, reads a regular file or block device (read-only) and writes a full of it,\n" +
			"or with --base-file, the blocks that differ from an older image of the same volume.\n" +
			"Holes of sparse files are not read. Nothing is written to the sources.\n\n" +
			"The output is written under a temporary name and renamed when complete.\n\n" +
			"With --store S (an encrypted store: its key is unlocked as every command does) or\n" +
			"--key-file F (the key file's own key, without a store), the delta file is encrypted:\n" +
			"receive --store S, or receive --to / apply with the same --key-file, read it. Without\n" +
			"them it is written in the clear.\n\n" +
			"With --resume TOKEN (printed by receive --resumable when a stream was cut, or by\n" +
			"receive --to TARGET --resume-token), writes only the rest of that transfer: the records\n" +
			"from the byte the receiver had made durable, read from there on. The token must name\n" +
			"the snapshot and base this send writes; the receiving target takes the rest only\n" +
			"where its state says that transfer was interrupted.\n\n" +
			sendToHelp,
		Flags: append(append([]cli.Flag{
			&cli.StringFlag{Name: "base", Usage: "send only what changed since this older snapshot (thin, or classic) of the same volume (VG/SNAP)"},
			&cli.BoolFlag{Name: "release-stale-metadata-snap", Usage: releaseStaleUsage},
			discoveryFlag,
			&cli.StringFlag{Name: "file", TakesFile: true, Usage: "send this image or block device"},
			&cli.StringFlag{Name: "base-file", Usage: "send only the blocks of --file that differ from this older image"},
			&cli.StringFlag{Name: "base-id", Usage: "snapshot id of the base (for a block device base, whose id cannot be derived)"},
			&cli.StringFlag{Name: "output", TakesFile: true, Aliases: []string{"o"}, Usage: "write the delta file here (- for standard output)"},
			&cli.StringFlag{Name: "volume", Usage: "volume name recorded in the file (default: the image's file name)"},
			&cli.StringFlag{Name: "volume-uuid", Usage: "volume identity recorded in the file, checked by apply"},
			&cli.Int64Flag{Name: "block-size", Value: archive.DefaultBlockSize, Usage: "block size in bytes for images (a multiple of 4096)"},
			&cli.StringFlag{Name: "resume", Usage: "write only the rest of the interrupted transfer this token names (see receive --resumable)"},
			levelFlag,
			quietFlag, jsonFlag,
			sendStoreFlag,
			sendToFlag, sendSnapbackFlag, sendForceFlag,
		}, remoteFlags...), keyFlags...),
		Action: func(c *cli.Context) error {
			a, err := args(c, 0, 1, "give VG/SNAP or --file IMAGE")
			if err != nil {
				return err
			}
			lvl, err := level(c)
			if err != nil {
				return err
			}
			o := sendOptions{
				file: c.String("file"), baseFile: c.String("base-file"), baseID: c.String("base-id"),
				out: c.String("output"), volume: c.String("volume"), volumeUUID: c.String("volume-uuid"),
				blockSize: c.Int64("block-size"), level: lvl, quiet: c.Bool("quiet"), json: c.Bool("json"),
				releaseStale: c.Bool("release-stale-metadata-snap"),
			}
			if o.discovery, err = discoveryOf(c, "send"); err != nil {
				return err
			}
			switch {
			case len(a) == 1 && o.file != "":
				return usageError{msg: "send: give either VG/SNAP or --file, not both"}
			case len(a) == 0 && o.file == "":
				return usageError{msg: "send: give VG/SNAP or --file IMAGE"}
			case o.file == "" && (o.baseFile != "" || o.baseID != ""):
				return usageError{msg: "send: --base-file and --base-id go with --file"}
			case o.file != "" && c.String("base") != "":
				return usageError{msg: "send: --base goes with VG/SNAP; with --file use --base-file"}
			case o.blockSize < archive.MinBlockSize || o.blockSize > archive.MaxBlockSize || o.blockSize%archive.MinBlockSize != 0:
				return usageError{msg: fmt.Sprintf("send: --block-size %d is not a multiple of 4096 between 4096 and %d", o.blockSize, archive.MaxBlockSize)}
			}
			if len(a) == 1 {
				o.snap = a[0]
			}
			if tok := c.String("resume"); tok != "" {
				t, err := parseResumeToken(tok)
				if err != nil {
					return err
				}
				o.resume = &t
			}
			o.base = c.String("base")
			o.key = fileUnlocker(e, c)
			if err := sendToArgs(e, c, &o); err != nil {
				return err
			}
			return runSend(c.Context, e, o)
		},
	}
}

type sendOptions struct {
	snap, base             string
	file, baseFile, baseID string
	out                    string
	volume, volumeUUID     string
	blockSize              int64
	level                  archive.Level
	quiet                  bool
	json                   bool // the summary as a JSON object (sendJSON)
	releaseStale           bool
	discovery              lvmthin.Discovery
	// resume, if set, makes the file the rest of the transfer it names.
	resume *resumeToken
	// key returns the key to encrypt under (fileKey): nil for a file in
	// the clear.
	key func(context.Context) (*archive.Key, error)
	// to, with snapback and force, is send --to: where receive --to runs
	// with the stream, reached with remote.
	to       string
	snapback string
	force    bool
	remote   remote.Options
}

// sendStoreFlag is send's --store: only where the key comes from. Unlike
// storeFlag it has no $THINBACK_STORE, so that a store set for backups
// does not turn every send into an encrypted one.
var sendStoreFlag = &cli.StringFlag{Name: storeFlag.Name, Usage: "encrypt the delta file under this encrypted store's key"}

func runSend(ctx context.Context, e *env, o sendOptions) error {
	if o.json && o.out == "-" && o.to == "" {
		return usageError{msg: "send: --json prints on standard output, where -o - writes the delta file: give -o FILE, or drop --json"}
	}
	newProg := func(total int64) backup.Progress { return newProgress(e.stderr, o.quiet || o.json, "sent", total) }
	var out *backup.Outgoing
	// The key first: a wrong passphrase must not leave a metadata
	// snapshot reserved or an output begun.
	var key *archive.Key
	var err error
	if o.key != nil {
		if key, err = o.key(ctx); err != nil {
			return fmt.Errorf("send: %w", err)
		}
	}
	if o.file != "" {
		out, err = backup.OpenFileSend(backup.FileSendOptions{
			File: o.file, BaseFile: o.baseFile, BaseID: o.baseID,
			Volume: o.volume, VolumeUUID: o.volumeUUID, BlockSize: o.blockSize, Tool: toolName(),
			Progress: newProg,
		})
	} else {
		out, err = backup.OpenLVSend(ctx, backup.LVSendOptions{
			Snap: o.snap, Base: o.base, Progress: newProg,
			LV: backup.LVOptions{ReleaseStale: o.releaseStale, Discovery: o.discovery, Waiting: waitingLine(e), Tool: toolName()},
		})
	}
	if err != nil {
		return usageOf(fmt.Errorf("send: %w", err))
	}
	defer out.Close()
	if o.resume != nil {
		if err := resumeHeader(out.Header, *o.resume); err != nil {
			return fmt.Errorf("send: %w", err)
		}
	}
	so := sendToOptions{
		out: o.out, header: out.Header, src: out.Source, level: o.level, key: key,
		progress: out.Progress, countWrites: out.CountWrites, guards: out.Guards,
	}
	var st sendStats
	if o.to != "" {
		st, err = sendRemote(ctx, e, o, so)
	} else {
		st, err = sendTo(ctx, e, so)
	}
	out.Progress.Done()
	if err != nil {
		return err
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	st.read = out.Read(st.trailer)
	if o.json {
		return printJSON(e, newSendJSON(out.Header, st, o))
	}
	if !o.quiet {
		line := sendSummary(out.Header, st)
		if out.Detail != nil {
			line += " (" + out.Detail() + ")"
		}
		printable.Sayf(e.stderr, "%s", line)
	}
	return nil
}

// sendJSON is send --json's summary.
type sendJSON struct {
	Volume     string `json:"volume"`
	Snapshot   string `json:"snapshot"`
	Name       string `json:"name,omitempty"`
	Parent     string `json:"parent,omitempty"` // "" for a full
	ResumeFrom int64  `json:"resume_from,omitempty"`
	Output     string `json:"output,omitempty"` // the file written (-o)
	To         string `json:"to,omitempty"`     // where it was applied (--to)
	VolumeSize int64  `json:"volume_size"`
	DataBytes  int64  `json:"data_bytes"`
	ZeroBytes  int64  `json:"zero_bytes"`
	ReadBytes  int64  `json:"read_bytes"`
	FileSize   int64  `json:"file_size"`
	Digest     string `json:"file_digest"`
	// Seconds the send took.
	Seconds float64 `json:"seconds"`
}

func newSendJSON(h *archive.Header, st sendStats, o sendOptions) sendJSON {
	j := sendJSON{Volume: h.VolumeName, Snapshot: h.Snapshot.ID.String(), Name: h.Snapshot.Name, ResumeFrom: h.ResumeFrom,
		VolumeSize: h.VolumeSize, DataBytes: st.trailer.DataBytes, ZeroBytes: st.trailer.ZeroBytes,
		ReadBytes: st.read, FileSize: st.fileSize, Digest: fmt.Sprintf("%x", st.trailer.Digest), Seconds: st.took.Seconds()}
	if !h.IsFull() {
		j.Parent = h.Parent.ID.String()
	}
	if o.to != "" {
		j.To = o.to
	} else {
		j.Output = o.out
	}
	return j
}

// sendStats is what a send did.
type sendStats struct {
	trailer  archive.Trailer
	read     int64 // bytes of the source read
	fileSize int64
	took     time.Duration
}

// sendToOptions are what sendTo writes where.
type sendToOptions struct {
	out         string // a file, or "-" for standard output
	header      *archive.Header
	src         archive.Source
	level       archive.Level
	key         *archive.Key // encrypts the file; nil: in the clear
	progress    backup.Progress
	countWrites bool // add the bytes written to progress
	// guards are what the delta is read from, which standard output must
	// not be or hold.
	guards []restore.Guard
	// to, when set, is where the delta goes instead of out: the agent of
	// send --to, named toName in messages.
	to     io.Writer
	toName string
}

// sendTo writes a delta file of so.src with header so.header to so.out.
func sendTo(ctx context.Context, e *env, so sendToOptions) (st sendStats, err error) {
	start := time.Now()
	out, h := so.out, so.header
	var o *output
	if so.to != nil {
		out, o = so.toName, &output{w: so.to, name: so.toName}
	} else if o, err = createOutput(e, out, so.guards); err != nil {
		return sendStats{}, fmt.Errorf("send: %w", err)
	}
	defer func() {
		if aerr := o.abort(); aerr != nil && err != nil {
			err = fmt.Errorf("%w; and the unfinished file was not removed: %v", err, aerr)
		}
	}()
	dst := o.w
	if o.pending == nil {
		dst = newCtxWriter(ctx, o.w) // a pipe nobody reads must not outlast a signal
	}
	w := archive.NewWriter(dst, archive.WithKey(so.key))
	if err := w.WriteHeader(h); err != nil {
		return sendStats{}, sendError(out, err)
	}
	opts := archive.SendOptions{Level: so.level}
	if so.countWrites {
		opts.Progress = so.progress.Add
	}
	if err := archive.Send(ctx, w, so.src, opts); err != nil {
		return sendStats{}, sendError(out, err)
	}
	if err := w.Close(); err != nil {
		return sendStats{}, sendError(out, err)
	}
	if err := o.commit(); err != nil {
		return sendStats{}, sendError(out, err)
	}
	t := w.Trailer()
	return sendStats{trailer: t, read: t.DataBytes, fileSize: w.Offset(), took: time.Since(start)}, nil
}

func sendError(out string, err error) error {
	switch {
	case errors.Is(err, catalog.ErrTooLarge):
		return fmt.Errorf("send: %w; nothing was kept", err)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, catalog.ErrNoSpace):
		return fmt.Errorf("send: writing %s: %w; nothing was kept: free space or choose another place", out, err)
	case errors.Is(err, syscall.EPIPE):
		return fmt.Errorf("send: the receiving end of %s went away (broken pipe): %w", out, err)
	}
	return fmt.Errorf("send: %w", err)
}

func sendSummary(h *archive.Header, st sendStats) string {
	kind := "full"
	if !h.IsFull() {
		kind = "incremental from " + h.Parent.Name
	}
	if h.ResumeFrom > 0 { // the header given to the Writer, which sets the feature bit
		kind += fmt.Sprintf(", resumed from byte %d", h.ResumeFrom)
	}
	t := st.trailer
	ratio := "-"
	if t.PayloadBytes > 0 {
		ratio = strconv.FormatFloat(float64(t.DataBytes)/float64(t.PayloadBytes), 'f', 2, 64)
	}
	rate := ""
	if s := st.took.Seconds(); s > 0 {
		rate = fmt.Sprintf(", %s/s", bytesHuman(int64(float64(st.read)/s)))
	}
	return fmt.Sprintf("sent %s (%s): volume %s, %s data, %s zero, %s read, %s written (compression %s), in %s%s",
		h.Snapshot.Name, kind, bytesHuman(h.VolumeSize), bytesHuman(t.DataBytes), bytesHuman(t.ZeroBytes),
		bytesHuman(st.read), bytesHuman(st.fileSize), ratio, st.took.Round(time.Millisecond), rate)
}
