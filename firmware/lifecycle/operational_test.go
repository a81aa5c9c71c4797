package lifecycle

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/reefer/tracker/internal/syncbuf"
	"github.com/reefer/tracker/provisioning/cache"
	"github.com/reefer/tracker/provisioning/certs"
	"github.com/reefer/tracker/provisioning/certs/certstest"
	"github.com/reefer/tracker/provisioning/dps"
	"github.com/reefer/tracker/provisioning/iothub"
	"github.com/reefer/tracker/provisioning/opcert"
)

// issuer plays DPS with certificate issuance and the hub that judges the
// certificate presented, inside a synctest bubble (the wall clock is t0
// plus the bubble's time).
type issuer struct {
	t        *testing.T
	start    time.Time
	root, ca *certstest.Cert
	validity time.Duration

	mu        sync.Mutex
	regErrs   []error // the next registrations' outcomes (nil: issue)
	csrs      []*x509.CertificateRequest
	issued    []string // fingerprints, in order
	presented []string // fingerprints presented to the hub, in order
	refuse    map[string]bool
	names     map[string]string // leaf DER -> its number of issue
	sessions  []*fakeSession
}

func newIssuer(t *testing.T, validity time.Duration) *issuer {
	o := certstest.Options{NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(10000 * time.Hour)}
	root := certstest.Root(t, "Credential Root", o)
	return &issuer{t: t, start: time.Now(), root: root, ca: root.Intermediate(t, "Issuing CA", o), validity: validity, refuse: map[string]bool{}, names: map[string]string{}}
}

func (is *issuer) clock() time.Time { return t0.Add(time.Since(is.start)) }

func (is *issuer) register(_ context.Context, cfg dps.Config) (*dps.Result, error) {
	is.mu.Lock()
	defer is.mu.Unlock()
	if len(is.regErrs) > 0 {
		err := is.regErrs[0]
		is.regErrs = is.regErrs[1:]
		if err != nil {
			return nil, fmt.Errorf("dps register %s: %w", cfg.RegistrationID, err)
		}
	}
	if len(cfg.CSR) == 0 {
		is.t.Error("registration without a CSR")
		return nil, errors.New("no csr")
	}
	csr, err := x509.ParseCertificateRequest(cfg.CSR)
	if err != nil {
		is.t.Errorf("CSR: %v", err)
		return nil, errors.New("bad csr")
	}
	is.csrs = append(is.csrs, csr)
	nb := is.clock().Truncate(time.Second)
	c := is.ca.SignCSR(is.t, cfg.CSR, csr.Subject.CommonName, certstest.Options{NotBefore: nb, NotAfter: nb.Add(is.validity)})
	der := c.Raw
	is.names[string(c.Raw)] = strconv.Itoa(len(is.csrs)) // "1", "2", ... in order of issue
	is.issued = append(is.issued, is.names[string(c.Raw)])
	return &dps.Result{AssignedHub: hubA, DeviceID: cfg.RegistrationID, Status: "assigned",
		IssuedCertificateChain: [][]byte{der, is.ca.Cert.Raw, is.root.Cert.Raw}}, nil
}

// connector presents what HubTLS holds; the hub refuses serials in refuse
// and certificates outside their validity.
func (is *issuer) connector(p *Provisioner) Connector {
	return ConnectorFunc(func(ctx context.Context, a cache.Assignment) (Session, error) {
		cfg := p.HubTLS()
		is.mu.Lock()
		defer is.mu.Unlock()
		if len(cfg.Certificates) == 0 || cfg.Certificates[0].Leaf == nil {
			is.t.Error("hub connection without the operational certificate")
			return nil, iothub.ErrNotAuthorized
		}
		leaf := cfg.Certificates[0].Leaf
		serial := is.names[string(leaf.Raw)]
		is.presented = append(is.presented, serial)
		if is.refuse[serial] || is.clock().After(leaf.NotAfter) {
			return nil, fmt.Errorf("iothub connect: %w", iothub.ErrNotAuthorized)
		}
		s := &fakeSession{done: make(chan struct{}), closed: make(chan struct{})}
		is.sessions = append(is.sessions, s)
		return s, nil
	})
}

func (is *issuer) snapshot() (issued, presented []string) {
	is.mu.Lock()
	defer is.mu.Unlock()
	return append([]string(nil), is.issued...), append([]string(nil), is.presented...)
}

