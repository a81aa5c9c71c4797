package main

import (
	"bufio"
	"bytes"
	"os"
	"runtime/metrics"
	"strconv"
	"sync"
	"time"
)

// peaks records the highest values seen while a run is in flight.
type peaks struct {
	Goroutines int
	HeapBytes  uint64 // live heap objects, runtime/metrics
	FDs        int    // open file descriptors of this process; -1 if unknown
	// EmulatorConns is the most established TCP connections the emulator's
	// MQTT listeners held at once (DPS and hubs), counted on the server
	// side in /proc/net/tcp; -1 if unknown (not Linux).
	EmulatorConns int
	// RSS is this process's peak resident set (VmHWM).
	RSS uint64
	// EmulatorRSS and EmulatorFDs are the emulator process's peak
	// resident set (VmHWM) and open descriptors, with Options.Separate.
	EmulatorRSS uint64
	EmulatorFDs int
}

// sampler polls process and socket figures every interval until stopped.
// runtime/metrics is read instead of ReadMemStats, which stops the world.
type sampler struct {
	ports map[uint16]bool
	pid   int // the emulator process, or 0 when in process
	stop  chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	p     peaks
}

func startSampler(ports []uint16, pid int, every time.Duration) *sampler {
	s := &sampler{ports: map[uint16]bool{}, pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	for _, p := range ports {
		s.ports[p] = true
	}
	s.p.FDs, s.p.EmulatorConns = -1, -1
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			s.sample()
			select {
			case <-t.C:
			case <-s.stop:
				s.sample()
				return
			}
		}
	}()
	return s
}

// Stop ends sampling and returns the peaks.
func (s *sampler) Stop() peaks {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.p
}

var sampleNames = []string{"/sched/goroutines:goroutines", "/memory/classes/heap/objects:bytes"}

func (s *sampler) sample() {
	ms := make([]metrics.Sample, len(sampleNames))
	for i, n := range sampleNames {
		ms[i].Name = n
	}
	metrics.Read(ms)
	fds := countFDs("self")
	conns := s.countConns()
	rss := procStatus(os.Getpid(), "VmHWM")
	var emuRSS uint64
	emuFDs := 0
	if s.pid > 0 {
		emuRSS, emuFDs = procStatus(s.pid, "VmHWM"), countFDs(strconv.Itoa(s.pid))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if ms[0].Value.Kind() == metrics.KindUint64 {
		s.p.Goroutines = max(s.p.Goroutines, int(ms[0].Value.Uint64()))
	}
	if ms[1].Value.Kind() == metrics.KindUint64 {
		s.p.HeapBytes = max(s.p.HeapBytes, ms[1].Value.Uint64())
	}
	s.p.FDs = max(s.p.FDs, fds)
	s.p.RSS = max(s.p.RSS, rss)
	s.p.EmulatorRSS = max(s.p.EmulatorRSS, emuRSS)
	s.p.EmulatorFDs = max(s.p.EmulatorFDs, emuFDs)
	s.p.EmulatorConns = max(s.p.EmulatorConns, conns)
}

// countFDs counts the open descriptors of process pid ("self" or a number).
func countFDs(pid string) int {
	ents, err := os.ReadDir("/proc/" + pid + "/fd")
	if err != nil {
		return -1
	}
	return len(ents)
}

// countConns counts ESTABLISHED sockets whose local port is one of the
// emulator's listeners, i.e. the server ends of device connections.
func (s *sampler) countConns() int {
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return -1
	}
	return countEstablished(b, s.ports)
}

// countEstablished parses /proc/net/tcp: "sl local_address rem_address st
// ...", addresses as hex IP:PORT, state 01 = ESTABLISHED.
func countEstablished(procNetTCP []byte, ports map[uint16]bool) int {
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(procNetTCP))
	sc.Scan() // header
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) < 4 || string(f[3]) != "01" {
			continue
		}
		i := bytes.LastIndexByte(f[1], ':')
		if i < 0 {
			continue
		}
		p, err := strconv.ParseUint(string(f[1][i+1:]), 16, 16)
		if err == nil && ports[uint16(p)] {
			n++
		}
	}
	return n
}
