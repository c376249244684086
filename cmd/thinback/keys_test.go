package main

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"filippo.io/age"
	"github.com/thinback/thinback/archive/keys"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3"
	"github.com/thinback/thinback/catalog/s3/s3test"
	"github.com/thinback/thinback/catalog/s3store"
)

// Every store keeps an encrypted store's key slots.
var _ keys.Storage = catalog.Repository(nil)

// TestKeySlotsInStores: the slots of a master key kept in a directory
// store and in one on S3 (the real versitygw): a store whose passphrase
// is lost (its slot removed) is opened with the recovery identity alone,
// from what the store holds.
func TestKeySlotsInStores(t *testing.T) {
	local, err := catalog.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv := s3test.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	remote, err := s3store.Open(ctx, s3.Location{Insecure: true, Host: srv.Addr, Bucket: s3test.DefaultBucket, Prefix: "p"},
		&s3store.Options{
			S3:     s3.Options{AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey, Region: "us-east-1", Lookup: s3.LookupPath},
			Cache:  t.TempDir(),
			Create: true,
		})
	if err != nil {
		t.Fatal(err)
	}
	defer remote.Close()
	cheap := keys.Argon2Params{Time: 1, MemoryKiB: keys.MinArgon2MemoryKiB, Threads: 1}
	for name, repo := range map[string]catalog.Repository{"directory": local, "s3": remote} {
		t.Run(name, func(t *testing.T) {
			mk, err := keys.NewMasterKey()
			if err != nil {
				t.Fatal(err)
			}
			pass := []byte("forgotten by next year")
			ps, err := keys.NewPassphraseSlot(mk, pass, cheap, "admin")
			if err != nil {
				t.Fatal(err)
			}
			ring, err := keys.Init(repo, ps)
			if err != nil {
				t.Fatal(err)
			}
			id, err := age.GenerateX25519Identity()
			if err != nil {
				t.Fatal(err)
			}
			rs, err := keys.NewRecoverySlot(mk, id.Recipient(), "safe")
			if err != nil {
				t.Fatal(err)
			}
			if err := ring.Add(mk, rs); err != nil {
				t.Fatal(err)
			}
			if err := ring.Remove(ps.ID); err != nil {
				t.Fatal(err)
			}

			ring, err = keys.Load(repo)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := ring.UnlockPassphrase(pass); !errors.Is(err, keys.ErrWrongKey) || exitCode(err) != exitCode(keys.ErrWrongKey) {
				t.Fatalf("passphrase of a removed slot: %v", err)
			}
			got, s, err := ring.UnlockRecovery(id)
			if err != nil {
				t.Fatal(err)
			}
			if s.ID != rs.ID || !bytes.Equal(got.Bytes(), mk.Bytes()) {
				t.Fatal("the recovery slot opens another key")
			}
			if err := ring.Remove(rs.ID); !errors.Is(err, keys.ErrLastSlot) {
				t.Fatalf("remove of the last slot: %v", err)
			}
			if slots, err := repo.KeySlots(); err != nil || len(slots) != 1 {
				t.Fatalf("slots left: %d, %v", len(slots), err)
			}
		})
	}
}
