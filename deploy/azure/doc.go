// Package azure holds fleet.sh, the operator script for the real Azure side
// of the reference flow (az CLI + OpenSSL). The Go test runs it against a
// fake az that records every call, so the script's commands are checked
// without an Azure account.
package azure
