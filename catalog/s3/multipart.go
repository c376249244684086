package s3

import (
	"context"
	"fmt"
	"time"

	"github.com/minio/minio-go/v7"
)

// PendingUpload is a multipart upload the server still holds: started,
// neither completed nor aborted. Its parts are stored (and billed) but
// no object is visible. A writer killed mid-upload leaves one.
type PendingUpload struct {
	Name      string // the object it would have become, relative to the prefix
	UploadID  string
	Initiated time.Time
}

// maxListPages bounds a listing loop against a server whose markers
// never advance.
const maxListPages = 1 << 20

// ListUploads calls fn for every pending multipart upload of an object
// whose name starts with prefix. An error from fn stops the listing and
// is returned as is.
func (s *Store) ListUploads(ctx context.Context, prefix string, fn func(PendingUpload) error) error {
	keyMarker, idMarker := "", ""
	for range maxListPages {
		res, err := s.core.ListMultipartUploads(ctx, s.loc.Bucket, s.key(prefix), keyMarker, idMarker, "", s.opts.ListPageSize)
		if err != nil && idMarker != "" && minio.ToErrorResponse(err).Code == "InvalidArgument" {
			// versitygw takes upload-id-marker to name an upload of the
			// key after key-marker, not of key-marker itself as S3 does,
			// and refuses the marker it returned. Going on from the key
			// alone can skip further uploads of that one key; AbortUploads
			// lists again until nothing is left, so it misses none.
			idMarker = ""
			res, err = s.core.ListMultipartUploads(ctx, s.loc.Bucket, s.key(prefix), keyMarker, "", "", s.opts.ListPageSize)
		}
		if err != nil {
			return s.op("list uploads", prefix, err)
		}
		for _, u := range res.Uploads {
			name, ok := s.name(u.Key)
			if !ok {
				continue
			}
			if err := fn(PendingUpload{Name: name, UploadID: u.UploadID, Initiated: u.Initiated}); err != nil {
				return err
			}
		}
		if !res.IsTruncated {
			return nil
		}
		if res.NextKeyMarker == keyMarker && res.NextUploadIDMarker == idMarker {
			return s.op("list uploads", prefix, fmt.Errorf("server says the list goes on but its marker did not advance (%q, %q)", keyMarker, idMarker))
		}
		keyMarker, idMarker = res.NextKeyMarker, res.NextUploadIDMarker
	}
	return s.op("list uploads", prefix, fmt.Errorf("more than %d pages", maxListPages))
}

// AbortUpload aborts one pending upload. An upload already gone is not
// an error.
func (s *Store) AbortUpload(ctx context.Context, u PendingUpload) error {
	if err := validName(u.Name); err != nil {
		return s.op("abort", u.Name, err)
	}
	err := s.core.AbortMultipartUpload(ctx, s.loc.Bucket, s.key(u.Name), u.UploadID)
	if err != nil {
		if e := s.op("abort", u.Name, err); !isNotFound(e) {
			return s.op("abort upload "+u.UploadID+" of", u.Name, err)
		}
	}
	return nil
}

// AbortUploads aborts every pending upload under prefix started more
// than olderThan ago (0: all of them) and returns those it aborted. Only
// a caller that holds the lock of what lives under prefix may pass 0:
// otherwise it would abort a live writer's upload.
//
// It lists again after aborting until a listing finds nothing more to
// abort, so a server whose pagination skips uploads (see ListUploads)
// still has none left; at most maxAbortRounds rounds.
func (s *Store) AbortUploads(ctx context.Context, prefix string, olderThan time.Duration) ([]PendingUpload, error) {
	cutoff := time.Now().Add(-olderThan)
	var done []PendingUpload
	aborted := map[string]bool{}
	for range maxAbortRounds {
		var stale []PendingUpload
		err := s.ListUploads(ctx, prefix, func(u PendingUpload) error {
			if (olderThan <= 0 || u.Initiated.Before(cutoff)) && !aborted[u.UploadID] {
				stale = append(stale, u)
			}
			return nil
		})
		if err != nil {
			return done, err
		}
		if len(stale) == 0 {
			return done, nil
		}
		for _, u := range stale {
			if err := s.AbortUpload(ctx, u); err != nil {
				return done, err
			}
			aborted[u.UploadID] = true
			done = append(done, u)
		}
	}
	return done, s.op("abort uploads", prefix, fmt.Errorf("uploads still listed after %d rounds of aborts", maxAbortRounds))
}

const maxAbortRounds = 100
