package fleet

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/reefer/tracker/deploy/fleetctl/azrest"
	"github.com/reefer/tracker/internal/ctxtime"
)

// Fleet runs operator workflows against one DPS and one hub. Hub may be
// nil for DPS-only work.
type Fleet struct {
	DPS *azrest.DPS
	Hub *azrest.Hub
	// Parallel bounds the requests in flight in bulk work (default 4: the
	// hub's registry throttle is per minute, docs/protocol.md F).
	Parallel int
	// Progress, when set, is told how much of a bulk step is done.
	Progress func(step string, done, total int)
	// Sleep waits before a throttled request is retried (default: a
	// timer honouring ctx).
	Sleep func(ctx context.Context, d time.Duration) error
}

// ItemError is one device a bulk step could not handle.
type ItemError struct {
	ID  string `json:"id"`
	Err string `json:"error"`
}

// Summary is what a bulk step did.
type Summary struct {
	Step   string      `json:"step"`
	Total  int         `json:"total"`
	Done   int         `json:"done"`
	Failed []ItemError `json:"failed,omitempty"`
}

// Err is non-nil when any item failed.
func (s Summary) Err() error {
	if len(s.Failed) == 0 {
		return nil
	}
	return fmt.Errorf("%s: %d of %d failed, first %s: %s", s.Step, len(s.Failed), s.Total, s.Failed[0].ID, s.Failed[0].Err)
}

// ---- enrollment groups ----

// Common is what an operator chooses for any new enrollment, group or
// individual.
type Common struct {
	Hubs             []string // linked hub host names
	AllocationPolicy string   // default static with one hub, else hashed
	InitialDesired   map[string]any
	InitialTags      map[string]any
	Disabled         bool
	// CredentialPolicy names the credential policy that issues the
	// devices' operational certificates (docs/protocol.md A.5); "" for none.
	CredentialPolicy string
}

// enrollment is the azrest form of c with attestation a.
func (c Common) enrollment(a azrest.Attestation) azrest.Enrollment {
	e := azrest.Enrollment{Attestation: a, IoTHubs: c.Hubs, AllocationPolicy: c.AllocationPolicy,
		ProvisioningStatus: azrest.StatusEnabled, CredentialPolicyName: c.CredentialPolicy,
		ReprovisionPolicy: &azrest.ReprovisionPolicy{UpdateHubAssignment: true, MigrateDeviceData: true}}
	if e.AllocationPolicy == "" {
		e.AllocationPolicy = "hashed"
		if len(c.Hubs) == 1 {
			e.AllocationPolicy = "static"
		}
	}
	if c.Disabled {
		e.ProvisioningStatus = azrest.StatusDisabled
	}
	if len(c.InitialDesired) > 0 || len(c.InitialTags) > 0 {
		e.InitialTwin = &azrest.InitialTwin{Tags: c.InitialTags}
		e.InitialTwin.Properties.Desired = c.InitialDesired
	}
	return e
}

// GroupSpec is what an operator chooses for a new enrollment group.
type GroupSpec struct {
	ID string
	// CAName names a verified CA uploaded to the DPS (caReferences), or
	// SigningCertPEM is the root/intermediate itself.
	CAName, SigningCertPEM string
	Common
}

// CreateGroup creates an X.509 enrollment group. PUT creates or replaces,
// so an existing group is refused here (azrest.ErrConflict) to keep
// create a create.
func (f *Fleet) CreateGroup(ctx context.Context, s GroupSpec) (azrest.EnrollmentGroup, error) {
	if (s.CAName == "") == (s.SigningCertPEM == "") {
		return azrest.EnrollmentGroup{}, errors.New("a group needs exactly one of a CA name (caReferences) or a signing certificate")
	}
	get := func() error { _, err := f.DPS.GetGroup(ctx, s.ID); return err }
	if err := f.creatable(ctx, fmt.Sprintf("enrollment group %q", s.ID), get, "use enable/disable, or delete it first", s.CredentialPolicy); err != nil {
		return azrest.EnrollmentGroup{}, err
	}
	x := &azrest.X509Attestation{}
	if s.CAName != "" {
		x.CAReferences = &azrest.X509CAReferences{Primary: s.CAName}
	} else {
		x.SigningCertificates = &azrest.X509Certificates{Primary: &azrest.X509CertificateWithInfo{Certificate: s.SigningCertPEM}}
	}
	g := azrest.EnrollmentGroup{EnrollmentGroupID: s.ID, Enrollment: s.enrollment(azrest.Attestation{Type: azrest.AttestationX509, X509: x})}
	return f.DPS.PutGroup(ctx, g, "")
}

