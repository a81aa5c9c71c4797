package service

import (
	"encoding/base64"
	"errors"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/reefer/tracker/deploy/emulator/store"
)

// dpsRoutes registers the DPS service API (docs/protocol.md D).
func (s *Service) dpsRoutes(m *http.ServeMux) {
	m.HandleFunc("GET /$emulator", s.info) // any policy

	// docs/protocol.md D permissions: enrollments and groups need EnrollmentRead or
	// EnrollmentWrite (the attestation mechanism, which can hold keys, is
	// a read), registration records RegistrationStatusRead or
	// RegistrationStatusWrite.
	m.HandleFunc("PUT /enrollmentGroups/{id}", s.need(EnrollmentWrite, s.putGroup))
	m.HandleFunc("GET /enrollmentGroups/{id}", s.need(EnrollmentRead, s.getGroup))
	m.HandleFunc("DELETE /enrollmentGroups/{id}", s.need(EnrollmentWrite, s.deleteGroup))
	m.HandleFunc("POST /enrollmentGroups/{id}/attestationmechanism", s.need(EnrollmentRead, s.groupAttestation))
	m.HandleFunc("POST /enrollmentGroups/query", s.need(EnrollmentRead, s.queryGroups))
	m.HandleFunc("POST /enrollmentGroups", s.need(EnrollmentWrite, s.bulkGroups))

	m.HandleFunc("PUT /enrollments/{id}", s.need(EnrollmentWrite, s.putEnrollment))
	m.HandleFunc("GET /enrollments/{id}", s.need(EnrollmentRead, s.getEnrollment))
	m.HandleFunc("DELETE /enrollments/{id}", s.need(EnrollmentWrite, s.deleteEnrollment))
	m.HandleFunc("POST /enrollments/{id}/attestationmechanism", s.need(EnrollmentRead, s.enrollmentAttestation))
	m.HandleFunc("POST /enrollments/query", s.need(EnrollmentRead, s.queryEnrollments))
	m.HandleFunc("POST /enrollments", s.need(EnrollmentWrite, s.bulkEnrollments))

	m.HandleFunc("GET /registrations/{id}", s.need(RegistrationStatusRead, s.getRegistration))
	m.HandleFunc("DELETE /registrations/{id}", s.need(RegistrationStatusWrite, s.deleteRegistration))
	m.HandleFunc("POST /registrations/{id}/query", s.need(RegistrationStatusRead, s.queryRegistrations))

	m.HandleFunc("/", s.notFound)
}

// ---- enrollment groups ----

func (s *Service) putGroup(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var g store.EnrollmentGroup
	if err := decodeJSON(r, &g); err != nil {
		s.fail(w, r, err)
		return
	}
	if g.EnrollmentGroupID == "" {
		g.EnrollmentGroupID = id
	}
	if !strings.EqualFold(g.EnrollmentGroupID, id) {
		s.fail(w, r, store.ErrInvalid.With("enrollmentGroupId %q in the body does not match %q in the path", g.EnrollmentGroupID, id))
		return
	}
	out, err := s.st.PutEnrollmentGroup(g, r.Header.Get("If-Match"))
	s.reply(w, r, out, out.ETag, err)
}

func (s *Service) getGroup(w http.ResponseWriter, r *http.Request) {
	g, err := s.st.GetEnrollmentGroup(r.PathValue("id"))
	s.reply(w, r, g, g.ETag, err)
}

func (s *Service) deleteGroup(w http.ResponseWriter, r *http.Request) {
	s.replyDeleted(w, r, s.st.DeleteEnrollmentGroup(r.PathValue("id"), r.Header.Get("If-Match")))
}

func (s *Service) groupAttestation(w http.ResponseWriter, r *http.Request) {
	g, err := s.st.GetEnrollmentGroup(r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, g.Attestation)
}

func (s *Service) queryGroups(w http.ResponseWriter, r *http.Request) {
	if err := checkQuery(r, "enrollmentGroups"); err != nil {
		s.fail(w, r, err)
		return
	}
	all := s.st.ListEnrollmentGroups()
	keys := make([]string, len(all))
	for i, g := range all {
		keys[i] = strings.ToLower(g.EnrollmentGroupID)
	}
	s.writePage(w, r, "enrollmentGroup", keys, func(i, j int) any { return all[i:j] })
}

// ---- individual enrollments ----

func (s *Service) putEnrollment(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var e store.IndividualEnrollment
	if err := decodeJSON(r, &e); err != nil {
		s.fail(w, r, err)
		return
	}
	if e.RegistrationID == "" {
		e.RegistrationID = id
	}
	if !strings.EqualFold(e.RegistrationID, id) {
		s.fail(w, r, store.ErrInvalid.With("registrationId %q in the body does not match %q in the path", e.RegistrationID, id))
		return
	}
	out, err := s.st.PutIndividualEnrollment(e, r.Header.Get("If-Match"))
	s.reply(w, r, out, out.ETag, err)
}

func (s *Service) getEnrollment(w http.ResponseWriter, r *http.Request) {
	e, err := s.st.GetIndividualEnrollment(r.PathValue("id"))
	s.reply(w, r, e, e.ETag, err)
}

