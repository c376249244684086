package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/cmd/internal/printable"
	"github.com/urfave/cli/v2"
)

func inspectCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "inspect",
		Usage:     "show a delta file's header and records and verify every digest",
		ArgsUsage: "FILE | -",
		Description: "Reads the whole file, decompresses every record and checks every digest, like\n" +
			"ZFS's zstream dump. Exits 3 (damaged) or 4 (too new) after printing what it could read.\n\n" +
			"An encrypted file's header is in the clear: it is shown, with its key id and AEAD,\n" +
			"without a key. Its records are shown and checked only with the key (--store's, or\n" +
			"--key-file's own, as apply takes them); without it only the file's structure and\n" +
			"digest are checked, and inspect says so.",
		Flags: append([]cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
			&cli.BoolFlag{Name: "records", Usage: "list every record"},
			storeFlag, // its key reads encrypted files
		}, keyFlags...),
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, 1, "give one delta file, or - for standard input")
			if err != nil {
				return err
			}
			return runInspect(c.Context, e, a[0], c.Bool("json"), c.Bool("records"),
				fileUnlocker(e, c))
		},
	}
}

// inspectReport is inspect's JSON output.
type inspectReport struct {
	File         string         `json:"file"`
	Header       *inspectHeader `json:"header,omitempty"`
	DataRecords  int64          `json:"data_records"`
	ZeroRecords  int64          `json:"zero_records"`
	Skipped      int64          `json:"skipped_optional_records"`
	DataBytes    int64          `json:"data_bytes"`
	ZeroBytes    int64          `json:"zero_bytes"`
	PayloadBytes int64          `json:"payload_bytes"`
	FileBytes    int64          `json:"file_bytes"`
	Compression  float64        `json:"compression_ratio,omitempty"`
	Digest       string         `json:"digest,omitempty"`
	Verified     bool           `json:"verified"`
	// StructureOnly: an encrypted file read without its key; only its
	// structure and digest were verified, its records are not known.
	StructureOnly bool            `json:"structure_only,omitempty"`
	Error         string          `json:"error,omitempty"`
	Records       []inspectRecord `json:"records,omitempty"`
	Duration      float64         `json:"seconds"`
}

type inspectHeader struct {
	Version    int            `json:"version"`
	Kind       string         `json:"kind"`
	Volume     string         `json:"volume"`
	VolumeUUID string         `json:"volume_uuid,omitempty"`
	VolumeSize int64          `json:"volume_size"`
	BlockSize  int64          `json:"block_size"`
	Snapshot   inspectSnap    `json:"snapshot"`
	Parent     *inspectSnap   `json:"parent,omitempty"`
	ParentSize int64          `json:"parent_size,omitempty"`
	Tool       string         `json:"tool"`
	Features   []string       `json:"features,omitempty"`
	Attrs      []archive.Attr `json:"attributes,omitempty"`
	Encrypted  bool           `json:"encrypted,omitempty"`
	KeyID      string         `json:"key_id,omitempty"`
	AEAD       string         `json:"aead,omitempty"`
	// ResumeFrom is a resumed file's offset (the rest of a transfer).
	ResumeFrom int64 `json:"resume_from,omitempty"`
}

type inspectSnap struct {
	ID   archive.ID `json:"id"`
	Name string     `json:"name"`
	Time time.Time  `json:"time"`
}

type inspectRecord struct {
	Num        int64  `json:"n"`
	Pos        int64  `json:"file_offset"`
	Kind       string `json:"kind"`
	Offset     int64  `json:"offset"`
	Length     int64  `json:"length"`
	Stored     int64  `json:"stored,omitempty"`
	Compressed bool   `json:"compressed,omitempty"`
}

