package store

import (
	"crypto/x509"
	"encoding/json"
	"hash/fnv"
	"slices"
	"sort"
	"strings"
	"time"
)

// RegisterRequest is an X.509 device registration (docs/protocol.md A.3, C).
type RegisterRequest struct {
	// RegistrationID from the request body / user name.
	RegistrationID string
	// Chain is what the device presented in TLS, leaf first.
	Chain []*x509.Certificate
	// Payload is the optional custom payload; it is not interpreted.
	Payload json.RawMessage
	// CSR is the DER certificate signing request of the body's csr, nil
	// without one (docs/protocol.md A.5).
	CSR []byte
}

// Register runs a DPS registration to its terminal state (docs/protocol.md A.4, C) and
// returns the device-facing registration state, whose Status is assigned,
// disabled or failed.
//
// It returns ErrInvalid (400) when the registration id is malformed or does
// not equal the leaf CN, and ErrUnauthorized (401002) when no enrollment
// matches the certificate or the chain does not roll up to a verified CA
// (docs/protocol.md G.2: 401002 assumed).
//
// On assignment the hub identity is created or updated as selfSigned with
// the leaf's SHA-256 thumbprint (docs/protocol.md B.1, G.11), and re-created when it was
// deleted (docs/protocol.md G.13). The initial twin is applied on first assignment and
// on a reset.
//
// With a CSR (docs/protocol.md A.5) the request is refused with
// ErrCSRInvalid or ErrCSRSubject before any enrollment is looked at, and
// with ErrNoCredentialPolicy when the enrollment that assigns the device
// names no existing credential policy. An assignment then carries the
// issued chain and the hub identity becomes certificateAuthority, so the
// hub admits every unexpired certificate issued for the device.
func (s *Store) Register(req RegisterRequest) (DeviceRegistrationResult, error) {
	if len(req.Chain) == 0 {
		return DeviceRegistrationResult{}, ErrUnauthorized.With("no client certificate")
	}
	leaf := req.Chain[0]
	if !ValidRegistrationID(req.RegistrationID) {
		return DeviceRegistrationResult{}, ErrInvalid.With("invalid registration id %q", req.RegistrationID)
	}
	// docs/protocol.md A.1, C: registration id = leaf CN (registration ids are
	// case-insensitive).
	if !strings.EqualFold(leaf.Subject.CommonName, req.RegistrationID) {
		return DeviceRegistrationResult{}, ErrInvalid.With("registration id %q does not match certificate CN %q", req.RegistrationID, leaf.Subject.CommonName)
	}
	var csr *x509.CertificateRequest
	if req.CSR != nil {
		c, err := ParseCSR(req.CSR, req.RegistrationID)
		if err != nil {
			return DeviceRegistrationResult{}, err
		}
		csr = c
	}
	now := s.now().UTC()
	for _, c := range req.Chain {
		if now.Before(c.NotBefore) || now.After(c.NotAfter) {
			return DeviceRegistrationResult{}, ErrUnauthorized.With("certificate %q is not valid now", c.Subject.CommonName)
		}
	}

	s.mu.Lock()
	m, err := s.matchEnrollmentLocked(req.RegistrationID, req.Chain)
	if err != nil {
		s.mu.Unlock()
		return DeviceRegistrationResult{}, err
	}
	res, ev, err := s.assignLocked(req, m, csr, now)
	if err != nil {
		s.mu.Unlock()
		return DeviceRegistrationResult{}, err
	}
	s.unlockAndNotify(ev)
	return res, nil
}

// enrollmentMatch is the entry that decides a registration.
type enrollmentMatch struct {
	individual *IndividualEnrollment
	group      *EnrollmentGroup
	signer     *x509.Certificate // the chain certificate that matched a group
	disabled   bool
}

func (m *enrollmentMatch) common() (status string, policy ReprovisionPolicy, alloc, hubHost string, hubs []string, twin *InitialTwin, caps *DeviceCapabilities) {
	if e := m.individual; e != nil {
		return e.ProvisioningStatus, *e.ReprovisionPolicy, e.AllocationPolicy, e.IoTHubHostName, e.IoTHubs, e.InitialTwin, e.Capabilities
	}
	g := m.group
	return g.ProvisioningStatus, *g.ReprovisionPolicy, g.AllocationPolicy, g.IoTHubHostName, g.IoTHubs, g.InitialTwin, g.Capabilities
}

func certsOf(c *X509Certificates) []*x509.Certificate {
	if c == nil {
		return nil
	}
	var out []*x509.Certificate
	for _, e := range []*X509CertificateWithInfo{c.Primary, c.Secondary} {
		if e == nil || e.Certificate == "" {
			continue
		}
		if x, err := ParseCertificatePEM(e.Certificate); err == nil {
			out = append(out, x)
		}
	}
	return out
}

