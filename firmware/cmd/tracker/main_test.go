package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func runArgs(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, stdio{&out, &errb})
	return code, out.String(), errb.String()
}

func TestVersion(t *testing.T) {
	code, out, _ := runArgs(t, "version")
	if code != exitOK || out != "tracker "+version+"\n" {
		t.Errorf("tracker version = %d, %q; want 0, %q", code, out, "tracker "+version+"\n")
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		args     []string
		wantCode int
		wantErr  string
	}{
		{nil, exitUsage, "usage: tracker"},
		{[]string{"nope"}, exitUsage, `unknown command "nope"`},
		{[]string{"help"}, exitOK, "version"},
		{[]string{"version", "extra"}, exitUsage, "takes no arguments"},
		{[]string{"run", "-h"}, exitOK, "-config file"},
		{[]string{"provision", "-h"}, exitOK, "-force"},
		{[]string{"doctor", "-h"}, exitOK, "usage: tracker doctor"},
		{[]string{"sensors", "--help"}, exitOK, "-watch"},
		{[]string{"run", "extra"}, exitUsage, `tracker run: unexpected argument "extra"`},
		{[]string{"doctor", "--bogus"}, exitUsage, "tracker doctor: flag provided but not defined: -bogus"},
	}
	for _, tt := range tests {
		code, _, stderr := runArgs(t, tt.args...)
		// -h is an answer, not an error: no "tracker run: flag: help requested".
		if code != tt.wantCode || !strings.Contains(stderr, tt.wantErr) || strings.Contains(stderr, "help requested") {
			t.Errorf("tracker %q = %d, stderr %q; want %d containing %q", tt.args, code, stderr, tt.wantCode, tt.wantErr)
		}
	}
}