// UpdateGroup reads a group, lets change alter it and writes it back with
// the etag read, so a concurrent change is not overwritten. What the
// service returned and change leaves alone (credentialPolicyName among
// it, azrest.DPSEnrollmentAPIVersion) goes back unchanged.
func (f *Fleet) UpdateGroup(ctx context.Context, id string, change func(*azrest.EnrollmentGroup)) (azrest.EnrollmentGroup, error) {
	g, err := f.DPS.GetGroup(ctx, id)
	if err != nil {
		return g, err
	}
	change(&g)
	return f.DPS.PutGroup(ctx, g, g.ETag)
}

// SetGroupCredentialPolicy names the credential policy of a group ("":
// none), checked as CreateGroup checks it.
func (f *Fleet) SetGroupCredentialPolicy(ctx context.Context, id, policy string) (azrest.EnrollmentGroup, error) {
	if err := f.checkPolicy(ctx, policy); err != nil {
		return azrest.EnrollmentGroup{}, err
	}
	return f.UpdateGroup(ctx, id, func(g *azrest.EnrollmentGroup) { g.CredentialPolicyName = policy })
}

// creatable checks that a create will create: get, the GET of what it
// would write, must answer not found (PUT would otherwise replace it), and
// the credential policy named must pass checkPolicy.
func (f *Fleet) creatable(ctx context.Context, what string, get func() error, hint, policy string) error {
	if err := get(); err == nil {
		return fmt.Errorf("%s: %w (%s)", what, azrest.ErrConflict, hint)
	} else if !errors.Is(err, azrest.ErrNotFound) {
		return err
	}
	return f.checkPolicy(ctx, policy)
}

// ErrNoSuchPolicy: the emulator has no credential policy of that name.
var ErrNoSuchPolicy = errors.New("no such credential policy")

// checkPolicy refuses a credential policy name the service says it does
// not have. Only the emulator can say (its /credentialPolicies routes);
// on Azure the policy is an Azure Device Registry resource the DPS API
// does not show (docs/protocol.md A.5), so any other answer lets the name
// through as given.
func (f *Fleet) checkPolicy(ctx context.Context, name string) error {
	if name == "" {
		return nil
	}
	_, err := f.DPS.GetCredentialPolicy(ctx, name)
	if errors.Is(err, azrest.ErrNotFound) {
		return fmt.Errorf("credential policy %q: %w on this emulator (fleetctl credential-policy create %s, or azemu --credential-policy %s)", name, ErrNoSuchPolicy, name, name)
	}
	return nil
}

// SetGroupStatus enables or disables a group.
func (f *Fleet) SetGroupStatus(ctx context.Context, id, status string) (azrest.EnrollmentGroup, error) {
	return f.UpdateGroup(ctx, id, func(g *azrest.EnrollmentGroup) { g.ProvisioningStatus = status })
}

// ---- one device ----

// DeviceSpec is what an operator chooses for a new individual enrollment.
type DeviceSpec struct {
	ID string // registration id = the leaf certificate's CN
	// LeafPEM is the device's leaf certificate (clientCertificates).
	LeafPEM string
	Common
}

// Enroll creates an X.509 individual enrollment for one device. An
// existing enrollment under the id (a disenrolled device's disabled one,
// say) is refused with azrest.ErrConflict, as CreateGroup does.
func (f *Fleet) Enroll(ctx context.Context, s DeviceSpec) (azrest.IndividualEnrollment, error) {
	if s.LeafPEM == "" {
		return azrest.IndividualEnrollment{}, errors.New("an individual X.509 enrollment needs the device's leaf certificate")
	}
	get := func() error { _, err := f.DPS.GetEnrollment(ctx, s.ID); return err }
	if err := f.creatable(ctx, fmt.Sprintf("individual enrollment %q", s.ID), get, "enrollment reenroll deletes it", s.CredentialPolicy); err != nil {
		return azrest.IndividualEnrollment{}, err
	}
	e := azrest.IndividualEnrollment{RegistrationID: s.ID, Enrollment: s.enrollment(leafAttestation(s.LeafPEM))}
	return f.DPS.PutEnrollment(ctx, e, "")
}

// leafAttestation is the X.509 attestation of one device by its leaf
// certificate (clientCertificates).
func leafAttestation(leafPEM string) azrest.Attestation {
	return azrest.Attestation{Type: azrest.AttestationX509, X509: &azrest.X509Attestation{
		ClientCertificates: &azrest.X509Certificates{Primary: &azrest.X509CertificateWithInfo{Certificate: leafPEM}}}}
}

// disabledEnrollment blocks one device of a group: with its leaf
// certificate an X.509 individual enrollment, without it a symmetric-key
// one under the same registration id; either way disabled, which overrides
// the group (docs/protocol.md C "Blocking one device in a group").
func disabledEnrollment(id, leafPEM string) azrest.IndividualEnrollment {
	e := azrest.IndividualEnrollment{RegistrationID: id, Enrollment: azrest.Enrollment{ProvisioningStatus: azrest.StatusDisabled,
		Attestation: azrest.Attestation{Type: azrest.AttestationSymmetricKey}}}
	if leafPEM != "" {
		e.Attestation = leafAttestation(leafPEM)
	}
	return e
}

