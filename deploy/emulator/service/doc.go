// Package service is the HTTPS service side of the local DPS + IoT Hub
// emulator: the DPS service REST API (docs/protocol.md D), the IoT Hub registry, twin
// and direct-method API (docs/protocol.md E), CA certificate management, and the
// emulator's own monitoring and cloud-to-device routes. It serves the
// state of a [store.Store] with Azure's request and response shapes, so
// curl and the request shapes of Azure's service SDKs work against it.
//
// # Mounting
//
//	svc, err := service.New(st, service.Config{...})
//	srv := &http.Server{Handler: svc, TLSConfig: ...}
//	...
//	svc.Close() // ends monitoring streams, then srv.Shutdown(ctx)
//
// # Routing
//
// One HTTPS listener serves the DPS and every hub. The target service is
// the host in the SAS token's sr (the DPS host name, or a hub's host name
// as in its connection string HostName=), falling back to the Host header
// when there is no parsable token (which then only picks the error shape).
// So curl users point at the emulator's address and name the service in
// the token:
//
//	TOKEN='SharedAccessSignature sr=hub.localhost&sig=...&se=...&skn=iothubowner'
//	curl --cacert ca.pem -H "Authorization: $TOKEN" \
//	    'https://127.0.0.1:8443/devices/dev-1?api-version=2021-04-12'
//
// A token for the DPS used on a hub path therefore reaches the DPS (and
// gets 404); a token with a hub's sr signed with a DPS key gets 401.
//
// # Authentication
//
// Every request needs "Authorization: SharedAccessSignature
// sr=..&sig=..&se=..&skn=.." (fields in any order). The policy (skn) must
// exist for the target service, sig must equal base64(HMAC-SHA256(
// base64decode(key), urlencode(sr) + "\n" + se)) (compared in constant
// time), se must be in the future, and sr must cover the request's
// host + path per path segment (docs/protocol.md D). Failures answer 401 401002.
// [SASToken] builds tokens.
//
// # Permissions
//
// Each route needs rights of the token's policy; a valid token of a policy
// without them also gets 401 401002 (in the service's error shape). Hub
// policies are the built-in ones ([BuiltinHubPolicies]): iothubowner
// (all), service (ServiceConnect), device (DeviceConnect), registryRead
// (RegistryRead), registryReadWrite (RegistryRead, RegistryWrite). A DPS
// starts with provisioningserviceowner (all of ServiceConfig,
// EnrollmentRead, EnrollmentWrite, RegistrationStatusRead,
// RegistrationStatusWrite). Config.HubPermissions and
// DPSConfig.Permissions give other policies their rights; a policy named
// nowhere has every right of its service.
//
//	RegistryRead             GET /devices, GET /devices/{id}, POST /devices/query
//	RegistryWrite            PUT|DELETE /devices/{id}
//	ServiceConnect           /twins/{id} (read and write), methods, C2D, telemetry
//	DeviceConnect            nothing here (device endpoints only)
//	EnrollmentRead           GET enrollments and groups, query, attestationmechanism
//	EnrollmentWrite          PUT|DELETE enrollments and groups, bulk
//	RegistrationStatusRead   GET /registrations/{id}, POST /registrations/{id}/query
//	RegistrationStatusWrite  DELETE /registrations/{id}
//	ServiceConfig            DPS /certificates
//	all hub rights           hub /certificates (ARM in Azure: owner only)
//	any policy               GET /$emulator
//
// Twins follow Azure's permission table (ServiceConnect "access twins");
// queries need RegistryRead, as observed with a ServiceConnect-only policy
// (MicrosoftLearning/AZ-220-Microsoft-Azure-IoT-Developer#26).
//
// Every request also needs an api-version query parameter from
// [DPSAPIVersions] or [HubAPIVersions]; missing or unknown ones answer 400
// 400001 InvalidProtocolVersion.
//
// Every route that takes If-Match (devices, twins, enrollments, enrollment
// groups, registrations, certificates) reads it with store.ETagMatches:
// * and "*" (the quoted form official SDKs send) match any etag; an etag
// matches with or without quotes or W/, as Azure accepts both; a
// mismatch is 412 412001.
//
// # Errors
//
// DPS errors are ProvisioningServiceErrorDetails
// {"errorCode","trackingId","message","timestampUtc"} with the header
// x-ms-error-code (docs/protocol.md D). Hub errors are {"Message":"<the same JSON as a
// string>","ExceptionMessage":""} with the header iothub-errorcode: <name>,
// the shape current hubs send. The HTTP status is errorCode/1000. Bad JSON
// is 400 400004, bodies over Config.MaxBodyBytes 413 413001, a panic in a
// handler 500 500001 (logged with its stack).
//
// # DPS routes (on the DPS host, docs/protocol.md D)
//
//	PUT|GET|DELETE /enrollmentGroups/{id}               If-Match honoured, 412 on mismatch
//	POST /enrollmentGroups/{id}/attestationmechanism
//	POST /enrollmentGroups/query                       {"query":"*"}; x-ms-max-item-count, x-ms-continuation
//	POST /enrollmentGroups                             bulk: {"enrollmentGroups":[..≤10],"mode":"create|update|updateIfMatchETag|delete"}
//	PUT|GET|DELETE /enrollments/{registrationId}
//	POST /enrollments/{registrationId}/attestationmechanism
//	POST /enrollments/query
//	POST /enrollments                                  bulk: {"enrollments":[..≤10],"mode":...}
//	GET|DELETE /registrations/{registrationId}
//	POST /registrations/{enrollmentGroupId}/query
//
// X.509 certificates in enrollments are PEM or base64 DER (as the az CLI
// sends them), or caReferences naming an uploaded CA.
//
// # Hub routes (on a hub host, docs/protocol.md E)
//
//	PUT|GET|DELETE /devices/{id}                        409001, 412001, 404001
//	GET /devices?top=N
//	POST /devices/query                                 SELECT * FROM devices [WHERE f = v [AND ...]] -> twins; f is deviceId,
//	                                                    status, connectionState, tags.x, properties.desired.x or
//	                                                    properties.reported.x; v a 'string', number, true or false
//	GET|PATCH|PUT /twins/{id}                           desired changes reach a connected device
//	POST /twins/{id}/methods                            via Config.Methods; 404103, 504101
//
// # Emulator routes
//
// On every host (DPS: the DPS's CAs; hub: that hub's CAs), modelled on
// ARM's certificate resources:
//
//	GET    /certificates                               {"value":[...]}
//	PUT    /certificates/{name}                        {"certificate":"<PEM|base64 DER>","isVerified":false}
//	                                                   (or under "properties", or a bare PEM body)
//	GET    /certificates/{name}
//	DELETE /certificates/{name}
//	POST   /certificates/{name}/generateVerificationCode   properties.verificationCode
//	POST   /certificates/{name}/verify                 {"certificate":"<proof PEM>"}: CN = code, signed by the CA key
//	GET    /$emulator                                  host name, id scope, hubs, api-versions
//
// On a hub host, monitoring and cloud-to-device:
//
//	GET  /devices/{id}/messages/events?since=RFC3339&top=N   recent telemetry, strictly after since
//	GET  /messages/events/stream?deviceId=&since=            newline-delimited JSON, one Event per message
//	POST /devices/{id}/messages/deviceBound                  enqueue C2D; 403004 when the queue is full
//
// The telemetry of a deleted identity stays readable (IoT Hub retains
// messages, docs/protocol.md F).
//
// The C2D body is the message; iothub-messageid, iothub-correlationid,
// iothub-userid, iothub-contenttype, iothub-contentencoding, iothub-ttl
// (seconds) and iothub-app-{name} headers set its properties, or, with
// Content-Type [C2DEnvelopeType], the body is a [C2DEnvelope].
package service
