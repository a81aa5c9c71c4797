package store

import (
	"crypto/x509"
	"encoding/base64"
	"maps"
	"regexp"
	"slices"
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

// docs/protocol.md C: registration ID is alphanumeric plus - . _ :, case-insensitive,
// last character alphanumeric or '-', at most 128 characters.
var registrationIDRe = regexp.MustCompile(`^[A-Za-z0-9\-._:]*[A-Za-z0-9\-]$`)

// ValidRegistrationID reports whether id is a valid DPS registration id.
func ValidRegistrationID(id string) bool {
	return len(id) <= 128 && registrationIDRe.MatchString(id)
}

// ---- CA certificates ----

// PutCACertificate uploads (or replaces) a CA certificate for owner
// (DPSOwner or a hub host name). verified marks it "verified on upload"
// (docs/protocol.md C). Replacing the certificate text resets verification.
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
	if !anyETag(ifMatch) {
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
// certificate (docs/protocol.md C, step 1). The returned certificate carries it in
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
// key (docs/protocol.md C, steps 2-3). On success the CA is marked verified.
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

// enrollmentFields points into the fields that enrollment groups and
// individual enrollments share (docs/protocol.md D), so one piece of code validates,
// stamps and stores both.
type enrollmentFields struct {
	att              *AttestationMechanism
	status, alloc    *string
	policy           **ReprovisionPolicy
	hubHost          string
	hubs             []string
	etag             *string
	created, updated **Time
}

func (g *EnrollmentGroup) fields() enrollmentFields {
	return enrollmentFields{&g.Attestation, &g.ProvisioningStatus, &g.AllocationPolicy, &g.ReprovisionPolicy,
		g.IoTHubHostName, g.IoTHubs, &g.ETag, &g.CreatedDateTimeUTC, &g.LastUpdatedDateTimeUTC}
}

func (e *IndividualEnrollment) fields() enrollmentFields {
	return enrollmentFields{&e.Attestation, &e.ProvisioningStatus, &e.AllocationPolicy, &e.ReprovisionPolicy,
		e.IoTHubHostName, e.IoTHubs, &e.ETag, &e.CreatedDateTimeUTC, &e.LastUpdatedDateTimeUTC}
}

// dpsKind describes one kind of persisted DPS entity for the shared
// get/put/delete code: its name in messages, its directory under dps/, its
// not-found error, its map in the store (keyed by lower-case id) and its
// etag.
type dpsKind[T any] struct {
	what     string
	dir      string
	notFound *Error
	entries  func(*Store) map[string]*T
	etag     func(*T) string
}

var (
	groupKind = dpsKind[EnrollmentGroup]{"enrollment group", "enrollmentGroups", ErrGroupNotFound,
		func(s *Store) map[string]*EnrollmentGroup { return s.groups }, func(g *EnrollmentGroup) string { return g.ETag }}
	enrollmentKind = dpsKind[IndividualEnrollment]{"enrollment", "enrollments", ErrEnrollmentNotFound,
		func(s *Store) map[string]*IndividualEnrollment { return s.enrollments }, func(e *IndividualEnrollment) string { return e.ETag }}
	registrationKind = dpsKind[regRecord]{"registration", "registrations", ErrRegistrationMissing,
		func(s *Store) map[string]*regRecord { return s.regs }, func(r *regRecord) string { return r.State.ETag }}
)

// lookup returns the entity with id (case-insensitive). Caller holds mu.
func (k dpsKind[T]) lookup(s *Store, id string) (*T, error) {
	v := k.entries(s)[strings.ToLower(id)]
	if v == nil {
		return nil, k.notFound.With("%s %q not found", k.what, id)
	}
	return v, nil
}

// list returns every entity in id order (case-insensitive). Caller holds
// mu.
func (k dpsKind[T]) list(s *Store) []*T {
	m := k.entries(s)
	out := make([]*T, 0, len(m))
	for _, key := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[key])
	}
	return out
}