func newOperational(t *testing.T, is *issuer, dir string, logs *syncbuf.Buffer) *Provisioner {
	t.Helper()
	p, err := New(Config{
		Identity:    &certs.Identity{RegistrationID: regID, FingerprintSHA256: fp},
		TLS:         &tls.Config{},
		DPS:         dps.Config{IDScope: "0ne00000A0A", Endpoint: "dps.example:8883"},
		StateDir:    dir,
		BackoffBase: 10 * time.Second,
		BackoffMax:  10 * time.Minute,
		Logger:      slog.New(slog.NewTextHandler(logs, nil)),
		Now:         is.clock,
		Rand:        func() float64 { return 0.5 },
		Register:    is.register,
		Operational: &opcert.Store{Dir: dir, NoSync: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (is *issuer) name(c *x509.Certificate) string {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.names[string(c.Raw)]
}

func serialOf(t *testing.T, is *issuer, s opcert.Store, pending bool) string {
	t.Helper()
	load := s.Current
	if pending {
		load = s.Pending
	}
	id, err := load()
	if errors.Is(err, opcert.ErrNone) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return is.name(id.Leaf)
}

// Issued at the first registration, switched to once the hub took it,
// renewed at two thirds of its life with a new key, the new one used only
// after the old session closed, and made current once the hub took it;
// the cache follows the certificate in use.
func TestOperationalIssueAndRenew(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := newIssuer(t, 90*time.Minute)
		dir := t.TempDir()
		logs := &syncbuf.Buffer{}
		p := newOperational(t, is, dir, logs)
		st := opcert.Store{Dir: dir}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx, is.connector(p)) }()

		synctest.Wait()
		issued, presented := is.snapshot()
		if len(issued) != 1 || len(presented) != 1 || presented[0] != issued[0] {
			t.Fatalf("issued %v, presented %v; want one certificate, used for the hub", issued, presented)
		}
		if cur, pend := serialOf(t, is, st, false), serialOf(t, is, st, true); cur != issued[0] || pend != "" {
			t.Errorf("current %q pending %q; want the accepted one current", cur, pend)
		}
		if s := p.Status(); s.Phase != PhaseConnected || !s.NextRenewal.Equal(is.clock().Truncate(time.Second).Add(time.Hour)) {
			t.Errorf("status %+v; want connected, renewal at two thirds of 90 min", s)
		}

		time.Sleep(59 * time.Minute)
		synctest.Wait()
		if issued, _ := is.snapshot(); len(issued) != 1 {
			t.Fatalf("renewed before two thirds of the lifetime: %v", issued)
		}
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		issued, presented = is.snapshot()
		if len(issued) != 2 || len(presented) != 2 || presented[1] != issued[1] {
			t.Fatalf("issued %v, presented %v; want the renewed certificate presented", issued, presented)
		}
		if cur := serialOf(t, is, st, false); cur != issued[1] {
			t.Errorf("current %q; want the renewed %q", cur, issued[1])
		}
		is.mu.Lock()
		oldSess := is.sessions[0]
		keys := [2]any{is.csrs[0].PublicKey, is.csrs[1].PublicKey}
		is.mu.Unlock()
		select {
		case <-oldSess.closed:
		default:
			t.Error("the old session is still open")
		}
		if keys[0].(interface{ Equal(crypto.PublicKey) bool }).Equal(keys[1]) {
			t.Error("the renewal reused the key")
		}
		cur, err := st.Current()
		if err != nil {
			t.Fatal(err)
		}
		a, err := cache.Load(dir)
		if err != nil || a.CertFingerprintSHA256 != cur.FingerprintSHA256 {
			t.Errorf("cache %+v, %v; want it bound to the current certificate", a, err)
		}
		cancel()
		<-done
		if l := logs.String(); strings.Contains(l, "PRIVATE KEY") || strings.Contains(l, "renewing the operational certificate failed") {
			t.Errorf("log:\n%s", l)
		}
	})
}

