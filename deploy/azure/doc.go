// Package azure holds fleet.sh, the operator script for the real Azure side
// of the reference flow: what needs Azure Resource Manager with the az CLI
// (resource group, hub, DPS, link, CA upload with proof of possession,
// teardown) and everything else through fleetctl with the connection
// strings read from az. The Go test runs it against a fake az and a fake
// fleetctl that record every call, and checks every az call against the
// parameters the az CLI documents for that command (azparams_test.go, the
// one table of them).
package azure