func (s *Service) deleteEnrollment(w http.ResponseWriter, r *http.Request) {
	s.replyDeleted(w, r, s.st.DeleteIndividualEnrollment(r.PathValue("id"), r.Header.Get("If-Match")))
}

func (s *Service) enrollmentAttestation(w http.ResponseWriter, r *http.Request) {
	e, err := s.st.GetIndividualEnrollment(r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, e.Attestation)
}

func (s *Service) queryEnrollments(w http.ResponseWriter, r *http.Request) {
	if err := checkQuery(r, "enrollments"); err != nil {
		s.fail(w, r, err)
		return
	}
	all := s.st.ListIndividualEnrollments()
	keys := make([]string, len(all))
	for i, e := range all {
		keys[i] = strings.ToLower(e.RegistrationID)
	}
	s.writePage(w, r, "enrollment", keys, func(i, j int) any { return all[i:j] })
}

// ---- registration records ----

func (s *Service) getRegistration(w http.ResponseWriter, r *http.Request) {
	st, err := s.st.GetRegistration(r.PathValue("id"))
	s.reply(w, r, st, st.ETag, err)
}

func (s *Service) deleteRegistration(w http.ResponseWriter, r *http.Request) {
	s.replyDeleted(w, r, s.st.DeleteRegistration(r.PathValue("id"), r.Header.Get("If-Match")))
}

// queryRegistrations lists the records made through a group. The group
// need not exist any more: deleting a group keeps its records (docs/protocol.md C).
func (s *Service) queryRegistrations(w http.ResponseWriter, r *http.Request) {
	if err := checkQuery(r, "enrollmentGroups"); err != nil {
		s.fail(w, r, err)
		return
	}
	all := s.st.ListRegistrations(r.PathValue("id"))
	if all == nil {
		all = []store.DeviceRegistrationState{}
	}
	keys := make([]string, len(all))
	for i, st := range all {
		keys[i] = strings.ToLower(st.RegistrationID)
	}
	s.writePage(w, r, "deviceRegistration", keys, func(i, j int) any { return all[i:j] })
}

// ---- queries and paging ----

// querySpec is the body of the query calls (docs/protocol.md D).
type querySpec struct {
	Query *string `json:"query"`
}

// The emulator answers only "select everything" queries: "*" (what the az
// CLI sends) or "SELECT * FROM <collection>" (what the SDKs send). Query
// bodies are optional for registration queries.
var selectAllRe = regexp.MustCompile(`(?i)^\s*select\s+\*\s+from\s+(\w+)\s*$`)

func checkQuery(r *http.Request, collection string) error {
	b, err := readBody(r)
	if err != nil {
		return err
	}
	if strings.TrimSpace(string(b)) == "" {
		if strings.HasPrefix(r.URL.Path, "/registrations/") {
			return nil
		}
		return store.ErrInvalid.With("a query specification body is required")
	}
	var q querySpec
	if err := jsonUnmarshal(b, &q); err != nil {
		return err
	}
	if q.Query == nil {
		return store.ErrInvalid.With("query is required")
	}
	qs := strings.TrimSpace(*q.Query)
	if qs == "*" || qs == "" {
		return nil
	}
	if m := selectAllRe.FindStringSubmatch(qs); m != nil {
		if strings.EqualFold(m[1], collection) || strings.HasPrefix(r.URL.Path, "/registrations/") {
			return nil
		}
	}
	return store.ErrInvalid.With("unsupported query %q: the emulator supports \"*\" and \"SELECT * FROM %s\"", qs, collection)
}

// writePage answers a query with one page of items, sorted by key.
// x-ms-max-item-count bounds the page; x-ms-continuation is an opaque token
// naming the last key returned, so paging is stable under inserts.
func (s *Service) writePage(w http.ResponseWriter, r *http.Request, itemType string, keys []string, slice func(i, j int) any) {
	start := 0
	if c := r.Header.Get("x-ms-continuation"); c != "" {
		raw, err := base64.RawURLEncoding.DecodeString(c)
		if err != nil || !strings.HasPrefix(string(raw), "after:") {
			s.fail(w, r, store.ErrInvalid.With("invalid x-ms-continuation token"))
			return
		}
		last := strings.TrimPrefix(string(raw), "after:")
		start = sort.SearchStrings(keys, last)
		if start < len(keys) && keys[start] == last {
			start++
		}
	}
	end := len(keys)
	if m := r.Header.Get("x-ms-max-item-count"); m != "" {
		n, err := strconv.Atoi(m)
		if err != nil || n <= 0 {
			s.fail(w, r, store.ErrInvalid.With("invalid x-ms-max-item-count %q", m))
			return
		}
		w.Header().Set("x-ms-max-item-count", strconv.Itoa(n))
		if start+n < end {
			end = start + n
		}
	}
	if end < len(keys) {
		w.Header().Set("x-ms-continuation", base64.RawURLEncoding.EncodeToString([]byte("after:"+keys[end-1])))
	}
	w.Header().Set("x-ms-item-type", itemType)
	writeJSON(w, http.StatusOK, slice(start, end))
}