// remove deletes the entity with id when ifMatch matches its etag. Caller
// holds mu.
func (k dpsKind[T]) remove(s *Store, id, ifMatch string) error {
	v, err := k.lookup(s, id)
	if err != nil {
		return err
	}
	if !ETagMatches(ifMatch, k.etag(v)) {
		return ErrPrecondition.With("etag mismatch for %s %q", k.what, id)
	}
	key := strings.ToLower(id)
	if err := s.remove(fileJoin(s.path("dps", k.dir), key)); err != nil {
		return ErrInternal.With("%v", err)
	}
	delete(k.entries(s), key)
	return nil
}

// putEnrollment validates the shared fields of v, applies If-Match (other
// than "" or "*" requires an existing entry with that etag), stamps the
// times and a new etag, and stores v. Caller holds mu.
func putEnrollment[T any, P interface {
	*T
	fields() enrollmentFields
}](s *Store, k dpsKind[T], id string, v P, ifMatch string) error {
	f := v.fields()
	if err := s.normalizeCommon(f); err != nil {
		return err
	}
	key := strings.ToLower(id)
	old := P(k.entries(s)[key])
	if !anyETag(ifMatch) {
		if old == nil {
			return k.notFound.With("%s %q not found", k.what, id)
		}
		if !ETagMatches(ifMatch, *old.fields().etag) {
			return ErrPrecondition.With("etag mismatch for %s %q", k.what, id)
		}
	}
	now := &Time{s.now().UTC()}
	*f.created, *f.updated = now, now
	if old != nil {
		*f.created = *old.fields().created
	}
	*f.etag = newQuotedETag()
	if err := s.writeJSON(fileJoin(s.path("dps", k.dir), key), v); err != nil {
		return ErrInternal.With("%v", err)
	}
	k.entries(s)[key] = (*T)(v)
	return nil
}

// normalizeCommon validates and defaults the fields shared by groups and
// individual enrollments. Caller holds mu.
func (s *Store) normalizeCommon(f enrollmentFields) error {
	att, status, policy, alloc, hubHost, hubs := f.att, f.status, f.policy, f.alloc, f.hubHost, f.hubs
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

// fillCertInfo requires a primary certificate (else ErrInvalid with
// missing) and fills in the info of primary and secondary: clients write
// the certificate, the service adds its info (docs/protocol.md D).
func fillCertInfo(c *X509Certificates, missing string) error {
	if c == nil || c.Primary == nil || c.Primary.Certificate == "" {
		return ErrInvalid.With("%s", missing)
	}
	for _, e := range []*X509CertificateWithInfo{c.Primary, c.Secondary} {
		if _, err := fillInfo(e); err != nil {
			return ErrInvalid.With("%v", err)
		}
	}
	return nil
}

// PutEnrollmentGroup creates or updates an enrollment group (docs/protocol.md D). An
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
			if err := fillCertInfo(x.SigningCertificates, "signingCertificates.primary is required"); err != nil {
				return EnrollmentGroup{}, err
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
	if err := putEnrollment(s, groupKind, g.EnrollmentGroupID, &g, ifMatch); err != nil {
		return EnrollmentGroup{}, err
	}
	return cloneGroup(g), nil
}

// GetEnrollmentGroup returns a group by id (case-insensitive).
func (s *Store) GetEnrollmentGroup(id string) (EnrollmentGroup, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	g, err := groupKind.lookup(s, id)
	if err != nil {
		return EnrollmentGroup{}, err
	}
	return cloneGroup(*g), nil
}

// ListEnrollmentGroups returns every group sorted by id.
func (s *Store) ListEnrollmentGroups() []EnrollmentGroup {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]EnrollmentGroup, 0, len(s.groups))
	for _, g := range groupKind.list(s) {
		out = append(out, cloneGroup(*g))
	}
	return out
}

// DeleteEnrollmentGroup removes a group. Its registration records stay
// (docs/protocol.md C: "Deleting a group doesn't delete its registration records").
func (s *Store) DeleteEnrollmentGroup(id, ifMatch string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return groupKind.remove(s, id, ifMatch)
}

