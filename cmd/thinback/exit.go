package main

import (
	"context"
	"errors"
	"syscall"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/archive/keys"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3"
	"github.com/thinback/thinback/catalog/s3store"
	"github.com/thinback/thinback/catalog/sshstore"
	"github.com/thinback/thinback/cmd/internal/config"
	"github.com/thinback/thinback/cmd/internal/metrics"
	"github.com/thinback/thinback/cmd/internal/record"
	"github.com/thinback/thinback/cmd/internal/remote"
	"github.com/thinback/thinback/cmd/internal/replica"
	"github.com/thinback/thinback/cmd/internal/rollback"
	"github.com/thinback/thinback/cmd/internal/secret"
	"github.com/thinback/thinback/cmd/internal/storecopy"
	"github.com/thinback/thinback/lvmthin"
	"github.com/thinback/thinback/lvmthin/cow"
	"github.com/thinback/thinback/lvmthin/thinmeta"
	"github.com/thinback/thinback/lvmthin/thinxml"
	"github.com/thinback/thinback/restore"
)

// Exit codes. They are documented in the README and in --help; scripts and
// cron jobs depend on them, so their meanings never change.
const (
	exitOK          = 0
	exitError       = 1  // anything not listed below
	exitUsage       = 2  // bad command line
	exitCorrupt     = 3  // a delta file is damaged, truncated, not a delta file, or not the one the catalog records
	exitVersion     = 4  // a delta file needs a newer thinback
	exitChain       = 5  // wrong base / not a chain / other volume / interrupted apply / modified target
	exitTarget      = 6  // target too small, read-only, busy or not a file/device
	exitLVM         = 7  // LV or pool missing, not thin, pool failed, damaged pool metadata
	exitMetaSnap    = 8  // the pool's metadata snapshot is held by someone else
	exitLocked      = 9  // another thinback holds the volume or catalog
	exitVerify      = 10 // verify found problems
	exitNoSpace     = 11 // a disk filled up, or an S3 bucket's quota
	exitStore       = 12 // an S3 store refused us: credentials, access, bucket, clock, certificate, no conditional writes
	exitUnavailable = 13 // an S3 store could not be reached or kept failing (throttled, dropped connections): try again later
	exitKey         = 14 // an encrypted store or file: wrong passphrase or key, or none given
	exitRemote      = 15 // the other host: not reached, refused by ssh, no thinback there or an incompatible one
	exitInterrupted = 130
)

const exitCodesHelp = `EXIT CODES:
   0    success
   1    error not listed below (I/O error, missing file...)
   2    bad command line; a new store on S3 without --encrypt or
        --no-encrypt; a config file (run, config check) that is not
        valid
   3    a delta file is damaged, truncated or not a delta file, or a
        store's file is not the one its catalog records (another
        snapshot's or volume's), refused before anything is written; or
        an encrypted file or record that does not authenticate (altered)
   4    a delta file needs a newer thinback
   5    the files do not apply to the target: wrong base snapshot, not a
        chain, another volume, an earlier apply was interrupted, or the
        target was replaced or written to since its last apply; the rest
        of a transfer (send --resume) for a target that holds no such
        interrupted transfer, or a token of another snapshot; or backup
        into an encrypted store rolled back (older than this host last
        saw it) or whose key slots are gone (see --allow-rollback); or
        copy into a store whose volume of that name is not the source's
   6    the target is too small, read-only, in use, not a file or device,
        or one of the command's own files (or holds one), as may be the
        standard output of cat or send -o -; or a source is not a regular
        file or block device
   7    LVM: volume or pool not found, not a thin volume, pool failed,
        damaged pool metadata
   8    the thin pool's metadata snapshot is held by another program or a
        killed run (see --release-stale-metadata-snap)
   9    another thinback is working on the same volume or catalog, or
        changing the same store's key slots
   10   verify found problems
   11   no space left on a device, or a file larger than its filesystem
        allows (FAT's 4 GiB), or an S3 bucket's quota is exhausted
   12   an S3 store refused the request: credentials rejected, access
        denied, no such bucket, this machine's clock too far off, the
        server's certificate not trusted, or a server without
        conditional writes (thinback does not write to one)
   13   an S3 store could not be reached, or kept failing through every
        retry (503 SlowDown, 5xx, dropped connections): try again later
   14   an encrypted store or delta file: the passphrase, key file or
        recovery identity given opens none of its key slots, or is not
        the key its files are under, or none was given; or a key was
        given for a store that has no key slots
   15   the other host (send --to HOST:PATH, and the commands that
        reach a host over ssh) could not be reached or refused: ssh
        failed or refused its host key, it has no thinback (see
        --remote-thinback) or one of another protocol version, or
        something else answered there; or the connection to it (an
        ssh:// store's) dropped: nothing was recorded there
   130  interrupted (SIGINT or SIGTERM); nothing is left half-done that
        the next run does not finish or clean up
`

