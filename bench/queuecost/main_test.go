package main

import "testing"

func TestParseStrace(t *testing.T) {
	out := `101 pwrite64(5, "\2\0"..., 4096, 8192) = 4096
102 fdatasync(5 <unfinished ...>
101 pwrite64(5, "\1\0"..., 4096, 0 <unfinished ...>
102 <... fdatasync resumed>) = 0
101 <... pwrite64 resumed>)           = 4096
101 write(2, "time=..."..., 80) = 80
103 fdatasync(5) = 0
`
	c := parseStrace(out)
	if c.calls["pwrite64"] != 2 || c.calls["fdatasync"] != 2 || c.calls["write"] != 1 || c.pwriteBytes != 8192 {
		t.Errorf("parseStrace = %+v; want 2 pwrite64 (8192 bytes), 2 fdatasync, 1 write", c)
	}
}
