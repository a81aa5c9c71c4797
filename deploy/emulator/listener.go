package emulator

import (
	"crypto/tls"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
)

var syscallEADDRINUSE = syscall.EADDRINUSE

// tlsListener is a mochi listener over a socket bound in New, so a taken
// port fails early. It completes the TLS handshake (client certificate
// required) under a deadline before handing the connection to the broker,
// and leaves a deadline for the CONNECT packet that mochi replaces with
// the keep-alive deadline.
//
// Handshakes run through a limiter shared by every listener: when
// thousands of devices connect at once, only a few handshakes hold their
// buffers, keys and parsed certificates at a time and the rest wait as
// bare sockets, in arrival order, instead of all progressing together on
// a few cores and all finishing late. The wait counts toward the
// deadline. Each connection is then served on a goroutine of its own, so
// a handshake's stack growth does not stay with the connection.
type tlsListener struct {
	id         string
	ln         net.Listener
	tlsConfig  *tls.Config
	timeout    time.Duration
	handshakes *limiter
	log        *slog.Logger
	ended      func(net.Conn) // after mochi is done with a connection

	closeOnce sync.Once
	mu        sync.Mutex
	conns     map[net.Conn]struct{}
	closed    bool
}

// track records a live connection; false when the listener is closed.
func (l *tlsListener) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	if l.conns == nil {
		l.conns = map[net.Conn]struct{}{}
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *tlsListener) untrack(c net.Conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

func (l *tlsListener) Init(*slog.Logger) error { return nil }
func (l *tlsListener) ID() string              { return l.id }
func (l *tlsListener) Address() string         { return l.ln.Addr().String() }
func (l *tlsListener) Protocol() string        { return "tcp+tls" }

func (l *tlsListener) Serve(establish listeners.EstablishFn) {
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			return
		}
		if !l.track(conn) {
			_ = conn.Close()
			return
		}
		_ = conn.SetDeadline(time.Now().Add(l.timeout))
		l.handshakes.Go(func() { l.handshake(conn, establish) })
	}
}

// handshake completes the TLS handshake of conn and starts serving it.
func (l *tlsListener) handshake(conn net.Conn, establish listeners.EstablishFn) {
	tc := tls.Server(conn, l.tlsConfig)
	if err := tc.Handshake(); err != nil {
		l.log.Debug("tls handshake failed", "listener", l.id, "remote", conn.RemoteAddr().String(), "err", err)
		_ = tc.Close()
		l.untrack(conn)
		return
	}
	go l.serve(conn, tc, establish)
}

// serve hands a connection to the broker until it ends.
func (l *tlsListener) serve(conn net.Conn, tc *tls.Conn, establish listeners.EstablishFn) {
	defer l.untrack(conn)
	// The deadline stays for reading CONNECT.
	if err := establish(l.id, tc); err != nil {
		l.log.Debug("connection ended", "listener", l.id, "remote", conn.RemoteAddr().String(), "err", err)
	}
	if l.ended != nil {
		l.ended(tc)
	}
}

func (l *tlsListener) Close(closeClients listeners.CloseFn) {
	l.closeOnce.Do(func() {
		_ = l.ln.Close()
		l.mu.Lock()
		l.closed = true
		for c := range l.conns {
			_ = c.Close() // also ends connections still before CONNECT
		}
		l.mu.Unlock()
		// Closing every connection ends every client, so closeClients
		// is not called: in mochi v2.7.9 it reaches
		// Clients.GetByListener, which takes the read lock twice and
		// deadlocks against a concurrent Clients.Delete (a client
		// connecting or leaving while the emulator closes).
		_ = closeClients
	})
}
