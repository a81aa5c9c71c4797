package gps

import "time"

// Stats are the receiver's counters, for `tracker doctor` and metrics.
type Stats struct {
	// Sentences counts lines with a good checksum that parsed, of any
	// type (GSV and friends included: they prove the link is alive).
	Sentences uint64 `json:"sentences"`
	// Bad counts dropped lines: bad checksum, unparsable, garbled,
	// over-long or cut short.
	Bad uint64 `json:"bad"`
	// TooLong counts the over-long lines among Bad.
	TooLong uint64 `json:"too_long"`
	// LastSentence is the local time of the last good sentence.
	LastSentence time.Time `json:"last_sentence"`
	// Opens counts successful port opens; more than one means the port
	// went away and came back.
	Opens uint64 `json:"opens"`
	// OpenFailures counts failed attempts to open the port.
	OpenFailures uint64 `json:"open_failures"`
	// Connected says whether the port is open now.
	Connected bool `json:"connected"`
	// OpenedAt is the local time the port was last opened.
	OpenedAt time.Time `json:"opened_at,omitzero"`
	// LastError is the last open or read error, empty if none yet.
	LastError string `json:"last_error,omitempty"`
}
