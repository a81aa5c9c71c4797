package daemon_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/reefer/tracker/deploy/emulator/pki"
	"github.com/reefer/tracker/deploy/emulator/store"
	"github.com/reefer/tracker/firmware/daemon"
)

// A device certificate with 20 days left: the tracker works, and says so
// everywhere an operator looks: a WARN line at start, the reported
// property, getStatus and its doctor check.
func TestCertificateExpiryVisible(t *testing.T) {
	t.Parallel()
	const id = "sensor-thl-031"
	e := startEmu(t)
	f := newFleet(t)
	f.enroll(t, e, nil)
	notAfter := time.Now().Add(20*24*time.Hour + time.Hour).Truncate(time.Second)
	cfg := f.trackerConfigWith(t, e, id, pki.Options{NotAfter: notAfter})
	tr := startTracker(t, cfg, id)
	hub := e.HubHost(0)

	eventually(t, "certificates reported", func() bool {
		c, ok := reported(t, e, id)[daemon.PropCertificates].(map[string]any)
		if !ok {
			return false
		}
		onb, _ := c["onboarding"].(map[string]any)
		_, op := c["operational"]
		return onb["state"] == "warn" && num(onb["daysLeft"]) == 20 && onb["subject"] == id && !op &&
			onb["notAfter"] == notAfter.UTC().Format(time.RFC3339)
	})
	if n := countLines(tr.logs.String(), "level=WARN", `msg="certificate expires soon"`, "certificate=onboarding", "days_left=20"); n != 1 {
		t.Errorf("%d expiry warnings in the log; want 1:\n%s", n, tr.logs.String())
	}

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	res, err := e.InvokeMethod(ctx, hub, id, store.MethodRequest{MethodName: daemon.MethodGetStatus, ResponseTimeoutInSeconds: 10})
	if err != nil || res.Status != 200 {
		t.Fatalf("getStatus = %+v, %v", res, err)
	}
	var ans struct {
		Certificates daemon.Certificates `json:"certificates"`
		Doctor       struct {
			Checks []struct{ Name, Status, Detail string } `json:"checks"`
		} `json:"doctor"`
	}
	if err := json.Unmarshal(res.Payload, &ans); err != nil {
		t.Fatalf("getStatus payload %s: %v", res.Payload, err)
	}
	if c := ans.Certificates.Onboarding; c.DaysLeft != 20 || c.State != "warn" || !c.NotAfter.Equal(notAfter) || ans.Certificates.Operational != nil {
		t.Errorf("getStatus certificates %+v; want onboarding warn with 20 days left, no operational", ans.Certificates)
	}
	found := false
	for _, c := range ans.Doctor.Checks {
		found = found || c.Name == "certificate dates" && c.Status == "WARN" && strings.Contains(c.Detail, "in 20 days")
	}
	if !found {
		t.Errorf("getStatus doctor checks %s; want certificate dates WARN, in 20 days", res.Payload)
	}
}