// ---- bulk operations ----

// Bulk operation modes (docs/protocol.md D).
const (
	bulkCreate      = "create"
	bulkUpdate      = "update"
	bulkUpdateMatch = "updateIfMatchETag"
	bulkDelete      = "delete"
	maxBulkItems    = 10
)

// bulkError is one failed item of a bulk operation.
type bulkError struct {
	EnrollmentGroupID string `json:"enrollmentGroupId,omitempty"`
	RegistrationID    string `json:"registrationId,omitempty"`
	ErrorCode         int    `json:"errorCode"`
	ErrorStatus       string `json:"errorStatus"`
}

// bulkResult is BulkEnrollmentOperationResult / BulkEnrollmentGroupOperationResult.
type bulkResult struct {
	IsSuccessful bool        `json:"isSuccessful"`
	Errors       []bulkError `json:"errors"`
}

// bulkApply runs one item: create refuses an existing id (409), update
// upserts, updateIfMatchETag needs the item's etag to match, delete
// removes (honouring the item's etag).
func bulkApply(mode, etag string, exists bool, put func(ifMatch string) error, del func(ifMatch string) error) error {
	switch mode {
	case bulkCreate:
		if exists {
			return store.ErrConflict.With("already exists")
		}
		return put("")
	case bulkUpdate:
		return put("*")
	case bulkUpdateMatch:
		if etag == "" {
			return store.ErrInvalid.With("updateIfMatchETag needs the item's etag")
		}
		return put(etag)
	case bulkDelete:
		return del(etag)
	}
	return store.ErrInvalid.With("unknown mode %q", mode)
}

func checkBulk(mode string, n int) error {
	switch mode {
	case bulkCreate, bulkUpdate, bulkUpdateMatch, bulkDelete:
	default:
		return store.ErrInvalid.With("mode must be create, update, updateIfMatchETag or delete, not %q", mode)
	}
	if n == 0 || n > maxBulkItems {
		return store.ErrInvalid.With("a bulk operation takes 1 to %d items, not %d", maxBulkItems, n)
	}
	return nil
}

func bulkFailure(err error) (int, string) {
	var e *store.Error
	if errors.As(err, &e) {
		msg := e.Message
		if msg == "" {
			msg = e.Name
		}
		return e.Code, msg
	}
	return store.ErrInternal.Code, err.Error()
}

// bulkGroups is POST /enrollmentGroups with
// {"enrollmentGroups":[...],"mode":...} (docs/protocol.md D).
func (s *Service) bulkGroups(w http.ResponseWriter, r *http.Request) {
	var req struct {
		EnrollmentGroups []store.EnrollmentGroup `json:"enrollmentGroups"`
		Mode             string                  `json:"mode"`
	}
	if err := decodeJSON(r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := checkBulk(req.Mode, len(req.EnrollmentGroups)); err != nil {
		s.fail(w, r, err)
		return
	}
	res := bulkResult{IsSuccessful: true, Errors: []bulkError{}}
	for _, g := range req.EnrollmentGroups {
		_, gerr := s.st.GetEnrollmentGroup(g.EnrollmentGroupID)
		err := bulkApply(req.Mode, g.ETag, gerr == nil,
			func(ifMatch string) error { _, err := s.st.PutEnrollmentGroup(g, ifMatch); return err },
			func(ifMatch string) error { return s.st.DeleteEnrollmentGroup(g.EnrollmentGroupID, ifMatch) })
		if err != nil {
			code, msg := bulkFailure(err)
			res.IsSuccessful = false
			res.Errors = append(res.Errors, bulkError{EnrollmentGroupID: g.EnrollmentGroupID, ErrorCode: code, ErrorStatus: msg})
		}
	}
	writeJSON(w, http.StatusOK, res)
}

// bulkEnrollments is POST /enrollments with {"enrollments":[...],"mode":...}.
func (s *Service) bulkEnrollments(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Enrollments []store.IndividualEnrollment `json:"enrollments"`
		Mode        string                       `json:"mode"`
	}
	if err := decodeJSON(r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := checkBulk(req.Mode, len(req.Enrollments)); err != nil {
		s.fail(w, r, err)
		return
	}
	res := bulkResult{IsSuccessful: true, Errors: []bulkError{}}
	for _, e := range req.Enrollments {
		_, gerr := s.st.GetIndividualEnrollment(e.RegistrationID)
		err := bulkApply(req.Mode, e.ETag, gerr == nil,
			func(ifMatch string) error { _, err := s.st.PutIndividualEnrollment(e, ifMatch); return err },
			func(ifMatch string) error { return s.st.DeleteIndividualEnrollment(e.RegistrationID, ifMatch) })
		if err != nil {
			code, msg := bulkFailure(err)
			res.IsSuccessful = false
			res.Errors = append(res.Errors, bulkError{RegistrationID: e.RegistrationID, ErrorCode: code, ErrorStatus: msg})
		}
	}
	writeJSON(w, http.StatusOK, res)
}
