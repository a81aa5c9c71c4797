package main

import (
	"io"
	"strings"
	"testing"
)

func TestParseStat(t *testing.T) {
	// A loop device's /sys/block/loop0/stat: reads, then writes (requests
	// 5th, sectors 7th), ..., flushes 16th.
	line := "     120        0     2048       10      537       12    21920      300        0      400      310        0        0        0        0      161       20\n"
	d, err := parseStat(line)
	if err != nil || d != (devStat{writes: 537, sectors: 21920, flushes: 161}) {
		t.Errorf("parseStat = %+v, %v; want writes 537, sectors 21920, flushes 161", d, err)
	}
	if _, err := parseStat("1 2 3 4 5 6 7 8 9 10 11"); err == nil {
		t.Error("parseStat of an 11-field line (kernel before 4.18) = nil error; want one")
	}
}

func TestUnknownStore(t *testing.T) {
	var out strings.Builder
	err := run([]string{"-stores", "queue,lsm"}, &out, io.Discard)
	if err == nil || !strings.Contains(err.Error(), `"lsm"`) {
		t.Errorf("run -stores queue,lsm = %v; want an error naming lsm", err)
	}
}