// A failed renewal keeps the session on the old certificate, is reported
// and retried after a jittered back-off; the next one succeeds.
func TestOperationalRenewalFailsThenSucceeds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := newIssuer(t, 90*time.Minute)
		is.regErrs = []error{nil, dpsErr(dps.ErrTransient, 0), dpsErr(dps.ErrThrottled, 30*time.Second), nil}
		dir := t.TempDir()
		logs := &syncbuf.Buffer{}
		p := newOperational(t, is, dir, logs)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go p.Run(ctx, is.connector(p))

		time.Sleep(time.Hour + time.Second) // the first renewal is due and fails
		synctest.Wait()
		s := p.Status()
		if s.Phase != PhaseConnected || !strings.Contains(s.RenewalError, "transient") {
			t.Fatalf("status %+v; want still connected with the renewal error", s)
		}
		// Full jitter at 0.5 of BackoffBase: 5 s.
		if want := is.clock().Add(-time.Second).Add(5 * time.Second).Truncate(time.Second); !s.NextRenewal.Truncate(time.Second).Equal(want) {
			t.Errorf("next renewal %v; want %v", s.NextRenewal, want)
		}
		is.mu.Lock()
		oldSess := is.sessions[0]
		is.mu.Unlock()
		select {
		case <-oldSess.closed:
			t.Fatal("a failed renewal closed the session")
		default:
		}
		time.Sleep(5 * time.Second) // throttled: retry-after 30 s wins over the jitter
		synctest.Wait()
		if s := p.Status(); !strings.Contains(s.RenewalError, "throttled") || s.NextRenewal.Sub(is.clock()) < 29*time.Second {
			t.Fatalf("status %+v; want throttled, next try after retry-after", s)
		}
		time.Sleep(31 * time.Second)
		synctest.Wait()
		issued, presented := is.snapshot()
		if len(issued) != 2 || presented[len(presented)-1] != issued[1] {
			t.Fatalf("issued %v presented %v; want the renewal in use", issued, presented)
		}
		if s := p.Status(); s.RenewalError != "" || s.Phase != PhaseConnected {
			t.Errorf("status %+v; want the error cleared", s)
		}
		if n := strings.Count(logs.String(), "renewing the operational certificate failed; keeping the current one"); n != 2 {
			t.Errorf("%d renewal failures logged; want 2:\n%s", n, logs.String())
		}
	})
}

// The hub refuses the renewed certificate: it is discarded and DPS issues
// another, which the hub takes.
func TestOperationalHubRefusesNewCertificate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := newIssuer(t, 90*time.Minute)
		dir := t.TempDir()
		p := newOperational(t, is, dir, &syncbuf.Buffer{})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go p.Run(ctx, is.connector(p))
		synctest.Wait()
		is.mu.Lock()
		is.refuse["2"] = true // the renewal's serial
		is.mu.Unlock()
		time.Sleep(time.Hour + time.Second)
		synctest.Wait()
		issued, presented := is.snapshot()
		if strings.Join(issued, ",") != "1,2,3" || strings.Join(presented, ",") != "1,2,3" {
			t.Fatalf("issued %v presented %v; want 2 refused and 3 issued and used", issued, presented)
		}
		if cur, pend := serialOf(t, is, opcert.Store{Dir: dir}, false), serialOf(t, is, opcert.Store{Dir: dir}, true); cur != "3" || pend != "" {
			t.Errorf("current %q pending %q; want 3 and none", cur, pend)
		}
	})
}

// At start: an expired current certificate makes the tracker ask DPS for
// a new one; a pending one with a cache bound to it (a crash after DPS
// answered, before the hub took it) is tried without DPS and then made
// current; a pending one without its cache costs one registration.
func TestOperationalStart(t *testing.T) {
	for _, tt := range []struct {
		name        string
		setup       func(t *testing.T, is *issuer, p *Provisioner, dir string)
		regs        int
		wantCurrent string
	}{
		{"expired current", func(t *testing.T, is *issuer, p *Provisioner, dir string) {
			issueInto(t, is, p, true)
			time.Sleep(2 * time.Hour) // past its 90 minutes
		}, 2, "2"},
		{"pending with its cache", func(t *testing.T, is *issuer, p *Provisioner, dir string) {
			issueInto(t, is, p, false)
		}, 1, "1"},
		{"pending without its cache", func(t *testing.T, is *issuer, p *Provisioner, dir string) {
			issueInto(t, is, p, false)
			os.Remove(filepath.Join(dir, cache.FileName))
		}, 2, "2"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				is := newIssuer(t, 90*time.Minute)
				dir := t.TempDir()
				tt.setup(t, is, newOperational(t, is, dir, &syncbuf.Buffer{}), dir)
				p := newOperational(t, is, dir, &syncbuf.Buffer{}) // the restarted tracker
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				go p.Run(ctx, is.connector(p))
				synctest.Wait()
				issued, presented := is.snapshot()
				if len(issued) != tt.regs || presented[len(presented)-1] != tt.wantCurrent {
					t.Errorf("issued %v presented %v; want %d registrations, %s presented", issued, presented, tt.regs, tt.wantCurrent)
				}
				if cur := serialOf(t, is, opcert.Store{Dir: dir}, false); cur != tt.wantCurrent {
					t.Errorf("current %q; want %q", cur, tt.wantCurrent)
				}
			})
		})
	}
}

// issueInto registers once with p (no hub): the issued certificate is
// pending with the cache bound to it; promote makes it current.
func issueInto(t *testing.T, is *issuer, p *Provisioner, promote bool) {
	t.Helper()
	if _, err := p.Provision(context.Background()); err != nil {
		t.Fatal(err)
	}
	if promote {
		p.accepted()
	}
}
