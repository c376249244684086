package lvmthin

import "github.com/thinback/thinback/lvmthin/internal/blockdev"

// deviceReader reads a snapshot device read-only with O_DIRECT; see
// blockdev.Reader, which the classic-snapshot COW reader (lvmthin/cow)
// shares.
type deviceReader = blockdev.Reader

func openDevice(path string) (*deviceReader, error) { return blockdev.Open(path) }

// alignedBuffer returns an n-byte buffer aligned for O_DIRECT.
func alignedBuffer(n int) []byte { return blockdev.AlignedBuffer(n) }