// groupCerts returns the certificates a group attests with: its signing
// certificates, or the DPS CAs its caReferences name. Caller holds mu.
func (s *Store) groupCerts(g *EnrollmentGroup) []*x509.Certificate {
	x := g.Attestation.X509
	if g.Attestation.Type != AttestationX509 || x == nil {
		return nil
	}
	out := certsOf(x.SigningCertificates)
	if r := x.CAReferences; r != nil {
		for _, n := range []string{r.Primary, r.Secondary} {
			if c := s.cas[DPSOwner][strings.ToLower(n)]; n != "" && c != nil {
				if x, err := ParseCertificatePEM(c.Properties.Certificate); err == nil {
					out = append(out, x)
				}
			}
		}
	}
	return out
}

// matchEnrollmentLocked applies the precedence of docs/protocol.md C. Caller holds mu.
func (s *Store) matchEnrollmentLocked(rid string, presented []*x509.Certificate) (*enrollmentMatch, error) {
	leaf := presented[0]
	// 1. Individual enrollment for the leaf. docs/protocol.md C rule 4: the leaf in
	// any disabled individual entry blocks.
	var ind *IndividualEnrollment
	// A disabled individual enrollment of another attestation type under
	// the same registration id also blocks an X.509 device: the way to
	// disenroll one device of a group without its certificate (docs/protocol.md C
	// "Blocking one device in a group").
	if e := s.enrollments[strings.ToLower(rid)]; e != nil && e.Attestation.Type != AttestationX509 && e.ProvisioningStatus == StatusDisabled {
		return &enrollmentMatch{individual: e, disabled: true}, nil
	}
	for _, e := range s.enrollments {
		if e.Attestation.Type != AttestationX509 || e.Attestation.X509 == nil {
			continue
		}
		for _, c := range certsOf(e.Attestation.X509.ClientCertificates) {
			if !sameCert(c, leaf) {
				continue
			}
			if e.ProvisioningStatus == StatusDisabled {
				return &enrollmentMatch{individual: e, disabled: true}, nil
			}
			if strings.EqualFold(e.RegistrationID, rid) {
				ind = e
			}
		}
	}
	if ind != nil {
		return &enrollmentMatch{individual: ind}, nil
	}

	// 2. Groups, from the first certificate above the leaf to the root.
	chain := s.effectiveChainLocked(presented)
	groups := make([]*EnrollmentGroup, 0, len(s.groups))
	for _, g := range s.groups {
		groups = append(groups, g)
	}
	sort.Slice(groups, func(i, j int) bool {
		return strings.ToLower(groups[i].EnrollmentGroupID) < strings.ToLower(groups[j].EnrollmentGroupID)
	})
	for i := 1; i < len(chain); i++ {
		var found *enrollmentMatch
		for _, g := range groups {
			if !slices.ContainsFunc(s.groupCerts(g), func(c *x509.Certificate) bool { return sameCert(c, chain[i]) }) {
				continue
			}
			if g.ProvisioningStatus == StatusDisabled {
				// docs/protocol.md C rule 4: a disabled entry with this
				// certificate blocks even if another is enabled.
				return &enrollmentMatch{group: g, signer: chain[i], disabled: true}, nil
			}
			if found == nil {
				found = &enrollmentMatch{group: g, signer: chain[i]}
			}
		}
		if found == nil {
			continue
		}
		// docs/protocol.md C: the chain must roll up to a verified certificate.
		verified := s.verifiedCAs(DPSOwner)
		for _, c := range chain[i:] {
			if slices.ContainsFunc(verified, func(v *x509.Certificate) bool { return sameCert(v, c) }) {
				return found, nil
			}
		}
		return nil, ErrUnauthorized.With("CA certificate not found or not verified")
	}
	return nil, ErrUnauthorized.With("Invalid certificate.")
}

// effectiveChainLocked keeps the presented chain as long as each link is
// signed by the next, then extends it upward with certificates the DPS
// knows (group signing certificates and uploaded CAs), because a device may
// omit the root (docs/protocol.md C). Caller holds mu.
func (s *Store) effectiveChainLocked(presented []*x509.Certificate) []*x509.Certificate {
	chain := []*x509.Certificate{presented[0]}
	for i := 1; i < len(presented); i++ {
		if !signedBy(chain[len(chain)-1], presented[i]) {
			break
		}
		chain = append(chain, presented[i])
	}
	var known []*x509.Certificate
	for _, g := range s.groups {
		known = append(known, s.groupCerts(g)...)
	}
	for _, c := range s.cas[DPSOwner] {
		if x, err := ParseCertificatePEM(c.Properties.Certificate); err == nil {
			known = append(known, x)
		}
	}
	for len(chain) < 12 {
		top := chain[len(chain)-1]
		if len(chain) > 1 && signedBy(top, top) {
			break
		}
		var next *x509.Certificate
		for _, k := range known {
			if !sameCert(k, top) && signedBy(top, k) && !slices.ContainsFunc(chain, func(c *x509.Certificate) bool { return sameCert(c, k) }) {
				next = k
				break
			}
		}
		if next == nil {
			break
		}
		chain = append(chain, next)
	}
	return chain
}

