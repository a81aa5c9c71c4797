// Package fuzzscript tests .ci/fuzz.sh, the script behind `make fuzz` and
// CI's fuzz step: that it tells a finding (an input that fails again on its
// own) from a fuzzing process that hung or died, prints the failing input's
// path and contents, and retries an infrastructure failure once. The tests
// run the script on small modules made in a temporary directory. The
// package has no code of its own.
package fuzzscript
