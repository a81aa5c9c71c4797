package fleet

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// Registration ids (= device ids of this fleet): alphanumeric plus - . _ :,
// the last character alphanumeric or '-', at most 128 characters (docs/protocol.md C).
var registrationIDRe = regexp.MustCompile(`^[A-Za-z0-9\-._:]*[A-Za-z0-9\-]$`)

// ValidID reports whether id can be a DPS registration id.
func ValidID(id string) bool { return len(id) <= 128 && registrationIDRe.MatchString(id) }

// idColumns name the device column of a CSV with a header row.
var idColumns = []string{"deviceid", "device", "registrationid", "device_id", "registration_id"}

// ReadIDs reads the device ids of a port call from CSV: one row per
// container, the device id in the column headed deviceId (or device,
// registrationId), or without a header in the last column, e.g.
//
//	container,deviceId
//	MSCU1234565,sensor-thl-001
//
// Blank lines and lines starting with # are skipped; a repeated id is kept
// once. Every bad id is reported with its line.
func ReadIDs(r io.Reader) ([]string, error) {
	cr := csv.NewReader(r)
	cr.Comment = '#'
	cr.FieldsPerRecord = -1
	cr.TrimLeadingSpace = true
	col := -1
	seen := map[string]bool{}
	var ids []string
	var errs []error
	for first := true; ; first = false {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("CSV: %w", err)
		}
		line, _ := cr.FieldPos(0)
		if first {
			for i, f := range rec {
				for _, name := range idColumns {
					if strings.EqualFold(strings.TrimSpace(f), name) {
						col = i
					}
				}
			}
			if col >= 0 {
				continue
			}
		}
		i := col
		if i < 0 {
			i = len(rec) - 1
		}
		if i >= len(rec) {
			errs = append(errs, fmt.Errorf("line %d: no device id column", line))
			continue
		}
		id := strings.TrimSpace(rec[i])
		if !ValidID(id) {
			errs = append(errs, fmt.Errorf("line %d: %q is not a valid device id (letters, digits, - . _ :, at most 128)", line, id))
			continue
		}
		if key := strings.ToLower(id); !seen[key] {
			seen[key] = true
			ids = append(ids, id)
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("CSV: %w", errors.Join(errs...))
	}
	if len(ids) == 0 {
		return nil, errors.New("CSV: no device ids")
	}
	return ids, nil
}
