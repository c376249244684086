package lvmthin

import (
	"testing"
	"time"

	"github.com/thinback/thinback/lvmthin/lvmtest"
)

// TestGuest runs this package's TestKernel* tests against a real kernel in
// a User-Mode Linux guest (see lvmtest.RunGuest). THINBACK_GUEST_RUN
// narrows them (a -test.run pattern); THINBACK_SEED replays random choices.
// The timeout leaves room for TestKernelNativeRounds' longer run
// (THINBACK_ROUNDS=100: about 7 minutes of the guest's time on a loaded
// machine).
func TestGuest(t *testing.T) {
	lvmtest.RunGuest(t, "..", lvmtest.Options{Pattern: "^TestKernel", Timeout: 25 * time.Minute})
}
