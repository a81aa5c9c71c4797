package store

import (
	"crypto/x509"
	"encoding/base64"
	"regexp"
	"sort"
	"strings"
)

func decodeBase64Loose(s string) ([]byte, error) {
	s = strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == ' ' || r == '\t' {
			return -1
		}
		return r
	}, s)
	if b, err := base64.StdEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.RawStdEncoding.DecodeString(s)
}

// Spec C: registration ID is alphanumeric plus - . _ :, case-insensitive,
// last character alphanumeric or '-', at most 128 characters.
var registrationIDRe = regexp.MustCompile(`^[A-Za-z0-9\-._:]*[A-Za-z0-9\-]$`)

// ValidRegistrationID reports whether id is a valid DPS registration id.
func ValidRegistrationID(id string) bool {
	return len(id) <= 128 && registrationIDRe.MatchString(id)
}

// ---- CA certificates ----

// PutCACertificate uploads (or replaces) a CA certificate for owner
// (DPSOwner or a hub host name). verified marks it "verified on upload"
// (spec C). Replacing the certificate text resets verification.
func (s *Store) PutCACertificate(owner, name, certPEM string, verified bool, ifMatch string) (CACertificate, error) {
	if name == "" {
		return CACertificate{}, ErrInvalid.With("certificate name is required")
	}
	c, err := ParseCertificatePEM(certPEM)
	if err != nil {
		return CACertificate{}, ErrInvalid.With("%v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	dir := s.caDir(owner)
	if dir == "" {
		return CACertificate{}, ErrHubNotFound.With("no such owner %q", owner)
	}
	m := s.cas[owner]
	if m == nil {
		m = map[string]*CACertificate{}
		s.cas[owner] = m
	}
	now := Time{s.now().UTC()}
	old := m[strings.ToLower(name)]
	if ifMatch != "" && ifMatch != "*" {
		if old == nil {
			return CACertificate{}, ErrCANotFound.With("certificate %q not found", name)
		}
		if !ETagMatches(ifMatch, old.ETag) {
			return CACertificate{}, ErrPrecondition.With("etag mismatch for certificate %q", name)
		}
	}
	pemText := EncodeCertificatePEM(c)
	n := &CACertificate{
		Name: name,
		ETag: newBase64ETag(),
		Type: "Microsoft.Devices/provisioningServices/Certificates",
		Properties: CACertificateProperties{
			Subject:          c.Subject.CommonName,
			Expiry:           Time{c.NotAfter.UTC()},
			Thumbprint:       ThumbprintSHA1(c),
			ThumbprintSHA256: ThumbprintSHA256(c),
			IsVerified:       verified,
			Certificate:      pemText,
			Created:          now,
			Updated:          now,
		},
	}
	if owner != DPSOwner {
		n.Type = "Microsoft.Devices/IotHubs/Certificates"
	}
	if old != nil {
		n.Properties.Created = old.Properties.Created
		if old.Properties.Certificate == pemText && old.Properties.IsVerified {
			n.Properties.IsVerified = true
		}
	}
	if err := s.writeJSON(fileJoin(dir, name), n); err != nil {
		return CACertificate{}, ErrInternal.With("%v", err)
	}
	m[strings.ToLower(name)] = n
	return *n, nil
}

func fileJoin(dir, id string) string { return dir + "/" + fileName(strings.ToLower(id)) }

// GetCACertificate returns a CA certificate by name (case-insensitive).
func (s *Store) GetCACertificate(owner, name string) (CACertificate, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	c := s.cas[owner][strings.ToLower(name)]
	if c == nil {
		return CACertificate{}, ErrCANotFound.With("certificate %q not found", name)
	}
	return *c, nil
}

// ListCACertificates returns owner's CA certificates sorted by name.
func (s *Store) ListCACertificates(owner string) []CACertificate {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]CACertificate, 0, len(s.cas[owner]))
	for _, c := range s.cas[owner] {
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool { return strings.ToLower(out[i].Name) < strings.ToLower(out[j].Name) })
	return out
}

