package catalog

import "time"

// PrunePlan is what a prune does to one volume's snapshots under a
// retention policy (Retention.Plan). It changes nothing itself; the
// caller carries it out, in this order:
//
//  1. each Merge, in order: the kept snapshot's file is replaced by the
//     merge of its Run and its own file, and the Run's records are
//     deleted in the same commit (see DeltaWriter.ReplaceDelta);
//  2. each snapshot of Drop, in order: removed (Repository.Remove).
//
// Every kept snapshot restores exactly as before at each step.
type PrunePlan struct {
	Keep   []Snapshot // what the policy keeps, in the order given to Plan
	Remove []Snapshot // what it removes, in the order given to Plan: Merges' runs and Drop
	Merges []PruneMerge
	Drop   []Snapshot // removed snapshots no kept one descends from (a dead branch), newest first
}

// PruneMerge is one kept snapshot and the removed ancestors it absorbs.
type PruneMerge struct {
	Kept Snapshot
	Run  []Snapshot // the removed snapshots between Kept and its nearest kept ancestor (or the full), oldest first
}

// Plan decides what a prune of one volume's snapshots, snaps (as
// Tx.Snapshots lists them: oldest first), does: Select splits them into
// kept and removed by their times in loc (time.Local if nil), and Plan
// works out how the chains stay whole. A run of removed snapshots is
// merged into the kept snapshot that follows it; removing a full merges
// it with the following incrementals into a new full. Removed snapshots
// that no kept snapshot descends from are dropped newest first, so a
// child always goes before its parent.
func (r Retention) Plan(snaps []Snapshot, loc *time.Location) PrunePlan {
	keep, remove := r.Select(snaps, loc)
	p := PrunePlan{Keep: keep, Remove: remove}
	if len(remove) == 0 {
		return p
	}
	byID := map[string]Snapshot{}
	for _, sn := range snaps {
		byID[sn.ID] = sn
	}
	removing := map[string]bool{}
	for _, sn := range remove {
		removing[sn.ID] = true
	}
	absorbed := map[string]bool{}
	for _, k := range keep {
		var run []Snapshot
		for id := k.Parent; id != "" && removing[id]; id = byID[id].Parent {
			run = append([]Snapshot{byID[id]}, run...)
			absorbed[id] = true
		}
		if len(run) > 0 {
			p.Merges = append(p.Merges, PruneMerge{Kept: k, Run: run})
		}
	}
	for i := len(remove) - 1; i >= 0; i-- {
		if !absorbed[remove[i].ID] {
			p.Drop = append(p.Drop, remove[i])
		}
	}
	return p
}
