package emulator

import (
	"fmt"
	"net/http"

	"github.com/reefer/tracker/deploy/emulator/service"
)

// ServiceAPI is the default Config.ServiceHandler: the SAS-authenticated
// DPS and IoT Hub REST APIs of package service, keyed with this emulator's
// generated policies (see emulator.json; each policy has the rights of
// the built-in Azure policy of its name), with direct methods invoked on
// devices connected to this emulator's hubs.
func ServiceAPI(e *Emulator) http.Handler {
	inf := e.Info()
	hubs := make(map[string]service.Policies, len(inf.Hubs))
	for _, h := range inf.Hubs {
		hubs[h.HostName] = service.Policies(h.Policies)
	}
	svc, err := service.New(e.Store(), service.Config{
		DPS: service.DPSConfig{
			HostName: inf.DPS.ServiceHostName,
			IDScope:  inf.DPS.IDScope,
			Policies: service.Policies(inf.DPS.Policies),
		},
		Hubs:    hubs,
		Methods: e,
		Logger:  e.Logger().With("component", "service"),
		Now:     e.cfg.Now,
	})
	if err != nil {
		// Only a programming error (keys and hosts come from this emulator)
		// gets here; answer every request with it rather than crash.
		e.Logger().Error("service API disabled", "err", err)
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, fmt.Sprintf("service API unavailable: %v", err), http.StatusInternalServerError)
		})
	}
	return svc
}