// DeleteCACertificate removes a CA certificate.
func (s *Store) DeleteCACertificate(owner, name, ifMatch string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := strings.ToLower(name)
	c := s.cas[owner][key]
	if c == nil {
		return ErrCANotFound.With("certificate %q not found", name)
	}
	if !ETagMatches(ifMatch, c.ETag) {
		return ErrPrecondition.With("etag mismatch for certificate %q", name)
	}
	if err := s.remove(fileJoin(s.caDir(owner), name)); err != nil {
		return ErrInternal.With("%v", err)
	}
	delete(s.cas[owner], key)
	return nil
}

// GenerateVerificationCode issues a proof-of-possession code for a CA
// certificate (spec C, step 1). The returned certificate carries it in
// Properties.VerificationCode.
func (s *Store) GenerateVerificationCode(owner, name, ifMatch string) (CACertificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.cas[owner][strings.ToLower(name)]
	if c == nil {
		return CACertificate{}, ErrCANotFound.With("certificate %q not found", name)
	}
	if !ETagMatches(ifMatch, c.ETag) {
		return CACertificate{}, ErrPrecondition.With("etag mismatch for certificate %q", name)
	}
	n := *c
	n.Properties.VerificationCode = newVerificationCode()
	n.Properties.Updated = Time{s.now().UTC()}
	n.ETag = newBase64ETag()
	if err := s.writeJSON(fileJoin(s.caDir(owner), name), &n); err != nil {
		return CACertificate{}, ErrInternal.With("%v", err)
	}
	s.cas[owner][strings.ToLower(name)] = &n
	return n, nil
}

// VerifyCACertificate checks the proof of possession: proofPEM must have
// subject CN equal to the issued verification code and be signed by the CA's
// key (spec C, steps 2-3). On success the CA is marked verified.
func (s *Store) VerifyCACertificate(owner, name, proofPEM, ifMatch string) (CACertificate, error) {
	proof, err := ParseCertificatePEM(proofPEM)
	if err != nil {
		return CACertificate{}, ErrInvalid.With("%v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.cas[owner][strings.ToLower(name)]
	if c == nil {
		return CACertificate{}, ErrCANotFound.With("certificate %q not found", name)
	}
	if !ETagMatches(ifMatch, c.ETag) {
		return CACertificate{}, ErrPrecondition.With("etag mismatch for certificate %q", name)
	}
	ca, err := ParseCertificatePEM(c.Properties.Certificate)
	if err != nil {
		return CACertificate{}, ErrInternal.With("stored certificate: %v", err)
	}
	if err := checkProofOfPossession(ca, proof, c.Properties.VerificationCode); err != nil {
		return CACertificate{}, err
	}
	n := *c
	n.Properties.IsVerified = true
	n.Properties.VerificationCode = ""
	n.Properties.Updated = Time{s.now().UTC()}
	n.ETag = newBase64ETag()
	if err := s.writeJSON(fileJoin(s.caDir(owner), name), &n); err != nil {
		return CACertificate{}, ErrInternal.With("%v", err)
	}
	s.cas[owner][strings.ToLower(name)] = &n
	return n, nil
}

// verifiedCAs returns the parsed verified CAs of owner. Caller holds mu.
func (s *Store) verifiedCAs(owner string) []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range s.cas[owner] {
		if !c.Properties.IsVerified {
			continue
		}
		if x, err := ParseCertificatePEM(c.Properties.Certificate); err == nil {
			out = append(out, x)
		}
	}
	return out
}

// ---- enrollments ----

// normalizeEnrollmentCommon validates and defaults the fields shared by
// groups and individual enrollments. Caller holds mu.
func (s *Store) normalizeCommon(att *AttestationMechanism, status *string, policy **ReprovisionPolicy, alloc *string, hubHost string, hubs []string) error {
	if *status == "" {
		*status = StatusEnabled
	}
	if *status != StatusEnabled && *status != StatusDisabled {
		return ErrInvalid.With("provisioningStatus must be enabled or disabled, not %q", *status)
	}
	if *policy == nil {
		*policy = &ReprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: true}
	}
	switch *alloc {
	case "":
		*alloc = AllocationHashed
	case AllocationHashed, AllocationStatic, AllocationGeoLatency:
	case AllocationCustom:
		// Kept for round-tripping; registration fails with 400207.
	default:
		return ErrInvalid.With("unknown allocationPolicy %q", *alloc)
	}
	if hubHost != "" && !s.HasHub(hubHost) {
		return ErrInvalid.With("iotHubHostName %q is not a linked hub", hubHost)
	}
	for _, h := range hubs {
		if !s.HasHub(h) {
			return ErrInvalid.With("iotHubs entry %q is not a linked hub", h)
		}
	}
	if *alloc == AllocationStatic && hubHost == "" && len(hubs) != 1 {
		return ErrInvalid.With("static allocation needs iotHubHostName or exactly one iotHubs entry")
	}
	switch att.Type {
	case AttestationX509:
		if att.X509 == nil {
			return ErrInvalid.With("attestation.x509 is required")
		}
	case AttestationSymmetricKey, AttestationTPM, AttestationNone:
	default:
		return ErrInvalid.With("unknown attestation type %q", att.Type)
	}
	return nil
}

