package gps

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	nmea "github.com/adrianmo/go-nmea"
)

// ErrNoNMEA means a port opened but sent no valid NMEA sentence in time:
// nothing attached, wrong baud rate, or a different device.
var ErrNoNMEA = errors.New("no NMEA sentence")

// Probe reads rc until one sentence with a valid checksum arrives or
// timeout passes. On success it returns that sentence and rc stays open
// for a Receiver. On failure it closes rc (the only way to interrupt a
// blocking serial read) and returns an error wrapping ErrNoNMEA.
func Probe(ctx context.Context, rc io.ReadCloser, timeout time.Duration) (string, error) {
	type result struct {
		line string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		lr := newLineReader(rc, MaxLineLen)
		var p nmea.SentenceParser
		var unsupported *nmea.NotSupportedError
		for {
			line, err := lr.next()
			switch {
			case errors.Is(err, ErrLineTooLong), errors.Is(err, ErrLineCut), errors.Is(err, ErrLineGarbled):
				continue
			case err != nil:
				done <- result{err: err}
				return
			}
			if _, err := p.Parse(line); err == nil || errors.As(err, &unsupported) {
				done <- result{line: line}
				return
			}
		}
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-done:
		if r.err != nil {
			_ = rc.Close()
			return "", fmt.Errorf("%w (read: %w)", ErrNoNMEA, r.err)
		}
		return r.line, nil
	case <-t.C:
		_ = rc.Close()
		<-done
		return "", fmt.Errorf("%w within %s", ErrNoNMEA, timeout)
	case <-ctx.Done():
		_ = rc.Close()
		<-done
		return "", fmt.Errorf("%w: %w", ErrNoNMEA, ctx.Err())
	}
}
