package cli

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/reefer/tracker/deploy/fleetctl/azrest"
	"github.com/reefer/tracker/deploy/fleetctl/fleet"
)

// Environment variables for the global options (flags win).
const (
	EnvDPS        = "FLEETCTL_DPS_CONNECTION_STRING"
	EnvHub        = "FLEETCTL_HUB_CONNECTION_STRING"
	EnvServiceURL = "FLEETCTL_SERVICE_URL"
	EnvCAFile     = "FLEETCTL_CA_FILE"
	EnvEmulator   = "FLEETCTL_EMULATOR"
)

// globals are the options every command takes.
type globals struct {
	dps, hub, serviceURL, caFile, emulator string
	output                                 string
	dryRun                                 bool
	timeout                                time.Duration
}

func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.dps, "dps-connection-string", "", "DPS service connection string (env "+EnvDPS+")")
	fs.StringVar(&g.hub, "hub-connection-string", "", "IoT Hub service connection string (env "+EnvHub+")")
	fs.StringVar(&g.serviceURL, "service-url", "", "send requests to this https:// address instead of the connection string's HostName (env "+EnvServiceURL+")")
	fs.StringVar(&g.caFile, "ca-file", "", "trust this PEM CA for the services' TLS, e.g. the emulator's ca.pem (env "+EnvCAFile+")")
	fs.StringVar(&g.emulator, "emulator", "", "azemu's emulator.json: connection strings, address and CA of a local emulator (env "+EnvEmulator+")")
	fs.StringVar(&g.output, "output", "table", "table or json")
	fs.StringVar(&g.output, "o", "table", "shorthand for --output")
	fs.BoolVar(&g.dryRun, "dry-run", false, "print the requests that would change something instead of sending them (reads are still sent)")
	fs.DurationVar(&g.timeout, "timeout", 10*time.Minute, "give up after this long")
}

// fromEnv fills unset options from the environment.
func (g *globals) fromEnv(getenv func(string) string) {
	for _, p := range []struct {
		v   *string
		env string
	}{{&g.dps, EnvDPS}, {&g.hub, EnvHub}, {&g.serviceURL, EnvServiceURL}, {&g.caFile, EnvCAFile}, {&g.emulator, EnvEmulator}} {
		if *p.v == "" {
			*p.v = getenv(p.env)
		}
	}
}

// emulatorInfo is the part of azemu's emulator.json the tool reads.
type emulatorInfo struct {
	DPS struct {
		ConnectionString string `json:"connectionString"`
	} `json:"dps"`
	Hubs []struct {
		ConnectionString string `json:"connectionString"`
	} `json:"hubs"`
	ServiceURL string `json:"serviceUrl"`
	CACertPath string `json:"caCertPath"`
}

// applyEmulator fills what the options leave unset from emulator.json.
func (g *globals) applyEmulator() error {
	if g.emulator == "" {
		return nil
	}
	b, err := os.ReadFile(g.emulator)
	if err != nil {
		return fmt.Errorf("--emulator: %w", err)
	}
	var inf emulatorInfo
	if err := json.Unmarshal(b, &inf); err != nil || inf.ServiceURL == "" {
		return fmt.Errorf("--emulator %s: not an emulator.json written by azemu (%v)", g.emulator, err)
	}
	set := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	set(&g.dps, inf.DPS.ConnectionString)
	if len(inf.Hubs) > 0 {
		set(&g.hub, inf.Hubs[0].ConnectionString)
	}
	set(&g.serviceURL, inf.ServiceURL)
	set(&g.caFile, inf.CACertPath)
	return nil
}

// errNoConnection is returned when a command needs a service the options
// do not name.
var errNoConnection = errors.New("no connection string")

// clients builds the fleet for a command; needDPS/needHub say which
// connection strings must be present.
func (g *globals) clients(needDPS, needHub bool, dryRun io.Writer) (*fleet.Fleet, error) {
	if err := g.applyEmulator(); err != nil {
		return nil, err
	}
	o := azrest.Options{BaseURL: g.serviceURL, DryRun: dryRun}
	if g.caFile != "" {
		pem, err := os.ReadFile(g.caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s: no PEM certificate in it", g.caFile)
		}
		o.HTTP = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, MaxIdleConnsPerHost: 16}}
	}
	f := &fleet.Fleet{}
	if g.dps != "" || needDPS {
		if g.dps == "" {
			return nil, fmt.Errorf("%w for DPS: set --dps-connection-string or %s (az iot dps connection-string show), or --emulator", errNoConnection, EnvDPS)
		}
		cs, err := azrest.ParseConnectionString(g.dps)
		if err != nil {
			return nil, fmt.Errorf("DPS connection string: %w", err)
		}
		if f.DPS, err = azrest.NewDPS(cs, o); err != nil {
			return nil, err
		}
	}
	if g.hub != "" || needHub {
		if g.hub == "" {
			return nil, fmt.Errorf("%w for IoT Hub: set --hub-connection-string or %s (az iot hub connection-string show), or --emulator", errNoConnection, EnvHub)
		}
		cs, err := azrest.ParseConnectionString(g.hub)
		if err != nil {
			return nil, fmt.Errorf("IoT Hub connection string: %w", err)
		}
		if f.Hub, err = azrest.NewHub(cs, o); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// EmulatorFleet is a fleet for the local emulator whose emulator.json is
// at path: its DPS, its first hub, its address and CA, as --emulator
// gives the commands.
func EmulatorFleet(path string) (*fleet.Fleet, error) {
	g := &globals{emulator: path}
	return g.clients(true, true, nil)
}
