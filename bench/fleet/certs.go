package main

import (
	"crypto/tls"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/reefer/tracker/deploy/emulator/pki"
)

// Fleet is an operator PKI (root → intermediate) and n device
// certificates signed by the intermediate, as deploy/certs makes them.
// Issuing is the slow part of setting up a large run, so a Fleet is built
// once and reused across runs.
type Fleet struct {
	Root, Inter *pki.Cert
	IDs         []string
	// Certs are what each device presents: leaf then intermediate (docs/protocol.md C).
	Certs []tls.Certificate
	// Took is how long issuing the n device certificates took.
	Took time.Duration
}

// DeviceID is the registration id (and leaf CN) of device i.
func DeviceID(i int) string { return fmt.Sprintf("reefer-%05d", i) }

// NewFleet issues n ECDSA P-256 device certificates, using every CPU.
func NewFleet(n int) (*Fleet, error) {
	root, err := pki.NewRootCA("Fleet Bench Root CA", pki.Options{})
	if err != nil {
		return nil, err
	}
	inter, err := root.NewIntermediateCA("Fleet Bench Intermediate CA", pki.Options{})
	if err != nil {
		return nil, err
	}
	f := &Fleet{Root: root, Inter: inter, IDs: make([]string, n), Certs: make([]tls.Certificate, n)}
	start := time.Now()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	workers := runtime.GOMAXPROCS(0)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < n; i += workers {
				id := DeviceID(i)
				c, err := inter.NewClient(id, pki.Options{})
				if err != nil {
					mu.Lock()
					first = fmt.Errorf("device certificate %s: %w", id, err)
					mu.Unlock()
					return
				}
				f.IDs[i], f.Certs[i] = id, c.TLS()
			}
		}(w)
	}
	wg.Wait()
	if first != nil {
		return nil, first
	}
	f.Took = time.Since(start)
	return f, nil
}