// DisenrollResult says what Disenroll changed.
type DisenrollResult struct {
	ID               string `json:"id"`
	Enrollment       string `json:"enrollment"` // "created" or "updated"
	Attestation      string `json:"attestation"`
	IdentityDeleted  bool   `json:"identityDeleted"`
	IdentityNotFound bool   `json:"identityNotFound,omitempty"`
}

// Disenroll blocks one device: a disabled individual enrollment (kept:
// deleting it re-admits the device), then the hub identity deleted,
// because disenrolling in DPS alone leaves the device on the hub (docs/protocol.md C).
func (f *Fleet) Disenroll(ctx context.Context, id, leafPEM string) (DisenrollResult, error) {
	res := DisenrollResult{ID: id, Enrollment: "created"}
	e := disabledEnrollment(id, leafPEM)
	etag := ""
	if old, err := f.DPS.GetEnrollment(ctx, id); err == nil {
		res.Enrollment, etag = "updated", old.ETag
		if leafPEM == "" {
			e = old // keep its attestation, just disable it
			e.ProvisioningStatus = azrest.StatusDisabled
		}
	} else if !errors.Is(err, azrest.ErrNotFound) {
		return res, err
	}
	res.Attestation = e.Attestation.Type
	if _, err := f.DPS.PutEnrollment(ctx, e, etag); err != nil {
		return res, err
	}
	if f.Hub == nil {
		return res, nil
	}
	switch err := f.Hub.DeleteDevice(ctx, id, ""); {
	case err == nil:
		res.IdentityDeleted = true
	case errors.Is(err, azrest.ErrNotFound):
		res.IdentityNotFound = true
	default:
		return res, err
	}
	return res, nil
}