// allocate picks the hub (docs/protocol.md C, allocation policy).
func (s *Store) allocate(rid, alloc, hubHost string, hubs []string) (string, *Error) {
	switch alloc {
	case AllocationCustom:
		return "", &Error{Code: 400207, Name: "CustomAllocationFailed", Message: "custom allocation webhooks are not supported by the emulator"}
	case AllocationStatic:
		if hubHost != "" {
			return hubHost, nil
		}
		if len(hubs) == 1 {
			return hubs[0], nil
		}
		return "", &Error{Code: 400208, Name: "IotHubNotSpecified", Message: "static allocation without a hub"}
	}
	cands := hubs
	if len(cands) == 0 && hubHost != "" {
		cands = []string{hubHost}
	}
	if len(cands) == 0 {
		cands = s.hubOrder
	}
	// hashed (and geoLatency, all hubs being equally near): a stable
	// hash of the registration id spreads devices evenly.
	h := fnv.New32a()
	h.Write([]byte(strings.ToLower(rid)))
	return cands[int(h.Sum32()%uint32(len(cands)))], nil
}

// assignLocked decides the outcome for a matched enrollment, updates the
// hub and the registration record. Caller holds mu.
func (s *Store) assignLocked(req RegisterRequest, m *enrollmentMatch, csr *x509.CertificateRequest, now time.Time) (DeviceRegistrationResult, []func(Observer), error) {
	rid := req.RegistrationID
	var policy *policyRecord
	if st, _, _, _, _, _, _ := m.common(); csr != nil && !m.disabled && st != StatusDisabled {
		// Refused before anything changes: the device learns at once
		// that its enrollment cannot issue (docs/protocol.md A.5).
		p, err := s.policyForLocked(m)
		if err != nil {
			return DeviceRegistrationResult{}, nil, err
		}
		policy = p
	}
	var issued []string
	key := strings.ToLower(rid)
	leaf := req.Chain[0]
	old := s.regs[key]
	rec := regRecord{}
	if old != nil {
		rec = *old
		rec.Hubs = append([]string(nil), old.Hubs...)
	}
	ts := &Time{now}
	if rec.State.CreatedDateTimeUTC == nil {
		rec.State.CreatedDateTimeUTC = ts
	}
	rec.State.RegistrationID = rid
	rec.State.LastUpdatedDateTimeUTC = ts
	rec.State.ETag = newBase64ETag()
	rec.State.Payload = nil
	rec.State.ErrorCode, rec.State.ErrorMessage, rec.State.Substatus = 0, "", ""
	rec.X509 = &X509RegistrationResult{CertificateInfo: CertificateInfo(leaf)}
	rec.Individual = m.individual != nil
	rec.EnrollmentGroupID = ""
	if m.group != nil {
		rec.EnrollmentGroupID = m.group.EnrollmentGroupID
		rec.X509.EnrollmentGroupID = m.group.EnrollmentGroupID
		rec.X509.SigningCertificateInfo = CertificateInfo(m.signer)
	}

	var ev []func(Observer)
	status, reprov, alloc, hubHost, hubs, twin, caps := m.common()
	switch {
	case m.disabled || status == StatusDisabled:
		// docs/protocol.md A.4: a disabled enrollment completes with status
		// disabled. The hub identity is left alone (docs/protocol.md C).
		rec.State.Status = RegDisabled
		rec.State.AssignedHub, rec.State.DeviceID = "", ""
	default:
		deviceID := leaf.Subject.CommonName
		if m.individual != nil && m.individual.DeviceID != "" {
			deviceID = m.individual.DeviceID
		}
		var curHub, curID string
		if n := len(rec.Hubs); n > 0 {
			curHub, curID = rec.Hubs[n-1], rec.LastDeviceID
		}
		target, aerr := s.allocate(rid, alloc, hubHost, hubs)
		if curHub != "" && !reprov.UpdateHubAssignment && s.hubs[curHub] != nil {
			target, aerr = curHub, nil // never re-provision: stay put
		}
		if aerr != nil {
			rec.State.Status = RegFailed
			rec.State.ErrorCode, rec.State.ErrorMessage = aerr.Code, aerr.Message
			rec.State.AssignedHub, rec.State.DeviceID = "", ""
			break
		}
		sub := SubInitialAssignment
		reset := false
		var migrate *deviceRecord
		switch {
		case curHub == "":
			reset = true
		case target == curHub:
			if reprov.UpdateHubAssignment && !reprov.MigrateDeviceData {
				sub, reset = SubDataReset, true
			}
		default:
			if reprov.MigrateDeviceData {
				sub = SubDataMigrated
				if h := s.hubs[curHub]; h != nil {
					migrate = h.devices[curID]
				}
			} else {
				sub, reset = SubDataReset, true
			}
			if slices.Contains(rec.Hubs[:len(rec.Hubs)-1], target) {
				sub = SubReprovisioned
			}
		}
		auth := AuthenticationMechanism{Type: AuthCertificateAuthority}
		if policy != nil {
			chain, _, err := s.issueLocked(policy, csr, now)
			if err != nil {
				return DeviceRegistrationResult{}, nil, err
			}
			issued = chain
		} else {
			thumb := ThumbprintSHA256(leaf)
			auth = AuthenticationMechanism{Type: AuthSelfSigned, X509Thumbprint: X509Thumbprint{PrimaryThumbprint: &thumb}}
		}
		e, err := s.provisionIdentityLocked(target, deviceID, auth, caps, twin, reset, migrate)
		if err != nil {
			return DeviceRegistrationResult{}, nil, err
		}
		ev = append(ev, e...)
		if curHub != "" && (curHub != target || curID != deviceID) {
			if h := s.hubs[curHub]; h != nil {
				if r := h.devices[curID]; r != nil {
					e, err := s.deleteDeviceLocked(h, r)
					if err != nil {
						return DeviceRegistrationResult{}, nil, err
					}
					ev = append(ev, e...)
				}
			}
		}
		if curHub != target {
			rec.Hubs = append(rec.Hubs, target)
		}
		rec.LastDeviceID = deviceID
		rec.State.Status = RegAssigned
		rec.State.Substatus = sub
		rec.State.AssignedHub = target
		rec.State.DeviceID = deviceID
	}
	if err := s.writeJSON(fileJoin(s.path("dps", "registrations"), key), &rec); err != nil {
		return DeviceRegistrationResult{}, nil, ErrInternal.With("%v", err)
	}
	s.regs[key] = &rec
	x := *rec.X509
	return DeviceRegistrationResult{X509: &x, DeviceRegistrationState: rec.State, IssuedCertificateChain: issued}, ev, nil
}

