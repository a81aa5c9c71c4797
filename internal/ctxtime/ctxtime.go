// Package ctxtime is the default for the injectable Sleep options of the
// GPS receiver, the DPS and IoT Hub clients and the provisioner: a sleep that
// a cancelled context ends early.
package ctxtime

import (
	"context"
	"time"
)

// Sleep waits d or until ctx ends; then it returns context.Cause(ctx) (the
// same as ctx.Err() unless the context was given a cause). A d <= 0 does
// not wait but still reports a context that has already ended.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
