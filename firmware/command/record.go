package command

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"time"

	"github.com/reefer/tracker/internal/atomicfile"
)

// Outcome statuses.
const (
	StatusDone     = "done"     // carried out
	StatusRejected = "rejected" // not a valid command; completed so the hub does not deliver it again
	StatusFailed   = "failed"   // could not be carried out now; left for the hub to deliver again
)

// Outcome is what became of one command: the lastCommand reported property.
type Outcome struct {
	MessageID string    `json:"messageId"` // the C2D message id ($.mid); empty when the sender set none
	Command   string    `json:"command"`   // the name, or what the message said it was
	Status    string    `json:"status"`
	Detail    string    `json:"detail,omitempty"` // the result, or why it was rejected or failed
	At        time.Time `json:"at"`               // when the tracker handled it
}

// Override is a telemetry interval set by command, in force over the
// twin's telemetryDelay until Until (zero: until further notice).
type Override struct {
	Seconds   float64   `json:"seconds"`
	Until     time.Time `json:"until,omitzero"`
	MessageID string    `json:"messageId,omitempty"` // the command that set it
}

// Interval is the overriding telemetry interval.
func (o Override) Interval() time.Duration {
	return time.Duration(math.Round(o.Seconds*1000)) * time.Millisecond
}

// Ended says whether the override is over at now.
func (o Override) Ended(now time.Time) bool { return !o.Until.IsZero() && !now.Before(o.Until) }

// MaxHandled bounds the message ids a Record remembers as handled. It is
// above the hub's 50 queued messages per device (docs/protocol.md B.4): a
// whole queue carried out at a reconnect and delivered again after the
// connection dropped before the acknowledgements is recognised entirely.
const MaxHandled = 64

// Record is what the tracker keeps about commands across restarts.
type Record struct {
	Override *Override `json:"override,omitempty"`
	Last     *Outcome  `json:"last,omitempty"`
	// Handled holds the message ids of the last MaxHandled commands done
	// or rejected, oldest first: delivery is at least once, and a message
	// delivered again is acknowledged, not carried out again.
	Handled []string `json:"handled,omitempty"`
}

// WasHandled says whether the command with message id was done or
// rejected already. An empty id (the sender set none) never was.
func (r Record) WasHandled(id string) bool {
	if id == "" {
		return false
	}
	for _, h := range r.Handled {
		if h == id {
			return true
		}
	}
	return false
}

// Remember returns r with out's message id among the handled ones when out
// was done or rejected, the oldest dropped beyond MaxHandled. r's own
// slice is not modified: a record not saved stays as it was.
func (r Record) Remember(out Outcome) Record {
	if out.MessageID == "" || out.Status == StatusFailed || r.WasHandled(out.MessageID) {
		return r
	}
	h := append(append(make([]string, 0, len(r.Handled)+1), r.Handled...), out.MessageID)
	if len(h) > MaxHandled {
		h = h[len(h)-MaxHandled:]
	}
	r.Handled = h
	return r
}

// File keeps a Record in one file, replaced atomically and fsynced on
// every Save, so that a command acknowledged to the hub is on disk.
type File struct{ Path string }

// Load reads the record; a missing file is an empty record.
func (f File) Load() (Record, error) {
	b, err := os.ReadFile(f.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return Record{}, nil
	}
	if err != nil {
		return Record{}, fmt.Errorf("command record: %w", err)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, fmt.Errorf("command record %s: %w", f.Path, err)
	}
	if len(r.Handled) == 0 && r.Last != nil {
		// Written before Handled existed: the last outcome names the one
		// command known to be handled.
		r = r.Remember(*r.Last)
	}
	return r, nil
}

// Save replaces the record on disk.
func (f File) Save(r Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("command record: %w", err)
	}
	if err := atomicfile.WriteFile(f.Path, b, 0o600, true); err != nil {
		return fmt.Errorf("command record: %w", err)
	}
	return nil
}