// provisionIdentityLocked creates or updates the hub identity for a DPS
// assignment with authentication auth. reset applies the initial twin;
// migrate copies twin and capabilities from the old hub's record. Caller
// holds mu.
func (s *Store) provisionIdentityLocked(hub, deviceID string, auth AuthenticationMechanism, caps *DeviceCapabilities, twin *InitialTwin, reset bool, migrate *deviceRecord) ([]func(Observer), error) {
	h := s.hubs[hub]
	if h == nil {
		return nil, ErrHubNotFound.With("no hub %q", hub)
	}
	old := h.devices[deviceID]
	d := Device{DeviceID: deviceID, Status: StatusEnabled, Authentication: auth}
	if old != nil {
		// Keep the hub's own status: DPS does not re-enable a device
		// an operator disabled in the hub (docs/protocol.md C).
		d.Status = old.Device.Status
		d.StatusReason = old.Device.StatusReason
	} else {
		// docs/protocol.md G.13: a deleted identity is re-created with the
		// initial twin.
		reset = reset || migrate == nil
	}
	if caps != nil {
		d.Capabilities = *caps
	}
	if migrate != nil {
		d.Capabilities = migrate.Device.Capabilities
	}
	ev, _, err := s.putDeviceLocked(h, old, d)
	if err != nil {
		return nil, err
	}
	r := h.devices[deviceID]
	switch {
	case migrate != nil:
		// docs/protocol.md C: migrate copies twin data to the new hub.
		n := *r
		n.Tags = cloneMap(migrate.Tags)
		n.Desired = migrate.Desired.clone()
		n.Reported = migrate.Reported.clone()
		n.TwinVersion = r.TwinVersion + 1
		n.TwinETag = newBase64ETag()
		if err := s.saveDevice(h, &n); err != nil {
			return nil, err
		}
		*r = n
	case reset && (old != nil || twin != nil):
		var tags, desired map[string]any
		if twin != nil {
			tags, desired = normalizeMap(twin.Tags), normalizeMap(twin.Properties.Desired)
		}
		if tags == nil {
			tags = map[string]any{}
		}
		if desired == nil {
			desired = map[string]any{}
		}
		e, err := s.applyTwinLocked(h, r, tags, desired, true)
		if err != nil {
			return nil, err
		}
		if old == nil {
			// Nobody can be connected to a brand-new identity; the
			// notification is noise.
			e = nil
		}
		ev = append(ev, e...)
	}
	return ev, nil
}
