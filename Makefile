# Container tracker firmware. `make help` lists the targets.
#
#   make                          build bin/tracker-<os>-<arch> for this machine
#   make GOARCH=arm64             cross-build for 64-bit Raspberry Pi OS
#   make GOARCH=arm GOARM=7       cross-build for 32-bit (armv7) boards
#
# Binaries are static (CGO off), built with -trimpath and stamped with the
# version from git (and the toolchain's VCS revision: `tracker version`).

.DEFAULT_GOAL := build

GO      ?= go
GOOS    ?= linux
GOARCH  ?= $(shell $(GO) env GOARCH)
GOARM   ?= 7
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

# arm binaries carry their GOARM level in the name: tracker-linux-armv7.
ARCH    := $(GOARCH)$(if $(filter arm,$(GOARCH)),v$(GOARM))
BIN     := bin/tracker-$(GOOS)-$(ARCH)
LDFLAGS := -s -w -X main.version=$(VERSION)
GOBUILD := CGO_ENABLED=0 GOOS=$(GOOS) GOARCH=$(GOARCH) GOARM=$(GOARM) $(GO) build -trimpath -buildvcs=auto -ldflags '$(LDFLAGS)'

.PHONY: build
build: ## build the tracker binary for GOOS/GOARCH (default: this machine)
	$(GOBUILD) -o $(BIN) ./firmware/cmd/tracker
	@echo "built $(BIN)"

.PHONY: emulator
emulator: ## build the local DPS + IoT Hub emulator (bin/azemu) for this machine
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/azemu ./deploy/emulator/cmd/azemu
	@echo "built bin/azemu"

.PHONY: fleetctl
fleetctl: ## build the operator tool (bin/fleetctl), static, for this machine
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w' -o bin/fleetctl ./deploy/fleetctl
	@echo "built bin/fleetctl"

# The host's own binary, for what must run here (the man page is made from
# the tracker's -h text, whatever GOARCH the package is for).
HOSTARCH := $(shell $(GO) env GOHOSTARCH)
DEB_VERSION ?=

.PHONY: deb
deb: build ## Debian package dist/tracker_<version>_<arch>.deb for GOARCH (host, arm64, arm GOARM=7 = armhf)
	@$(MAKE) --no-print-directory build GOARCH=$(HOSTARCH) >/dev/null
	GOOS= GOARCH= GOARM= $(GO) -C deploy/deb run . --root '$(CURDIR)' --binary '$(CURDIR)/$(BIN)' \
		--help-from '$(CURDIR)/bin/tracker-linux-$(HOSTARCH)' --goarch $(GOARCH) --goarm $(GOARM) \
		--describe '$(VERSION)' $(if $(DEB_VERSION),--version '$(DEB_VERSION)') --out '$(CURDIR)/dist'

.PHONY: lint-deb
lint-deb: ## test the package builder, build the package for GOARCH, run lintian on it (apt-get install lintian)
	GOOS= GOARCH= GOARM= $(GO) -C deploy/deb vet ./...
	GOOS= GOARCH= GOARM= $(GO) -C deploy/deb test -count=1 ./...
	lintian --fail-on error,warning --info "$$($(MAKE) -s --no-print-directory deb | tail -n 1)"

.PHONY: test-systemd
test-systemd: ## as root: the package under a live systemd (nspawn-booted Debian 12), the 8 checks of the README
	@old=$$($(MAKE) -s --no-print-directory deb | tail -n 1) && \
	new=$$($(MAKE) -s --no-print-directory deb VERSION='$(VERSION)-upgrade' \
		DEB_VERSION="$$(basename "$$old" | cut -d_ -f2)+upgrade" | tail -n 1) && \
	echo "packages: $$old $$new" && \
	TRACKER_SYSTEMD_TEST=1 TRACKER_DEB="$$old" TRACKER_DEB_UPGRADE="$$new" \
		$(GO) test -v -count=1 -timeout 40m -run '^TestSystemd$$' ./deploy/systemdtest

.PHONY: cross
cross: ## build the arm64 and armv7 binaries
	$(MAKE) build GOARCH=arm64
	$(MAKE) build GOARCH=arm GOARM=7