// runInspect inspects a file; unlock gives its key (fileKey) and is
// called only for an encrypted file.
func runInspect(ctx context.Context, e *env, name string, asJSON, listRecords bool, unlock func(context.Context) (*archive.Key, error)) error {
	start := time.Now()
	var r io.Reader = e.stdin
	rep := &inspectReport{File: name}
	if name == "-" {
		rep.File = "standard input"
	} else {
		f, err := os.Open(name)
		if err != nil {
			return fmt.Errorf("inspect: %w", err)
		}
		defer f.Close()
		r = f
	}
	r, encrypted, err := peekEncrypted(r)
	if err != nil {
		return fmt.Errorf("inspect: %s: %w", rep.File, err)
	}
	var key *archive.Key
	if encrypted && unlock != nil {
		if key, err = unlock(ctx); err != nil {
			return fmt.Errorf("inspect: %w", err)
		}
	}
	if encrypted && key == nil {
		return inspectStructure(e, r, rep, start, asJSON)
	}
	rd := archive.NewReader(r, archive.WithKey(key))
	h, err := rd.Header()
	if err == nil {
		rep.Header = headerReport(h)
		err = archive.Scan(ctx, rd, archive.ScanOptions{}, func(rec *archive.Record, _ []byte) error {
			if rec.Kind == archive.KindData {
				rep.DataRecords++
				rep.DataBytes += rec.Length
				rep.PayloadBytes += rec.PayloadLen
			} else {
				rep.ZeroRecords++
				rep.ZeroBytes += rec.Length
			}
			if listRecords {
				rep.Records = append(rep.Records, inspectRecord{Num: rec.Num, Pos: rec.Pos, Kind: rec.Kind.String(),
					Offset: rec.Offset, Length: rec.Length, Stored: rec.PayloadLen, Compressed: rec.Compressed})
			}
			return nil
		})
	}
	rep.FileBytes = rd.Offset()
	rep.Skipped = rd.SkippedOptional()
	rep.Duration = time.Since(start).Seconds()
	if rep.PayloadBytes > 0 {
		rep.Compression = float64(rep.DataBytes) / float64(rep.PayloadBytes)
	}
	if err == nil {
		rep.Verified = true
		rep.Digest = fmt.Sprintf("%x", rd.Trailer().Digest)
	} else {
		rep.Error = err.Error()
		err = fmt.Errorf("inspect: %s: %w", rep.File, err)
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	return printReport(e, rep, asJSON, err)
}

// printReport prints what inspect found, and returns err.
func printReport(e *env, rep *inspectReport, asJSON bool, err error) error {
	if asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if jerr := enc.Encode(rep); jerr != nil {
			return jerr
		}
		return err
	}
	printInspect(e.stdout, rep)
	return err
}

// inspectStructure is inspect of an encrypted file without its key: the
// header, which is in the clear, and the structure and digest
// (archive.CheckStructure); the records are sealed.
func inspectStructure(e *env, r io.Reader, rep *inspectReport, start time.Time, asJSON bool) error {
	st, err := archive.CheckStructure(r)
	if st != nil {
		rep.Header = headerReport(st.Header)
		rep.DataRecords, rep.ZeroRecords = st.DataRecords, st.Records-st.DataRecords
		rep.PayloadBytes = st.PayloadBytes
		rep.Digest = fmt.Sprintf("%x", st.Digest)
		rep.Verified, rep.StructureOnly = true, true
	}
	if fi, ok := r.(interface{ Stat() (os.FileInfo, error) }); ok {
		if s, serr := fi.Stat(); serr == nil {
			rep.FileBytes = s.Size()
		}
	}
	rep.Duration = time.Since(start).Seconds()
	if err != nil {
		rep.Error = err.Error()
		err = fmt.Errorf("inspect: %s: %w", rep.File, err)
	}
	return printReport(e, rep, asJSON, err)
}

// aeadName names an encrypted file's AEAD.
func aeadName(a archive.AEAD) string {
	if a == archive.AEADAES256GCM {
		return "AES-256-GCM"
	}
	return fmt.Sprintf("unknown (%d)", a)
}