// Reenroll deletes the device's individual enrollment, so its group
// admits it again at its next registration (docs/protocol.md C). A device without
// one is already admitted: deleted is false then.
func (f *Fleet) Reenroll(ctx context.Context, id string) (deleted bool, err error) {
	err = f.DPS.DeleteEnrollment(ctx, id, "")
	if errors.Is(err, azrest.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// ---- a port call: many devices ----

// BulkDisenroll disenrolls every id: disabled symmetric-key individual
// enrollments written by DPS bulk operations (mode update, i.e. create or
// replace; MaxBulk per call), then the hub identities deleted.
func (f *Fleet) BulkDisenroll(ctx context.Context, ids []string) (Summary, Summary, error) {
	es := make([]azrest.IndividualEnrollment, len(ids))
	for i, id := range ids {
		es[i] = disabledEnrollment(id, "")
	}
	dps, err := f.bulk(ctx, "disenroll in DPS", azrest.BulkUpdate, es, false)
	if err != nil || f.Hub == nil {
		return dps, Summary{}, err
	}
	hub, err := f.DeleteIdentities(ctx, ids)
	return dps, hub, err
}

// BulkReenroll deletes the individual enrollments of every id with DPS
// bulk operations (mode delete); ids that have none count as done. The
// schema requires an attestation on every item; the type of the entries
// BulkDisenroll writes is sent.
func (f *Fleet) BulkReenroll(ctx context.Context, ids []string) (Summary, error) {
	es := make([]azrest.IndividualEnrollment, len(ids))
	for i, id := range ids {
		es[i] = azrest.IndividualEnrollment{RegistrationID: id, Enrollment: azrest.Enrollment{Attestation: azrest.Attestation{Type: azrest.AttestationSymmetricKey}}}
	}
	return f.bulk(ctx, "re-enroll in DPS", azrest.BulkDelete, es, true)
}

// bulk runs es through DPS bulk operations of at most MaxBulk items,
// Parallel at a time. A whole call failing fails its items; with
// notFoundOK an item DPS did not have counts as done.
func (f *Fleet) bulk(ctx context.Context, step, mode string, es []azrest.IndividualEnrollment, notFoundOK bool) (Summary, error) {
	var chunks [][]azrest.IndividualEnrollment
	for i := 0; i < len(es); i += azrest.MaxBulk {
		chunks = append(chunks, es[i:min(i+azrest.MaxBulk, len(es))])
	}
	s := Summary{Step: step, Total: len(es)}
	var mu sync.Mutex
	err := f.each(ctx, len(chunks), func(i int) error {
		chunk := chunks[i]
		var res azrest.BulkResult
		err := f.retry(ctx, func() error {
			var err error
			res, err = f.DPS.Bulk(ctx, mode, chunk)
			return err
		})
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			for _, e := range chunk {
				s.Failed = append(s.Failed, ItemError{ID: e.RegistrationID, Err: err.Error()})
			}
		} else {
			failed := 0
			for _, be := range res.Errors {
				if notFoundOK && be.ErrorCode/1000 == 404 {
					continue
				}
				failed++
				s.Failed = append(s.Failed, ItemError{ID: be.RegistrationID, Err: fmt.Sprintf("%d %s", be.ErrorCode, be.ErrorStatus)})
			}
			s.Done += len(chunk) - failed
		}
		f.progress(step, s.Done+len(s.Failed), s.Total)
		return nil
	})
	return s, err
}

// DeleteIdentities deletes the hub identities of ids; ids without one
// count as done (already gone).
func (f *Fleet) DeleteIdentities(ctx context.Context, ids []string) (Summary, error) {
	if f.Hub == nil {
		return Summary{}, errors.New("deleting hub identities needs the hub connection string")
	}
	return f.perItem(ctx, "delete hub identities", ids, func(id string) error {
		err := f.Hub.DeleteDevice(ctx, id, "")
		if errors.Is(err, azrest.ErrNotFound) {
			return nil
		}
		return err
	})
}

// DeleteRegistrations deletes the registration records of ids (the
// cleanup step: deleting a group keeps them, and they count against the
// DPS quota, docs/protocol.md C); ids without one count as done.
func (f *Fleet) DeleteRegistrations(ctx context.Context, ids []string) (Summary, error) {
	return f.perItem(ctx, "delete registration records", ids, func(id string) error {
		err := f.DPS.DeleteRegistration(ctx, id, "")
		if errors.Is(err, azrest.ErrNotFound) {
			return nil
		}
		return err
	})
}

// GroupDevices lists the registration records of a group: its devices.
func (f *Fleet) GroupDevices(ctx context.Context, group string) ([]azrest.RegistrationState, []string, error) {
	recs, err := f.DPS.ListRegistrations(ctx, group)
	ids := make([]string, 0, len(recs))
	for _, r := range recs {
		id := r.DeviceID
		if id == "" {
			id = r.RegistrationID
		}
		ids = append(ids, id)
	}
	return recs, ids, err
}

// UpdateDesired merges desired properties into the twin of every device
// the query's WHERE clause selects (all devices when where is ""), and
// returns the ids it changed.
func (f *Fleet) UpdateDesired(ctx context.Context, where string, desired map[string]any) (Summary, error) {
	twins, err := f.Hub.Query(ctx, where)
	if err != nil {
		return Summary{}, err
	}
	ids := make([]string, len(twins))
	for i, t := range twins {
		ids[i] = t.DeviceID
	}
	return f.perItem(ctx, "update desired properties", ids, func(id string) error {
		_, err := f.Hub.UpdateDesired(ctx, id, desired)
		return err
	})
}

// perItem runs fn for every id, Parallel at a time, retrying throttled
// calls, and sums up.
func (f *Fleet) perItem(ctx context.Context, step string, ids []string, fn func(id string) error) (Summary, error) {
	s := Summary{Step: step, Total: len(ids)}
	var mu sync.Mutex
	err := f.each(ctx, len(ids), func(i int) error {
		err := f.retry(ctx, func() error { return fn(ids[i]) })
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			s.Failed = append(s.Failed, ItemError{ID: ids[i], Err: err.Error()})
		} else {
			s.Done++
		}
		f.progress(step, s.Done+len(s.Failed), s.Total)
		return nil
	})
	return s, err
}

func (f *Fleet) progress(step string, done, total int) {
	if f.Progress != nil {
		f.Progress(step, done, total)
	}
}

// each runs fn(0..n-1) with at most Parallel in flight; the first error
// (only ctx's, by the callers) stops the rest.
func (f *Fleet) each(ctx context.Context, n int, fn func(i int) error) error {
	par := f.Parallel
	if par <= 0 {
		par = 4
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for i := 0; i < n; i++ {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(i); err != nil {
				once.Do(func() { first = err; cancel() })
			}
		}(i)
	}
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// maxRetries bounds the retries of one throttled call.
const maxRetries = 5

// retry calls fn again after a 429, waiting the service's Retry-After (or
// 1, 2, 4 ... s without one).
func (f *Fleet) retry(ctx context.Context, fn func() error) error {
	sleep := f.Sleep
	if sleep == nil {
		sleep = ctxtime.Sleep
	}
	for attempt := 0; ; attempt++ {
		err := fn()
		var ae *azrest.APIError
		if err == nil || attempt == maxRetries || !errors.As(err, &ae) || !errors.Is(err, azrest.ErrThrottled) {
			return err
		}
		wait := ae.RetryAfter
		if wait <= 0 {
			wait = time.Second << attempt
		}
		if err := sleep(ctx, wait); err != nil {
			return err
		}
	}
}