.PHONY: test
test: ## go vet, then every test with the race detector
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 15m ./...

.PHONY: fmt-check
fmt-check: ## fail if any Go file is not gofmt'ed
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

.PHONY: lint-sh
lint-sh: ## shellcheck every shell script
	shellcheck $$(git ls-files '*.sh') .ci/run

.PHONY: vet
vet: ## go vet for the host, arm64 and armv7
	$(GO) vet ./...
	GOOS=linux GOARCH=arm64 CGO_ENABLED=0 $(GO) vet ./...
	GOOS=linux GOARCH=arm GOARM=7 CGO_ENABLED=0 $(GO) vet ./...

.PHONY: smoke
smoke: cross ## run the cross-built binaries under qemu-user and read a simulated sensor
	./.ci/smoke.sh bin/tracker-linux-arm64 bin/tracker-linux-armv7

# Device-side packages whose tests need no re-exec or servers of their own
# kind; they run on the target architectures under qemu-user.
ARM_TEST_PKGS := ./drivers/... ./firmware/telemetry ./firmware/agent ./firmware/config \
	./firmware/health ./provisioning/certs ./provisioning/dps ./provisioning/iothub ./provisioning/cache

.PHONY: test-arm
test-arm: ## run the device-side unit tests as arm64 and armv7 binaries under qemu-user
	CGO_ENABLED=0 GOOS=linux GOARCH=arm64 $(GO) test -count=1 -exec qemu-aarch64-static $(ARM_TEST_PKGS)
	CGO_ENABLED=0 GOOS=linux GOARCH=arm GOARM=7 $(GO) test -count=1 -exec qemu-arm-static $(ARM_TEST_PKGS)

.PHONY: check
check: fmt-check lint-sh vet test smoke test-arm ## everything CI checks

.PHONY: demo
demo: ## the reference flow end to end on the local emulator (about 65 s)
	@$(MAKE) --no-print-directory build GOOS=$(shell $(GO) env GOOS) GOARCH=$(shell $(GO) env GOARCH) >/dev/null
	@$(MAKE) --no-print-directory emulator >/dev/null
	$(GO) run ./deploy/demo --tracker bin/tracker-$(shell $(GO) env GOOS)-$(shell $(GO) env GOARCH) --azemu bin/azemu

.PHONY: bench
# The 10,000-tracker goal run: the emulator in its own process, DPS limit
# above the fleet. On a busy machine spread the starts: make bench BENCH_RAMP=300s.
BENCH_DEVICES ?= 10000
BENCH_RAMP    ?= 0s
# The emulator's soft memory limit (azemu --memory-limit) for that run.
BENCH_MEMORY_LIMIT ?= 900MiB

bench: ## load figures: 10,000 trackers through DPS onto the hub; 1,000 against the DPS limit; a port call; 10,000 devices' telemetry (minutes)
	$(GO) run ./bench/fleet -devices $(BENCH_DEVICES) -rate $$(( 2 * $(BENCH_DEVICES) )) -separate -ramp $(BENCH_RAMP) -emulator-memory-limit $(BENCH_MEMORY_LIMIT)
	$(GO) run ./bench/fleet -devices 1000
	$(GO) run ./bench/fleet -portcall 500
	$(GO) run ./bench/queuecost
	$(GO) run ./bench/sdwrites
	$(GO) test -run '^$$' -bench TelemetryConnectedDevices -benchtime 20000x ./deploy/emulator/

.PHONY: faults
faults: build emulator ## fault campaign on the real binaries: 100 kill -9 with a backlog, a hub outage (OUTAGE, default 2m), a full disk (root) (minutes)
	$(GO) run ./bench/faults -tracker $(BIN) -azemu bin/azemu -outage $(OUTAGE)

OUTAGE ?= 2m

FUZZTIME ?= 30s

.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME each (default 30s; e.g. FUZZTIME=1000000x)
	FUZZTIME=$(FUZZTIME) GO=$(GO) ./.ci/fuzz.sh

.PHONY: clean
clean: ## remove build output
	rm -rf bin dist

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'