// usageError marks errors in the command line. hint is the command whose
// --help the message points to; every command's errors get one (see
// usageErrors).
type usageError struct{ msg, hint string }

func (e usageError) Error() string {
	if e.hint == "" {
		return e.msg
	}
	return e.msg + " (see " + e.hint + " --help)"
}

// exitCodes maps every sentinel error of thinback's packages, and the
// command's own, to its exit code: the first entry an error matches
// (errors.Is) decides, so specific entries come before general ones.
// TestExitCodeTable fails when a package gains a sentinel that is not
// listed here.
var exitCodes = []struct {
	err  error
	code int
}{
	{errVerify, exitVerify},
	{config.ErrInvalid, exitUsage}, // a config file thinback cannot use: fix it, as a command line

	// Delta files.
	{archive.ErrVersion, exitVersion},
	{archive.ErrChecksum, exitCorrupt},
	{archive.ErrTruncated, exitCorrupt},
	{archive.ErrHeader, exitCorrupt},
	{archive.ErrTrailingData, exitCorrupt},
	{archive.ErrWriteOrder, exitError}, // a bug of the writer's caller, not of any input
	// Encrypted files: a key missing or not the file's is the user's to
	// fix (exit 14); contents that do not authenticate are input that
	// cannot be used, as a damaged file is, and nothing was written.
	{archive.ErrKeyRequired, exitKey},
	{archive.ErrWrongKey, exitKey},
	{archive.ErrAuth, exitCorrupt},
	{archive.ErrParentTag, exitChain}, // as archive.ErrNotChain: not the parent
	// The store holds another file than its catalog names: damaged as a
	// store, whatever the target (5 is about the target).
	{record.ErrNotRecorded, exitCorrupt},

	// LVM.
	{lvmthin.ErrMetadataSnapBusy, exitMetaSnap},
	{lvmthin.ErrStaleMetadataSnap, exitMetaSnap},
	{lvmthin.ErrLocked, exitLocked},
	{lvmthin.ErrNotFound, exitLVM},
	{lvmthin.ErrDMReply, exitLVM},
	{lvmthin.ErrNotThin, exitLVM},
	{lvmthin.ErrBadBase, exitLVM},
	{lvmthin.ErrPoolFailed, exitLVM},
	{lvmthin.ErrPoolReadOnly, exitLVM},
	{lvmthin.ErrPoolOutOfSpace, exitLVM},
	{lvmthin.ErrMetadata, exitLVM},
	{lvmthin.ErrName, exitLVM},
	// lvmthin wraps the native reader's errors in its own; listed here
	// too so that one reaching a command unwrapped gets the same code.
	{thinmeta.ErrMetadata, exitLVM},
	{cow.ErrCorrupt, exitLVM}, // lvmthin also wraps these as ErrMetadata
	{cow.ErrVersion, exitLVM},
	{cow.ErrInvalidated, exitLVM},
	{thinmeta.ErrNoDevice, exitLVM},
	{thinmeta.ErrNoSnapshot, exitError}, // lvmthin's own no-snapshot error is not a sentinel either
	// ... and the thin tools' XML reader's (lvmthin/thinxml).
	{thinxml.ErrMetadata, exitLVM},
	{thinxml.ErrUnsupported, exitLVM},
	{thinxml.ErrNoDevice, exitLVM},
	// Classic (thick) snapshots; not wired into commands yet.
	{lvmthin.ErrExists, exitLVM},
	{lvmthin.ErrNoSpace, exitLVM}, // the volume group, not a disk of the store
	{lvmthin.ErrNotSnapshot, exitLVM},
	{lvmthin.ErrNotThick, exitLVM},
	{lvmthin.ErrInactive, exitLVM},
	{lvmthin.ErrBaseInvalid, exitLVM},
	{lvmthin.ErrSnapshotInvalid, exitLVM},
	{lvmthin.ErrSnapshotMerging, exitLVM},

	// Chains and targets.
	{restore.ErrMismatch, exitChain},
	{archive.ErrNotChain, exitChain}, // restore.ErrNotChain is the same error
	{archive.ErrBlockSize, exitChain},
	{restore.ErrNotChain, exitChain},
	{restore.ErrBlockSize, exitChain},
	{restore.ErrVolumeMismatch, exitChain},
	{restore.ErrInterrupted, exitChain},
	{restore.ErrResume, exitChain}, // a resumed stream for a target that holds no such transfer
	{errResumeToken, exitChain},    // send --resume with the token of another transfer
	{restore.ErrModified, exitChain},
	{lvmthin.ErrModified, exitChain},      // a replica written to since its snapshot
	{catalog.ErrMissingParent, exitChain}, // an incremental whose parent is not in the store
	{catalog.ErrParentVolume, exitChain},
	{catalog.ErrParentOrder, exitChain},
	{catalog.ErrParentSize, exitChain}, // restoring it would leave stale data
	{rollback.ErrRollback, exitChain},  // the store's chain is older than this host saw it
	{storecopy.ErrDiverged, exitChain}, // copy into a store whose volume of that name is another
	{restore.ErrTargetTooSmall, exitTarget},
	{lvmthin.ErrOpen, exitTarget}, // a replica target in use, refused a rollback
	{restore.ErrTargetReadOnly, exitTarget},
	{restore.ErrTargetBusy, exitTarget},
	{restore.ErrTargetKind, exitTarget},
	{archive.ErrFileKind, exitTarget}, // a source, like a target, is a file or a device
	{restore.ErrTargetIsInput, exitTarget},

	// Key slots of encrypted stores: a wrong passphrase or key has a code
	// of its own, so a script can tell it from a damaged store.
	{keys.ErrWrongKey, exitKey},
	{secret.ErrNoSecret, exitKey},
	{secret.ErrNotEncrypted, exitKey}, // a key given, not the key of what the store holds
	{keys.ErrCorrupt, exitCorrupt},
	{keys.ErrVersion, exitVersion},
	{keys.ErrInvalid, exitUsage}, // an empty passphrase, a label with control characters
	{keys.ErrSlotType, exitUsage},
	{keys.ErrKeyFile, exitError},
	{keys.ErrLastSlot, exitError},
	{keys.ErrNotFound, exitError},
	{keys.ErrNoSlots, exitError},
	{keys.ErrExist, exitError},

	// Stores on S3-compatible object storage.
	{s3.ErrLocked, exitLocked}, // s3store.LockedError, stale or not
	{s3.ErrStaleLock, exitLocked},
	{s3.ErrNotHolder, exitLocked}, // the lock was broken by another run meanwhile
	{s3.ErrQuota, exitNoSpace},
	{s3.ErrCredentials, exitStore},
	{s3.ErrDenied, exitStore},
	{s3.ErrNoBucket, exitStore},
	{s3.ErrClockSkew, exitStore},
	{s3.ErrCertificate, exitStore},
	{s3.ErrNoConditional, exitStore},
	{s3.ErrUnavailable, exitUnavailable},
	{s3.ErrTruncated, exitUnavailable}, // the server cut the data on every retry
	{s3.ErrLocation, exitUsage},
	{s3store.ErrFormat, exitVersion},  // a store object of a newer thinback
	{s3store.ErrNotStore, exitError},  // as for a directory without catalog.db
	{s3store.ErrNotLocked, exitError}, // a bug of the caller
	{s3.ErrNotFound, exitError},
	{s3.ErrExist, exitError},
	{s3.ErrChanged, exitError},
	{s3.ErrTooLarge, exitError},
	{s3.ErrInvalidName, exitError},

	// The other host, over ssh.
	{remote.ErrNoRemote, exitRemote},
	{remote.ErrVersion, exitRemote},
	{remote.ErrHostKey, exitRemote},
	{remote.ErrSSH, exitRemote},
	{remote.ErrProtocol, exitRemote},
	// A store on another host: its thinback speaks another store
	// protocol, or broke it, or the connection ended under the command.
	{sshstore.ErrVersion, exitRemote},
	{sshstore.ErrProtocol, exitRemote},
	{sshstore.ErrClosed, exitRemote},
	{remote.ErrDest, exitUsage},
	{remote.ErrArg, exitUsage},
	// replicate's own protocol, on top of the transport's: an
	// incompatible thinback on the other host, as for the handshake.
	{replica.ErrProtocol, exitRemote},
	{replica.ErrMissing, exitLVM}, // a replica target LV not there, without --create

	// Stores and catalogs.
	{catalog.ErrLocked, exitLocked},
	{catalog.ErrBusy, exitLocked},
	{catalog.ErrNoSpace, exitNoSpace},
	{catalog.ErrTooLarge, exitNoSpace},
	{syscall.ENOSPC, exitNoSpace},
	// A bad sector or a failing disk under a source, a store or a target:
	// archive.ReadError and restore.WriteError say which and where.
	{syscall.EIO, exitError},
	// What Check finds: the store is damaged, as verify reports it.
	{catalog.ErrIndex, exitVerify},
	{catalog.ErrUnknownVolume, exitVerify},
	{catalog.ErrCycle, exitVerify},
	{catalog.ErrBrokenChain, exitVerify},
	{catalog.ErrDuplicateSeq, exitVerify},
	{catalog.ErrDuplicateFile, exitVerify},
	{catalog.ErrNoDigest, exitVerify},
	{catalog.ErrFileMissing, exitVerify},
	{catalog.ErrFileSize, exitVerify},
	{catalog.ErrFileDigest, exitVerify},
	{catalog.ErrOrphan, exitVerify},
	{catalog.ErrUnknownSnapshot, exitVerify},
	{catalog.ErrTargetVolume, exitVerify},
	// The rest say what is wrong in their message; no script needs to
	// tell them apart by code.
	{catalog.ErrVersion, exitError},
	{catalog.ErrInvalid, exitError},
	{catalog.ErrDamaged, exitError},
	{catalog.ErrFormat, exitError},
	{catalog.ErrCorrupt, exitError},
	{catalog.ErrInvalidRecord, exitError},
	// A link or special file where a store or the state file keeps its
	// own file: not a target (6), nothing else the table names.
	{catalog.ErrNotOwn, exitError},
	{catalog.ErrNotFound, exitError},
	{catalog.ErrExist, exitError},
	{catalog.ErrInUse, exitError},
	{catalog.ErrReadOnly, exitError},
	{catalog.ErrLeftover, exitError},

	// A metrics file of another program, replaced: a warning, never a
	// command's error.
	{metrics.ErrReplaced, exitError},
}

// exitCode maps an error to its exit code: the one place where that is
// decided.
func exitCode(err error) int {
	var ue usageError
	var re *remoteError
	var me multiError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &me):
		// Several volumes or jobs: the worst of their codes.
		return me.code
	case errors.As(err, &re):
		// What the command exited with on the other host.
		if re.code > 0 && re.code < 256 {
			return re.code
		}
		return exitError
	case errors.As(err, &ue):
		return exitUsage
	case errors.Is(err, context.Canceled):
		return exitInterrupted
	}
	for _, c := range exitCodes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return exitError
}
