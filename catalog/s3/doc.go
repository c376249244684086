// Package s3 keeps a thinback store on S3-compatible object storage (AWS
// S3, MinIO, Ceph RGW, Garage, SeaweedFS, Backblaze B2, Wasabi,
// versitygw): the objects, uploads, ranged reads and locks that the
// store's back end is made of. It knows nothing of delta files or the
// catalog; it moves bytes and names them.
//
// An object store has no rename and no flock. What a local store gets
// from rename (a file is complete or absent) an object store gets from
// the multipart upload, which shows nothing until it is completed; what
// it gets from flock, an object store gets from a conditional create,
// which only one writer can win.
//
// # Basics
//
// A store is a prefix in a bucket, written as restic writes it:
//
//	loc, err := s3.ParseLocation("s3:https://s3.example.com/backups/thinback")
//	st, err := s3.Open(ctx, loc, &s3.Options{Region: "eu-central-1"})
//
// Open checks the bucket and the credentials with one request. The
// credentials come from Options, else from AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, else from the shared
// credentials file (AWS_SHARED_CREDENTIALS_FILE, ~/.aws/credentials and
// ~/.aws/config) under AWS_PROFILE; the region from Options, else
// AWS_DEFAULT_REGION or AWS_REGION, else the server is asked. "s3:http://"
// is plain HTTP, for a server on loopback. Names given to a Store are
// relative to its prefix.
//
// A delta file of unknown size is streamed:
//
//	u, err := st.NewUpload(ctx, "volumes/vg0+vm1/12-SNAP.tbk")
//	defer u.Abort()                  // a no-op after Complete
//	_, err = io.Copy(u, deltaStream) // parts go out as they fill
//	info, err := u.Complete()        // only now is the object visible
//
// Memory is (Options.Uploads+1) × Options.PartSize, 48 MiB by default,
// whatever the size. A failure or a cancelled context aborts the
// multipart upload on the server.
//
// Small objects (records, locks) are written whole with Put, created
// only if absent with Create (If-None-Match: *, ErrExist if there), and
// replaced only if unchanged with Replace (If-Match). They are read with
// Get, which takes a size limit. OpenObject returns a Reader: an
// io.ReaderAt of ranged GETs pinned to the object's ETag, and
// NewSequential for reading front to back with a few GETs in flight.
// List walks a prefix page by page; ListUploads and AbortUploads find and
// remove the multipart uploads that killed writers leave.
//
// A lock is an object created with a conditional create:
//
//	l, err := st.Lock(ctx, "locks/vg0+vm1.lock", 10*time.Minute)
//	// errors.Is(err, s3.ErrLocked): held; s3.ErrStaleLock: expired;
//	// a *LockedError names the owner (host, pid, since).
//	defer l.Release(ctx)
//	select { case <-l.Lost(): /* stop writing */ default: }
//
// While held it is renewed every third of its time to live; a stale lock
// is reported, never taken over, and BreakLock removes it.
//
// Every error is an *Error (or *LockedError) that names the store, the
// operation and the object, carries the server's code, and matches one
// of the sentinels with errors.Is: ErrCredentials, ErrNoBucket,
// ErrClockSkew, ErrDenied, ErrQuota, ErrNotFound, ErrExist, ErrChanged,
// ErrNoConditional, ErrTruncated, ErrTooLarge, ErrUnavailable, ErrCertificate,
// ErrLocked, ErrNotHolder. minio-go retries transport errors, 5xx and
// SlowDown with exponential backoff and jitter (Options.MaxRetries); a
// Reader resumes a body cut mid-way; a connection that moves no byte for
// Options.StallTimeout is dropped and its request retried.
//
// # Caveats
//
//   - Conditional writes are what make locks and commit records safe.
//     The first Create of a Store probes that the server refuses a
//     second If-None-Match: * create (writing and removing an object
//     under ProbeName) and fails with ErrNoConditional if it does not.
//     AWS S3 has honoured the header since 2024; older MinIO, Garage
//     and B2 versions may not.
//   - minio-go retries a PUT whose connection broke, and a retried
//     conditional create meets the object the first attempt wrote: the
//     answer is ErrExist although the write was ours. Lock writes a
//     random token and reads it back to tell; other callers of Create
//     must do the same. Likewise a Complete whose answer was lost is
//     recognised by the multipart ETag (MD5 of the part MD5s), which
//     servers with other ETag schemes do not give; then Complete fails
//     and the object may still exist.
//   - A lock is judged stale by the server's clock alone: the lock
//     object's Last-Modified against the Date of the answer that carried
//     it, never kept alive by what its holder wrote (an expiry of 2099,
//     or nothing that decodes). Both have whole seconds, so a lock goes stale a second
//     after its time to live. A holder's renewals run on its own clock,
//     and S3 refuses clients more than 15 minutes off (ErrClockSkew);
//     keep time to live well above a renewal's round trip. Release and Renew
//     read the lock back before they act: a BreakLock and a new Lock
//     between the read and the write are not excluded on servers that
//     ignore If-Match (Renew) or for Release, which has no conditional
//     delete.
//   - One object holds at most 10 000 parts: 156 GiB at the default part
//     size. A larger delta file needs a larger PartSize (more memory) or
//     must be split into several objects by the layer above.
//   - Integrity on the wire rests on TLS for https, and on minio-go's
//     signed streaming payloads for plain http; parts carry no MD5 of
//     their own. Delta files carry their own BLAKE3 chain, which a
//     restore verifies anyway.
//   - Go's collector lets the heap grow to twice what is live before it
//     runs, so a process's peak RSS is about twice the buffers above
//     unless a memory limit is set (debug.SetMemoryLimit or GOMEMLIMIT).
//     A Store keeps the buffers of finished uploads and sequential
//     readers for reuse for as long as it lives.
//   - versitygw refuses the upload-id-marker it returned itself when
//     listing multipart uploads; ListUploads then goes on by key, which
//     may skip further uploads of one key. AbortUploads lists again
//     until nothing is left.
//   - Stores kept on a filesystem (versitygw's posix back end) remove a
//     "directory" with its last object; a write racing such a delete
//     fails with ExistingObjectIsDirectory, and whole PUTs and Completes
//     are retried a few times when it does.
//   - minio-go's streaming signature (plain http only) breaks the
//     connection after an empty PUT; small objects are therefore sent
//     with a signed SHA-256 of their payload instead.
//   - The EC2/ECS instance metadata service is not among the credential
//     sources: a backup tool should not talk to a link-local address
//     unless told to.
package s3
