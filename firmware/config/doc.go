// Package config loads the tracker's one configuration file,
// /etc/tracker/tracker.json by default (see example.json beside this file).
//
// The file is JSON with a required "version": 1 (so a later format can be
// told apart), and unknown keys are rejected: a typo must not silently fall
// back to a default on a device at sea. Every error names the key and says
// what would fix it, for the technician reading `journalctl -u tracker`:
//
//	config /etc/tracker/tracker.json: key "telemetryDelay": must be between 1 and 3600 seconds, got 0
//
// A missing file is ErrNoConfig. The tracker exits with EX_CONFIG (78) on any
// config error, and the unit's RestartPreventExitStatus=78 stops systemd from
// restarting it in a loop.
//
// # Keys
//
// Keys are case-sensitive. Omitted keys take the default.
//
//	key                          default                                      meaning
//	"version"                    (required)                                   must be 1
//	"idScope"                    (required)                                   DPS ID scope, e.g. "0ne00000A0A"
//	"dpsEndpoint"                "global.azure-devices-provisioning.net:8883" DPS host:port
//	"certFile"                   (required)                                   device certificate chain, PEM (leaf first, then intermediates)
//	"keyFile"                    (required)                                   device private key, PEM (mode 0600)
//	"caFile"                     "" (Azure's roots)                           trust roots, PEM; when set it replaces the built-in Azure roots
//	"stateDir"                   "/var/lib/tracker"                           queue and cached DPS assignment
//	"sensors.env.mode"           "auto"                                       BME280: "hardware", "simulated", or "auto" (hardware if found)
//	"sensors.env.bus"            "" (first bus)                               I2C bus name or number, e.g. "1" for /dev/i2c-1
//	"sensors.env.address"        0                                            BME280 I2C address: 0 probes 0x76 then 0x77; or 118 (0x76), 119 (0x77)
//	"sensors.gps.mode"           "auto"                                       GPS: "hardware", "simulated", or "auto"
//	"sensors.gps.port"           "/dev/serial0"                               GPS serial device
//	"sensors.gps.baud"           9600                                         GPS baud rate
//	"telemetryDelay"             10                                           seconds between readings, 1..3600; the twin's desired telemetryDelay overrides it
//	"temperatureAlertThreshold"  30                                           °C above which temperatureAlert is "true"; the twin overrides it
//	"temperatureAlertHysteresis" 1                                            °C below the threshold the temperature must fall to clear the alert, 0..10; the twin overrides it
//	"temperatureAlertMinDuration" 60                                          seconds past the mark before the alert is raised or cleared, 0..3600; the twin overrides it
//	"queue.maxMessages"          100000                                       most readings kept while offline (oldest dropped first)
//	"queue.maxBytes"             67108864 (64 MiB)                            most bytes kept while offline
//	"reprovisionRetry.min"       5                                            minutes before retrying DPS after "disabled" or unauthorized (or a duration string, "20s"; at least 1 s)
//	"reprovisionRetry.max"       60                                           cap in minutes of that retry's exponential backoff (or a duration string)
//	"certificateIssuance.enabled" false                                       true: DPS issues the hub certificate for a key made on the device (docs/protocol.md A.5); certFile/keyFile then serve DPS only
//	"certificateIssuance.renewAt" 0.667 (two thirds)                          fraction of the issued certificate's lifetime after which it is renewed, 0.1..0.95
//	"logLevel"                   "info"                                       "debug", "info", "warn" or "error"
//
// # Issued certificates
//
// With certificateIssuance.enabled, every DPS registration carries a
// certificate signing request (CN = the registration id) for an ECDSA
// P-256 key the tracker generates; the enrollment must name a credential
// policy. Key and issued chain are kept together in stateDir as
// operational.pem (mode 0600, written atomically); a renewed one waits as
// operational-next.pem until the hub accepts it. The key is never logged
// or sent. Leave it off (the default) for trackers whose certificate is
// installed with deploy/certs: nothing changes for them.
//
// # Overrides
//
// The few settings a technician changes on site can be overridden without
// editing the file, by environment (systemd's EnvironmentFile) or by flags
// (the FLAGS variable in /etc/default/tracker). Precedence: flags over
// environment over file over defaults. An empty variable is ignored.
//
//	key                    environment                  flag
//	idScope                TRACKER_ID_SCOPE             --id-scope
//	dpsEndpoint            TRACKER_DPS_ENDPOINT         --dps-endpoint
//	certFile               TRACKER_CERT_FILE            --cert
//	keyFile                TRACKER_KEY_FILE             --key
//	caFile                 TRACKER_CA_FILE              --ca
//	stateDir               TRACKER_STATE_DIR            --state-dir
//	sensors.env.mode       TRACKER_ENV_MODE             --env-mode
//	sensors.env.bus        TRACKER_ENV_BUS              --env-bus
//	sensors.env.address    TRACKER_ENV_ADDRESS          --env-address (decimal or 0x76)
//	sensors.gps.mode       TRACKER_GPS_MODE             --gps-mode
//	sensors.gps.port       TRACKER_GPS_PORT             --gps-port
//	sensors.gps.baud       TRACKER_GPS_BAUD             --gps-baud
//	telemetryDelay         TRACKER_TELEMETRY_DELAY      --telemetry-delay (seconds)
//	queue.maxMessages      TRACKER_QUEUE_MAX_MESSAGES   --queue-max-messages
//	queue.maxBytes         TRACKER_QUEUE_MAX_BYTES      --queue-max-bytes
//	logLevel               TRACKER_LOG_LEVEL            --log-level
//
// Errors about an overridden value name where it came from:
//
//	config /etc/tracker/tracker.json: key "telemetryDelay" (set by env TRACKER_TELEMETRY_DELAY): must be between 1 and 3600 seconds, got 0
//
// Typical use in main:
//
//	var ov config.Overrides
//	ov.RegisterFlags(fs)
//	fs.Parse(args)
//	cfg, err := config.Load(*path, os.Getenv, ov) // exit 78 on error
package config
