package queue

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Environment of the child process in TestCrashSafety.
const (
	envCrashDB    = "QUEUE_CRASH_CHILD_DB"
	envCrashRound = "QUEUE_CRASH_CHILD_ROUND"
)

// TestCrashChild is the child half of TestCrashSafety: it Appends, acks
// every third message and writes the ack at once (Sync), acks every third
// other one lazily, until it is killed, printing a line after each call
// returns, and one before each Ack starts.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(envCrashDB)
	if path == "" {
		t.Skip("run by TestCrashSafety only")
	}
	round := os.Getenv(envCrashRound)
	q, err := Open(path, Options{})
	if err != nil {
		fmt.Printf("ERR open %v\n", err)
		os.Exit(3)
	}
	for i := 0; ; i++ {
		id := fmt.Sprintf("r%s-%d", round, i)
		m, err := q.Append(func(uint64) (Message, error) {
			return Message{ID: id, Body: make([]byte, 100+i%300), Created: time.Now()}, nil
		})
		if err != nil {
			fmt.Printf("ERR put %v\n", err)
			os.Exit(3)
		}
		fmt.Printf("seq %d\n", m.Seq)
		fmt.Printf("put %s\n", id)
		if i%3 != 2 {
			fmt.Printf("acking %s\n", id)
			err := q.Ack(m.Seq)
			if err == nil && i%3 == 0 {
				err = q.Sync()
			}
			if err != nil {
				fmt.Printf("ERR ack %v\n", err)
				os.Exit(3)
			}
			if i%3 == 0 {
				fmt.Printf("acked %s\n", id)
			}
		}
	}
}

// TestCrashSafety SIGKILLs a process writing to the queue at a random point,
// several times over the same database, and checks that the database opens
// cleanly, passes bbolt's consistency check, holds every message whose Put
// returned (unless its Ack had started), none whose Ack and Sync returned
// (a lazy Ack may or may not have been written), and that the sequence
// number never goes back.
func TestCrashSafety(t *testing.T) {
	if os.Getenv(envCrashDB) != "" {
		t.Skip("in the child")
	}
	if testing.Short() {
		t.Skip("-short: skipping child processes")
	}
	t.Parallel()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	path := filepath.Join(t.TempDir(), "q.db")

	present := map[string]bool{} // true: must be present; false: must be absent
	var maxSeq uint64
	for round := range 4 {
		killAfter := 1 + rng.IntN(60)
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), envCrashDB+"="+path, envCrashRound+"="+strconv.Itoa(round))
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		puts, killed := 0, false
		for sc.Scan() {
			verb, arg, _ := strings.Cut(sc.Text(), " ")
			switch verb {
			case "seq":
				n, _ := strconv.ParseUint(arg, 10, 64)
				if n <= maxSeq {
					t.Errorf("round %d: NextSeq() = %d after %d; want increasing", round, n, maxSeq)
				}
				maxSeq = n
			case "put":
				present[arg] = true
				puts++
			case "acking":
				delete(present, arg) // in flight when killed: either way is fine
			case "acked":
				present[arg] = false
			case "ERR":
				t.Errorf("round %d: child: %s", round, sc.Text())
			}
			if !killed && puts == killAfter {
				// Let the child get into its next transaction, then kill it.
				time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond)
				if err := cmd.Process.Kill(); err != nil {
					t.Fatal(err)
				}
				killed = true
			}
		}
		err = cmd.Wait()
		if !killed || err == nil || !strings.Contains(err.Error(), "killed") {
			t.Fatalf("round %d: child ended with %v before being killed", round, err)
		}

		checkBolt(t, path)
		q, err := Open(path, Options{})
		if err != nil {
			t.Fatalf("round %d: Open after SIGKILL = %v", round, err)
		}
		all, err := q.Peek(1 << 20)
		if err != nil {
			t.Fatalf("round %d: Peek after SIGKILL = %v", round, err)
		}
		have := map[string]bool{}
		for _, m := range all {
			have[m.ID] = true
		}
		for id, want := range present {
			if have[id] != want {
				t.Errorf("round %d: message %s present = %v; want %v", round, id, have[id], want)
			}
		}
		if n, _ := q.Len(); n != len(all) {
			t.Errorf("round %d: Len() = %d; Peek found %d", round, n, len(all))
		}
		seq, err := nextSeq(q)
		if err != nil || seq <= maxSeq {
			t.Errorf("round %d: NextSeq() after SIGKILL = %d, %v; want > %d", round, seq, err, maxSeq)
		}
		maxSeq = seq
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: killed after %d puts; %d messages queued", round, puts, len(all))
	}
}

// checkBolt runs bbolt's own consistency check over the whole file.
func checkBolt(t *testing.T, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatalf("bolt.Open after SIGKILL = %v", err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			t.Errorf("bbolt check: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