// PutIndividualEnrollment creates or updates an individual enrollment
// (docs/protocol.md D). X.509 attestation uses clientCertificates (the device leaf).
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
		// docs/protocol.md D: individual X.509 uses clientCertificates. CA
		// references on an individual enrollment are accepted by the
		// real service too; we support clientCertificates only, which
		// is what devices use.
		if err := fillCertInfo(e.Attestation.X509.ClientCertificates, "x509 individual enrollment needs clientCertificates.primary"); err != nil {
			return IndividualEnrollment{}, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := putEnrollment(s, enrollmentKind, e.RegistrationID, &e, ifMatch); err != nil {
		return IndividualEnrollment{}, err
	}
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
	e, err := enrollmentKind.lookup(s, registrationID)
	if err != nil {
		return IndividualEnrollment{}, err
	}
	return s.withRegState(*e), nil
}

// ListIndividualEnrollments returns every individual enrollment sorted by
// registration id.
func (s *Store) ListIndividualEnrollments() []IndividualEnrollment {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]IndividualEnrollment, 0, len(s.enrollments))
	for _, e := range enrollmentKind.list(s) {
		out = append(out, s.withRegState(*e))
	}
	return out
}

// DeleteIndividualEnrollment removes an individual enrollment; the
// registration record stays.
func (s *Store) DeleteIndividualEnrollment(registrationID, ifMatch string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return enrollmentKind.remove(s, registrationID, ifMatch)
}

// ---- registration records ----

// GetRegistration returns a DPS registration record (docs/protocol.md D).
func (s *Store) GetRegistration(registrationID string) (DeviceRegistrationState, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, err := registrationKind.lookup(s, registrationID)
	if err != nil {
		return DeviceRegistrationState{}, err
	}
	return r.State, nil
}

// ListRegistrations returns the registration records made through group
// groupID (case-insensitive), or every record when groupID is "".
func (s *Store) ListRegistrations(groupID string) []DeviceRegistrationState {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []DeviceRegistrationState
	for _, r := range registrationKind.list(s) {
		if groupID == "" || (!r.Individual && strings.EqualFold(r.EnrollmentGroupID, groupID)) {
			out = append(out, r.State)
		}
	}
	return out
}

// DeleteRegistration removes a registration record. The hub identity is
// left alone (docs/protocol.md C: disenrolling does not deprovision).
func (s *Store) DeleteRegistration(registrationID, ifMatch string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return registrationKind.remove(s, registrationID, ifMatch)
}

// ---- deep copies ----

func cloneGroup(g EnrollmentGroup) EnrollmentGroup {
	g.Attestation = cloneAttestation(g.Attestation)
	g.InitialTwin = cloneInitialTwin(g.InitialTwin)
	g.IoTHubs = append([]string(nil), g.IoTHubs...)
	g.ReprovisionPolicy = copyPtr(g.ReprovisionPolicy)
	g.Capabilities = copyPtr(g.Capabilities)
	return g
}

func cloneEnrollment(e IndividualEnrollment) IndividualEnrollment {
	e.Attestation = cloneAttestation(e.Attestation)
	e.InitialTwin = cloneInitialTwin(e.InitialTwin)
	e.IoTHubs = append([]string(nil), e.IoTHubs...)
	e.OptionalDeviceInformation = cloneMap(e.OptionalDeviceInformation)
	e.ReprovisionPolicy = copyPtr(e.ReprovisionPolicy)
	e.Capabilities = copyPtr(e.Capabilities)
	e.RegistrationState = copyPtr(e.RegistrationState)
	return e
}

// copyPtr returns a pointer to a shallow copy of *p, or nil.
func copyPtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}

func cloneCerts(c *X509Certificates) *X509Certificates {
	if c == nil {
		return nil
	}
	cert := func(p *X509CertificateWithInfo) *X509CertificateWithInfo {
		v := copyPtr(p)
		if v != nil {
			v.Info = copyPtr(v.Info)
		}
		return v
	}
	return &X509Certificates{Primary: cert(c.Primary), Secondary: cert(c.Secondary)}
}

func cloneAttestation(a AttestationMechanism) AttestationMechanism {
	if a.X509 != nil {
		x := *a.X509
		x.ClientCertificates = cloneCerts(x.ClientCertificates)
		x.SigningCertificates = cloneCerts(x.SigningCertificates)
		x.CAReferences = copyPtr(x.CAReferences)
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
