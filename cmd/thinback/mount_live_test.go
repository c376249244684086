package main

import (
	"bytes"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMountNewBackups: a backup made while the store is mounted appears in
// the mounted tree, as latest.img too, holding the new point's bytes (the
// README: "new backups appear in the directory within a second"). It
// waits for that with a generous bound and asserts no time.
func TestMountNewBackups(t *testing.T) {
	work := t.TempDir()
	store := filepath.Join(work, "store")
	r := rand.New(rand.NewSource(1))
	img := make([]byte, 3<<20)
	r.Read(img)
	disk := filepath.Join(work, "disk.img")
	if err := os.WriteFile(disk, img, 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, work, "backup", "--file", "disk.img", "--store", store)
	m := startMount(t, work, store)
	vol := filepath.Join(m.dir, "disk.img")
	// Read the tree and latest.img first, as a user would: what the
	// kernel and the mount cached must not hide the new backup.
	if names := dirNames(t, vol); len(names) != 2 || !strings.HasPrefix(names[0], "1-") || names[1] != "latest.img" {
		t.Fatalf("before the second backup the volume's directory holds %v", names)
	}
	if got, err := os.ReadFile(filepath.Join(vol, "latest.img")); err != nil || !bytes.Equal(got, img) {
		t.Fatalf("latest.img before the second backup: %v, or other bytes", err)
	}

	r.Read(img[1<<20 : 1<<20+300000])
	if err := os.WriteFile(disk, img, 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, work, "backup", "--file", "disk.img", "--store", store)
	// Only by its name, as a user who reads latest.img again would: a
	// listing would make the kernel look every name up afresh.
	var latest []byte
	deadline := time.Now().Add(60 * time.Second) // a bound for a loaded machine, not the claim
	for {
		latest, _ = os.ReadFile(filepath.Join(vol, "latest.img"))
		if bytes.Equal(latest, img) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !bytes.Equal(latest, img) {
		t.Fatalf("latest.img does not come to hold the backup made while mounted\n%s", m.out.String())
	}
	names := dirNames(t, vol)
	if len(names) != 3 || !strings.HasPrefix(names[1], "2-") || names[2] != "latest.img" {
		t.Fatalf("a backup made while mounted does not appear: the volume's directory holds %v\n%s", names, m.out.String())
	}
	if got, err := os.ReadFile(filepath.Join(vol, names[1])); err != nil || !bytes.Equal(got, img) {
		t.Fatalf("%s: %v, or other bytes than the image backed up", names[1], err)
	}
	m.stop(t, os.Interrupt)
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}