// PutEnrollmentGroup creates or updates an enrollment group (spec D). An
// If-Match other than "" or "*" requires the group to exist with that etag.
// The group's X.509 attestation needs signingCertificates or caReferences
// naming an uploaded DPS CA; certificate info is filled in.
func (s *Store) PutEnrollmentGroup(g EnrollmentGroup, ifMatch string) (EnrollmentGroup, error) {
	if g.EnrollmentGroupID == "" {
		return EnrollmentGroup{}, ErrInvalid.With("enrollmentGroupId is required")
	}
	g = cloneGroup(g)
	if g.Attestation.Type == AttestationX509 && g.Attestation.X509 != nil {
		x := g.Attestation.X509
		if x.ClientCertificates != nil {
			return EnrollmentGroup{}, ErrInvalid.With("an enrollment group takes signingCertificates or caReferences, not clientCertificates")
		}
		if x.SigningCertificates == nil && x.CAReferences == nil {
			return EnrollmentGroup{}, ErrInvalid.With("x509 attestation needs signingCertificates or caReferences")
		}
		if x.SigningCertificates != nil {
			if x.SigningCertificates.Primary == nil || x.SigningCertificates.Primary.Certificate == "" {
				return EnrollmentGroup{}, ErrInvalid.With("signingCertificates.primary is required")
			}
			for _, e := range []*X509CertificateWithInfo{x.SigningCertificates.Primary, x.SigningCertificates.Secondary} {
				if _, err := fillInfo(e); err != nil {
					return EnrollmentGroup{}, ErrInvalid.With("%v", err)
				}
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if x := g.Attestation.X509; g.Attestation.Type == AttestationX509 && x != nil && x.CAReferences != nil {
		if x.CAReferences.Primary == "" {
			return EnrollmentGroup{}, ErrInvalid.With("caReferences.primary is required")
		}
		for _, n := range []string{x.CAReferences.Primary, x.CAReferences.Secondary} {
			if n != "" && s.cas[DPSOwner][strings.ToLower(n)] == nil {
				return EnrollmentGroup{}, ErrInvalid.With("CA certificate %q not found", n)
			}
		}
	}
	if err := s.normalizeCommon(&g.Attestation, &g.ProvisioningStatus, &g.ReprovisionPolicy, &g.AllocationPolicy, g.IoTHubHostName, g.IoTHubs); err != nil {
		return EnrollmentGroup{}, err
	}
	key := strings.ToLower(g.EnrollmentGroupID)
	old := s.groups[key]
	if ifMatch != "" && ifMatch != "*" {
		if old == nil {
			return EnrollmentGroup{}, ErrGroupNotFound.With("enrollment group %q not found", g.EnrollmentGroupID)
		}
		if !ETagMatches(ifMatch, old.ETag) {
			return EnrollmentGroup{}, ErrPrecondition.With("etag mismatch for enrollment group %q", g.EnrollmentGroupID)
		}
	}
	now := &Time{s.now().UTC()}
	g.CreatedDateTimeUTC, g.LastUpdatedDateTimeUTC = now, now
	if old != nil {
		g.CreatedDateTimeUTC = old.CreatedDateTimeUTC
	}
	g.ETag = newQuotedETag()
	if err := s.writeJSON(fileJoin(s.path("dps", "enrollmentGroups"), key), &g); err != nil {
		return EnrollmentGroup{}, ErrInternal.With("%v", err)
	}
	s.groups[key] = &g
	return cloneGroup(g), nil
}

// GetEnrollmentGroup returns a group by id (case-insensitive).
func (s *Store) GetEnrollmentGroup(id string) (EnrollmentGroup, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	g := s.groups[strings.ToLower(id)]
	if g == nil {
		return EnrollmentGroup{}, ErrGroupNotFound.With("enrollment group %q not found", id)
	}
	return cloneGroup(*g), nil
}

// ListEnrollmentGroups returns every group sorted by id.
func (s *Store) ListEnrollmentGroups() []EnrollmentGroup {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]EnrollmentGroup, 0, len(s.groups))
	for _, g := range s.groups {
		out = append(out, cloneGroup(*g))
	}
	sort.Slice(out, func(i, j int) bool {
		return strings.ToLower(out[i].EnrollmentGroupID) < strings.ToLower(out[j].EnrollmentGroupID)
	})
	return out
}

// DeleteEnrollmentGroup removes a group. Its registration records stay
// (spec C: "Deleting a group doesn't delete its registration records").
func (s *Store) DeleteEnrollmentGroup(id, ifMatch string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := strings.ToLower(id)
	g := s.groups[key]
	if g == nil {
		return ErrGroupNotFound.With("enrollment group %q not found", id)
	}
	if !ETagMatches(ifMatch, g.ETag) {
		return ErrPrecondition.With("etag mismatch for enrollment group %q", id)
	}
	if err := s.remove(fileJoin(s.path("dps", "enrollmentGroups"), key)); err != nil {
		return ErrInternal.With("%v", err)
	}
	delete(s.groups, key)
	return nil
}

// PutIndividualEnrollment creates or updates an individual enrollment
// (spec D). X.509 attestation uses clientCertificates (the device leaf).
func (s *Store) PutIndividualEnrollment(e IndividualEnrollment, ifMatch string) (IndividualEnrollment, error) {
	if !ValidRegistrationID(e.RegistrationID) {
		return IndividualEnrollment{}, ErrInvalid.With("invalid registrationId %q", e.RegistrationID)
	}
	if e.DeviceID != "" && !ValidDeviceID(e.DeviceID) {
		return IndividualEnrollment{}, ErrInvalid.With("invalid deviceId %q", e.DeviceID)
	}
	e = cloneEnrollment(e)
	e.RegistrationState = nil // read-only
	if e.Attestation.Type == AttestationX509 && e.Attestation.X509 != nil {
		x := e.Attestation.X509
		if x.ClientCertificates == nil || x.ClientCertificates.Primary == nil || x.ClientCertificates.Primary.Certificate == "" {
			// Spec D: individual X.509 uses clientCertificates. CA
			// references on an individual enrollment are accepted by
			// the real service too; we support clientCertificates
			// only, which is what devices use.
			return IndividualEnrollment{}, ErrInvalid.With("x509 individual enrollment needs clientCertificates.primary")
		}
		for _, c := range []*X509CertificateWithInfo{x.ClientCertificates.Primary, x.ClientCertificates.Secondary} {
			if _, err := fillInfo(c); err != nil {
				return IndividualEnrollment{}, ErrInvalid.With("%v", err)
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.normalizeCommon(&e.Attestation, &e.ProvisioningStatus, &e.ReprovisionPolicy, &e.AllocationPolicy, e.IoTHubHostName, e.IoTHubs); err != nil {
		return IndividualEnrollment{}, err
	}
	key := strings.ToLower(e.RegistrationID)
	old := s.enrollments[key]
	if ifMatch != "" && ifMatch != "*" {
		if old == nil {
			return IndividualEnrollment{}, ErrEnrollmentNotFound.With("enrollment %q not found", e.RegistrationID)
		}
		if !ETagMatches(ifMatch, old.ETag) {
			return IndividualEnrollment{}, ErrPrecondition.With("etag mismatch for enrollment %q", e.RegistrationID)
		}
	}
	now := &Time{s.now().UTC()}
	e.CreatedDateTimeUTC, e.LastUpdatedDateTimeUTC = now, now
	if old != nil {
		e.CreatedDateTimeUTC = old.CreatedDateTimeUTC
	}
	e.ETag = newQuotedETag()
	if err := s.writeJSON(fileJoin(s.path("dps", "enrollments"), key), &e); err != nil {
		return IndividualEnrollment{}, ErrInternal.With("%v", err)
	}
	s.enrollments[key] = &e
	return s.withRegState(e), nil
}

// withRegState returns a copy with the read-only registrationState filled
// in. Caller holds mu.
func (s *Store) withRegState(e IndividualEnrollment) IndividualEnrollment {
	e = cloneEnrollment(e)
	if r := s.regs[strings.ToLower(e.RegistrationID)]; r != nil && r.Individual {
		st := r.State
		e.RegistrationState = &st
	}
	return e
}

// GetIndividualEnrollment returns an individual enrollment.
func (s *Store) GetIndividualEnrollment(registrationID string) (IndividualEnrollment, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e := s.enrollments[strings.ToLower(registrationID)]
	if e == nil {
		return IndividualEnrollment{}, ErrEnrollmentNotFound.With("enrollment %q not found", registrationID)
	}
	return s.withRegState(*e), nil
}

// ListIndividualEnrollments returns every individual enrollment sorted by
// registration id.
func (s *Store) ListIndividualEnrollments() []IndividualEnrollment {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]IndividualEnrollment, 0, len(s.enrollments))
	for _, e := range s.enrollments {
		out = append(out, s.withRegState(*e))
	}
	sort.Slice(out, func(i, j int) bool {
		return strings.ToLower(out[i].RegistrationID) < strings.ToLower(out[j].RegistrationID)
	})
	return out
}

// DeleteIndividualEnrollment removes an individual enrollment; the
// registration record stays.
func (s *Store) DeleteIndividualEnrollment(registrationID, ifMatch string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := strings.ToLower(registrationID)
	e := s.enrollments[key]
	if e == nil {
		return ErrEnrollmentNotFound.With("enrollment %q not found", registrationID)
	}
	if !ETagMatches(ifMatch, e.ETag) {
		return ErrPrecondition.With("etag mismatch for enrollment %q", registrationID)
	}
	if err := s.remove(fileJoin(s.path("dps", "enrollments"), key)); err != nil {
		return ErrInternal.With("%v", err)
	}
	delete(s.enrollments, key)
	return nil
}

// ---- registration records ----

// GetRegistration returns a DPS registration record (spec D).
func (s *Store) GetRegistration(registrationID string) (DeviceRegistrationState, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r := s.regs[strings.ToLower(registrationID)]
	if r == nil {
		return DeviceRegistrationState{}, ErrRegistrationMissing.With("registration %q not found", registrationID)
	}
	return r.State, nil
}

// ListRegistrations returns the registration records made through group
// groupID (case-insensitive), or every record when groupID is "".
func (s *Store) ListRegistrations(groupID string) []DeviceRegistrationState {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []DeviceRegistrationState
	for _, r := range s.regs {
		if groupID == "" || (!r.Individual && strings.EqualFold(r.EnrollmentGroupID, groupID)) {
			out = append(out, r.State)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return strings.ToLower(out[i].RegistrationID) < strings.ToLower(out[j].RegistrationID)
	})
	return out
}

// DeleteRegistration removes a registration record. The hub identity is
// left alone (spec C: disenrolling does not deprovision).
func (s *Store) DeleteRegistration(registrationID, ifMatch string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := strings.ToLower(registrationID)
	r := s.regs[key]
	if r == nil {
		return ErrRegistrationMissing.With("registration %q not found", registrationID)
	}
	if !ETagMatches(ifMatch, r.State.ETag) {
		return ErrPrecondition.With("etag mismatch for registration %q", registrationID)
	}
	if err := s.remove(fileJoin(s.path("dps", "registrations"), key)); err != nil {
		return ErrInternal.With("%v", err)
	}
	delete(s.regs, key)
	return nil
}

// ---- deep copies ----

func cloneGroup(g EnrollmentGroup) EnrollmentGroup {
	g.Attestation = cloneAttestation(g.Attestation)
	g.InitialTwin = cloneInitialTwin(g.InitialTwin)
	g.IoTHubs = append([]string(nil), g.IoTHubs...)
	if g.ReprovisionPolicy != nil {
		p := *g.ReprovisionPolicy
		g.ReprovisionPolicy = &p
	}
	if g.Capabilities != nil {
		c := *g.Capabilities
		g.Capabilities = &c
	}
	return g
}

func cloneEnrollment(e IndividualEnrollment) IndividualEnrollment {
	e.Attestation = cloneAttestation(e.Attestation)
	e.InitialTwin = cloneInitialTwin(e.InitialTwin)
	e.IoTHubs = append([]string(nil), e.IoTHubs...)
	e.OptionalDeviceInformation = cloneMap(e.OptionalDeviceInformation)
	if e.ReprovisionPolicy != nil {
		p := *e.ReprovisionPolicy
		e.ReprovisionPolicy = &p
	}
	if e.Capabilities != nil {
		c := *e.Capabilities
		e.Capabilities = &c
	}
	if e.RegistrationState != nil {
		st := *e.RegistrationState
		e.RegistrationState = &st
	}
	return e
}

func cloneCerts(c *X509Certificates) *X509Certificates {
	if c == nil {
		return nil
	}
	out := &X509Certificates{}
	for _, p := range []struct {
		src *X509CertificateWithInfo
		dst **X509CertificateWithInfo
	}{{c.Primary, &out.Primary}, {c.Secondary, &out.Secondary}} {
		if p.src != nil {
			v := *p.src
			if v.Info != nil {
				i := *v.Info
				v.Info = &i
			}
			*p.dst = &v
		}
	}
	return out
}

func cloneAttestation(a AttestationMechanism) AttestationMechanism {
	if a.X509 != nil {
		x := *a.X509
		x.ClientCertificates = cloneCerts(x.ClientCertificates)
		x.SigningCertificates = cloneCerts(x.SigningCertificates)
		if x.CAReferences != nil {
			r := *x.CAReferences
			x.CAReferences = &r
		}
		a.X509 = &x
	}
	return a
}

func cloneInitialTwin(t *InitialTwin) *InitialTwin {
	if t == nil {
		return nil
	}
	return &InitialTwin{Tags: cloneMap(t.Tags), Properties: InitialTwinProperties{Desired: cloneMap(t.Properties.Desired)}}
}

// VerifiedCACertificates returns the parsed verified CA certificates of
// owner (DPSOwner or a hub host name), for chain checks at the hub.
func (s *Store) VerifiedCACertificates(owner string) []*x509.Certificate {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.verifiedCAs(owner)
}