func headerReport(h *archive.Header) *inspectHeader {
	ih := &inspectHeader{Version: h.Version, Kind: "full", Volume: h.VolumeName, VolumeUUID: h.VolumeUUID,
		VolumeSize: h.VolumeSize, BlockSize: h.BlockSize, Tool: h.Tool, Attrs: h.Attrs,
		Snapshot: inspectSnap{h.Snapshot.ID, h.Snapshot.Name, h.Snapshot.Time}}
	if !h.IsFull() {
		ih.Kind = "incremental"
		ih.Parent = &inspectSnap{h.Parent.ID, h.Parent.Name, h.Parent.Time}
		ih.ParentSize = h.ParentSize
	}
	if h.IsSnapback() {
		ih.Kind = "snapback"
		ih.Features = append(ih.Features, "snapback")
	}
	if h.IsEncrypted() {
		ih.Encrypted, ih.KeyID, ih.AEAD = true, h.KeyID.String(), aeadName(h.AEAD)
		ih.Features = append(ih.Features, "encrypted")
	}
	if h.IsResumed() {
		ih.ResumeFrom = h.ResumeFrom
		ih.Features = append(ih.Features, "resumed")
	}
	return ih
}

func printInspect(w io.Writer, rep *inspectReport) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	// Every cell may hold names and attributes of the file.
	row := func(k, f string, a ...any) {
		fmt.Fprintf(tw, "%s\t%s\n", printable.String(k), printable.String(fmt.Sprintf(f, a...)))
	}
	row("file", "%s", rep.File)
	if h := rep.Header; h != nil {
		if h.ResumeFrom > 0 {
			row("format", "version %d, %s, the rest of a transfer from byte %d", h.Version, h.Kind, h.ResumeFrom)
		} else {
			row("format", "version %d, %s", h.Version, h.Kind)
		}
		vol := h.Volume
		if h.VolumeUUID != "" {
			vol += " (" + h.VolumeUUID + ")"
		}
		row("volume", "%s, %d bytes (%s)", vol, h.VolumeSize, bytesHuman(h.VolumeSize))
		row("block size", "%d", h.BlockSize)
		row("snapshot", "%s  %s  %s", h.Snapshot.ID, h.Snapshot.Name, h.Snapshot.Time.Format(time.RFC3339))
		if p := h.Parent; p != nil {
			row("parent", "%s  %s  %s", p.ID, p.Name, p.Time.Format(time.RFC3339))
			row("parent size", "%d", h.ParentSize)
		}
		row("tool", "%s", h.Tool)
		if h.Encrypted {
			row("encrypted", "yes: %s, key id %s", h.AEAD, h.KeyID)
		}
		for _, a := range h.Attrs {
			row("  "+a.Key, "%s", a.Value)
		}
	}
	if rep.StructureOnly {
		row("records", "%d, %d of them DATA: sealed, give the key to show them", rep.DataRecords+rep.ZeroRecords, rep.DataRecords)
		row("stored", "%d bytes (%s) of payload", rep.PayloadBytes, bytesHuman(rep.PayloadBytes))
	} else {
		row("records", "%d DATA, %d ZERO, %d optional skipped", rep.DataRecords, rep.ZeroRecords, rep.Skipped)
		row("data", "%d bytes (%s) stored in %d (%s), ratio %.2f", rep.DataBytes, bytesHuman(rep.DataBytes),
			rep.PayloadBytes, bytesHuman(rep.PayloadBytes), rep.Compression)
		row("zero", "%d bytes (%s)", rep.ZeroBytes, bytesHuman(rep.ZeroBytes))
		row("file size", "%d bytes read", rep.FileBytes)
	}
	if rep.StructureOnly && rep.Verified {
		row("digest", "%s", rep.Digest)
		row("verified", "structure only: contents not checked, the file is encrypted and no key was given (%.2fs)", rep.Duration)
	} else if rep.Verified {
		row("digest", "%s", rep.Digest)
		row("verified", "yes, every record and block (%.2fs)", rep.Duration)
	} else {
		row("verified", "NO: %s", strings.ReplaceAll(rep.Error, "\n", " ")) // advice lines, joined
	}
	tw.Flush()
	for _, r := range rep.Records {
		fmt.Fprintf(w, "%6d @%-10d %-4s %14d +%-10d", r.Num, r.Pos, r.Kind, r.Offset, r.Length)
		if r.Kind == "DATA" {
			enc := "raw"
			if r.Compressed {
				enc = "zstd"
			}
			fmt.Fprintf(w, " %s %d", enc, r.Stored)
		}
		fmt.Fprintln(w)
	}
}
