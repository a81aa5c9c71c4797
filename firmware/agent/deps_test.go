package agent_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImports keeps the agent testable without hardware or network: it sees
// drivers, the hub and the queue only through its own interfaces, so none
// of their implementations may be among its dependencies, even indirectly.
func TestImports(t *testing.T) {
	const module = "github.com/reefer/tracker"
	out, err := exec.Command("go", "list", "-deps", module+"/firmware/agent", module+"/firmware/agent/agenttest").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	forbidden := []string{
		module + "/provisioning",
		module + "/deploy",
		module + "/drivers/bme280",
		module + "/drivers/simulated",
		module + "/drivers/choose",
		module + "/drivers/gps",
		module + "/firmware/queue",
		module + "/firmware/cmd",
		"periph.io/x/host",
		"go.etcd.io/bbolt",
		"github.com/eclipse/paho.mqtt.golang",
	}
	deps := strings.Fields(string(out))
	if len(deps) == 0 {
		t.Fatal("go list printed no dependencies")
	}
	for _, dep := range deps {
		for _, bad := range forbidden {
			if dep == bad || strings.HasPrefix(dep, bad+"/") {
				t.Errorf("firmware/agent depends on %s; it must use its own interfaces instead", dep)
			}
		}
	}
}
