// Package model is the tracker's IoT Plug and Play model: a DTDL v2
// interface (tracker.json, embedded) describing the telemetry it sends,
// the properties it reports and accepts, and the direct methods it
// answers, and the model id (ID) the tracker announces to DPS and IoT Hub
// so that IoT Central, Azure Digital Twins and IoT Explorer can read it
// without a custom mapping (docs/model.md).
//
// The package also checks the model: Validate is a structural DTDL check
// (the rules the model uses), and CheckTelemetry and CheckReported judge a
// message body or a reported-properties document against it (a writable
// property as the convention's acknowledgement, internal/pnp), so tests
// can hold the model to what the tracker really sends.
package model

import (
	_ "embed"
	"encoding/json"
	"fmt"
)

// ID is the model id (DTMI) of tracker.json: the one place the firmware
// takes it from. A change to the model that breaks its readers needs a new
// version here and in the file. Version 2: the writable properties are
// reported as Plug and Play acknowledgements (version 1 reported the plain
// value; docs/model.md).
const ID = "dtmi:reefer:tracker;2"

//go:embed tracker.json
var document []byte

// JSON returns the model document.
func JSON() []byte { return append([]byte(nil), document...) }

// DPSPayload is the registration payload that announces the model to DPS
// (docs/protocol.md A.3): {"modelId": ID}.
func DPSPayload() json.RawMessage {
	b, _ := json.Marshal(map[string]string{"modelId": ID})
	return b
}

// Load parses the embedded model and validates it.
func Load() (*Interface, error) {
	return Parse(document)
}

// Parse parses a DTDL v2 interface document and validates it.
func Parse(doc []byte) (*Interface, error) {
	var in Interface
	if err := json.Unmarshal(doc, &in); err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	if err := in.Validate(); err != nil {
		return nil, err
	}
	return &in, nil
}
