package backup

import (
	"testing"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/lvmthin"
)

// A replica's snapshots on its receiving host are named as backup names
// its own (TARGET.thinback.<time>, of the target); backing up the replica
// there must not rotate them away, whatever their tag says.
func TestIsOurSnapshotSkipsReplicaSnapshots(t *testing.T) {
	origin := &lvmthin.LV{VG: "vg0", Name: "vm1"}
	for _, c := range []struct {
		lv   lvmthin.LV
		ours bool
	}{
		{lvmthin.LV{Name: "vm1.thinback.20261207T220000Z", Origin: "vm1"}, true},
		{lvmthin.LV{Name: "vm1.thinback.20261207T220000Z", Origin: "vm1", Tags: []string{"keep"}}, true},
		{lvmthin.LV{Name: "vm1.thinback.20261207T220000Z", Origin: "vm1", Tags: []string{lvmthin.ReplicaTag(archive.ID{1})}}, false},
		{lvmthin.LV{Name: "vm1.thinback.20261207T220000Z", Origin: "vm1", Tags: []string{"thinback_src_damaged"}}, false},
		{lvmthin.LV{Name: "vm1.replica.20261207T220000Z", Origin: "vm1"}, false},
		{lvmthin.LV{Name: "vm1.thinback.20261207T220000Z", Origin: "vm2"}, false},
	} {
		if got := isOurSnapshot(&c.lv, origin); got != c.ours {
			t.Errorf("%s (origin %s, tags %q): ours %v, want %v", c.lv.Name, c.lv.Origin, c.lv.Tags, got, c.ours)
		}
	}
}
