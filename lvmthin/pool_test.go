package lvmthin

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParsePoolStatusFixtures(t *testing.T) {
	lines := strings.Split(strings.TrimSpace(string(readFixture(t, "pool-status.txt"))), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines in pool-status.txt", len(lines))
	}
	want := []PoolStatus{
		{TransactionID: 3, MetadataUsed: 113, MetadataTotal: 1024, DataUsed: 17, DataTotal: 8192,
			Mode: PoolWrite, DiscardMode: "no_discard_passdown", NoSpacePolicy: "queue_if_no_space"},
		{TransactionID: 3, MetadataUsed: 114, MetadataTotal: 1024, DataUsed: 17, DataTotal: 8192, HeldRoot: 37,
			Mode: PoolWrite, DiscardMode: "no_discard_passdown", NoSpacePolicy: "queue_if_no_space"},
		{TransactionID: 1, MetadataUsed: 112, MetadataTotal: 1024, DataUsed: 128, DataTotal: 128,
			Mode: PoolOutOfDataSpace, DiscardMode: "no_discard_passdown", NoSpacePolicy: "error_if_no_space"},
	}
	for i, line := range lines {
		st, err := ParsePoolStatus(line)
		if err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		st.RawStatusWords = nil
		if !reflect.DeepEqual(*st, want[i]) {
			t.Errorf("line %d: got %+v\nwant %+v", i, *st, want[i])
		}
	}
}

func TestPoolStatusUsable(t *testing.T) {
	pool := Name{"vg0", "pool"}
	tests := []struct {
		line string
		want error
	}{
		{"0 1048576 thin-pool 3 113/1024 17/8192 - rw no_discard_passdown queue_if_no_space - 256", nil},
		{"0 1048576 thin-pool 3 113/1024 17/8192 37 rw discard_passdown queue_if_no_space -", nil},
		{"0 16384 thin-pool 1 112/1024 128/128 - out_of_data_space no_discard_passdown error_if_no_space - 256", ErrPoolOutOfSpace},
		{"0 16384 thin-pool 1 1024/1024 12/128 - ro no_discard_passdown error_if_no_space - 256", ErrPoolReadOnly},
		{"0 16384 thin-pool 1 12/1024 12/128 - ro no_discard_passdown queue_if_no_space needs_check 256", ErrPoolReadOnly},
		{"0 16384 thin-pool 1 12/1024 12/128 - rw no_discard_passdown queue_if_no_space needs_check 256", ErrPoolReadOnly},
		{"0 16384 thin-pool Fail", ErrPoolFailed},
		{"0 16384 thin-pool Error", ErrPoolFailed},
	}
	for _, tt := range tests {
		st, err := ParsePoolStatus(tt.line)
		if err != nil {
			t.Fatalf("%q: %v", tt.line, err)
		}
		err = st.usable(pool)
		if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
			t.Errorf("%q: usable = %v, want %v", tt.line, err, tt.want)
		}
		if err != nil && !strings.Contains(err.Error(), "vg0/pool") {
			t.Errorf("%q: error does not name the pool: %v", tt.line, err)
		}
	}
}

func TestParsePoolStatusBad(t *testing.T) {
	for _, line := range []string{
		"", "0 16384", "0 16384 thin 1 1", "0 16384 linear 7:0 0",
		"0 16384 thin-pool 1 112/1024 128/128 - rw", // too short
		"0 16384 thin-pool x 112/1024 128/128 - rw no_discard_passdown queue_if_no_space -",
		"0 16384 thin-pool 1 112 128/128 - rw no_discard_passdown queue_if_no_space -",
		"0 16384 thin-pool 1 112/1024 129/128 - rw no_discard_passdown queue_if_no_space -",
		"0 16384 thin-pool 1 112/1024 128/128 0 rw no_discard_passdown queue_if_no_space -",
		"0 16384 thin-pool 1 112/1024 128/128 x rw no_discard_passdown queue_if_no_space -",
		"0 16384 thin-pool 1 112/1024 128/128 - rx no_discard_passdown queue_if_no_space -",
		"0 16384 thin-pool 1 112/1024 128/128 - rw no_discard_passdown queue_if_no_space maybe",
	} {
		if st, err := ParsePoolStatus(line); err == nil {
			t.Errorf("ParsePoolStatus(%q) = %+v, want an error", line, st)
		} else if !errors.Is(err, ErrMetadata) {
			t.Errorf("ParsePoolStatus(%q): %v is not ErrMetadata", line, err)
		}
	}
}

func FuzzParsePoolStatus(f *testing.F) {
	for _, line := range strings.Split(string(readFixture(f, "pool-status.txt")), "\n") {
		f.Add(line)
	}
	f.Add("0 16384 thin-pool Fail")
	f.Fuzz(func(t *testing.T, line string) {
		st, err := ParsePoolStatus(line)
		if err != nil {
			return
		}
		switch st.Mode {
		case PoolWrite, PoolReadOnly, PoolOutOfDataSpace:
			if st.MetadataUsed > st.MetadataTotal || st.DataUsed > st.DataTotal {
				t.Fatalf("accepted %+v", st)
			}
		case PoolFail:
		default:
			t.Fatalf("mode %q", st.Mode)
		}
		_ = st.usable(Name{"vg", "pool"})
	})
}
