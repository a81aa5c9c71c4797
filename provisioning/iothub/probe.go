package iothub

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// ProbeClientType is the client type a Probe puts in its user name.
const ProbeClientType = "reefer-tracker-probe"

// Probe makes one CONNECT to hub as deviceID with tlsCfg (the device chain
// and the server roots) and disconnects at once: does the hub accept the
// device? A refusal (CONNACK 5 or 4, or a TLS alert, docs/protocol.md B.7) wraps
// ErrNotAuthorized; anything else means the hub was not reached. The wait
// is bounded by ctx.
//
// Unlike a Client, it uses a clean session and subscribes to nothing: a
// probe that subscribed would receive a queued cloud-to-device message and
// complete it (the PUBACK) before the tracker ever saw it (docs/protocol.md B.2, B.4).
// With a clean session nothing arrives until the device subscribes again,
// which the tracker does on every connect.
func Probe(ctx context.Context, hub, deviceID string, tlsCfg *tls.Config) error {
	host, port, err := net.SplitHostPort(hub)
	if err != nil {
		host, port = hub, "8883"
	}
	cfg := tlsCfg.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName = host // SNI and verification use the host alone
	}
	timeout := 30 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	opts := mqtt.NewClientOptions().
		AddBroker("tls://" + net.JoinHostPort(host, port)).
		SetTLSConfig(cfg).
		SetClientID(deviceID). // docs/protocol.md B.1
		SetUsername(Username(hub, deviceID, ProbeClientType, "")).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(timeout)
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		go func() { <-tok.Done(); c.Disconnect(0) }() // a late success must not linger
		return fmt.Errorf("hub %s: %w", hub, ctx.Err())
	}
	if err := tok.Error(); err != nil {
		if kind := classifyConnect(err); kind != nil {
			return fmt.Errorf("hub %s: %w: %w", hub, kind, err)
		}
		return fmt.Errorf("hub %s: %w", hub, err)
	}
	c.Disconnect(100)
	return nil
}
