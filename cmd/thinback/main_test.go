package main

import (
	"fmt"
	"math/rand"
	"os"
	"strconv"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"
)

func TestMain(m *testing.M) {
	// Tests that kill thinback mid-run start this binary as thinback.
	if os.Getenv("THINBACK_TEST_AS_MAIN") == "1" {
		os.Exit(Main(os.Args))
	}
	testscript.Main(m, map[string]func(){
		"thinback": func() { os.Exit(Main(os.Args)) },
		"cutssh":   func() { os.Exit(cutSSH(os.Args[1:])) },
	})
}

// TestScripts runs the end-to-end scripts in testdata/script against the
// real command.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "../../testdata/script",
		Setup: func(e *testscript.Env) error {
			e.Setenv("THINBACK_STATE", e.WorkDir+"/state.db")
			return nil
		},
		Cmds:      scriptCmds(),
		Condition: scriptCondition,
	})
}

// scriptCondition adds [root] (tests that mount filesystems).
func scriptCondition(cond string) (bool, error) {
	if cond == "root" {
		return os.Geteuid() == 0, nil
	}
	return false, fmt.Errorf("unknown condition %q", cond)
}

// scriptCmds are the commands the scripts have beyond testscript's own.
func scriptCmds() map[string]func(ts *testscript.TestScript, neg bool, args []string) {
	return map[string]func(ts *testscript.TestScript, neg bool, args []string){
		"mkimg":       cmdMkimg,
		"scribble":    cmdScribble,
		"flipbyte":    cmdFlipbyte,
		"cut":         cmdCut,
		"lvsha":       cmdLvsha,
		"startsshd":   cmdStartsshd,
		"scribbledev": cmdScribbledev,
		"mbr":         cmdMbr,
		"fsround":     cmdFsround,
		"blocksof":    cmdBlocksof,
		"encstore":    cmdEncstore,
		"keyrestore":  cmdKeyrestore,
	}
}

func atoi(ts *testscript.TestScript, s string) int64 {
	n, err := strconv.ParseInt(s, 0, 64)
	ts.Check(err)
	return n
}

// mkimg FILE SIZE SEED: a disk image of SIZE bytes: text, random data and
// zero runs, the same for the same seed.
func cmdMkimg(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 3 {
		ts.Fatalf("usage: mkimg FILE SIZE SEED")
	}
	size, seed := atoi(ts, args[1]), atoi(ts, args[2])
	r := rand.New(rand.NewSource(seed))
	b := make([]byte, size)
	for off := int64(0); off < size; off += 65536 {
		blk := b[off:min(off+65536, size)]
		switch r.Intn(3) {
		case 0: // zero
		case 1:
			r.Read(blk)
		default:
			for i := 0; i < len(blk); {
				i += copy(blk[i:], fmt.Sprintf("line %d of a text file in a disk image\n", r.Intn(1e6)))
			}
		}
	}
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), b, 0o644))
}

// scribble FILE OFFSET LEN SEED: overwrite LEN bytes at OFFSET with random
// data (a VM writing to its disk).
func cmdScribble(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 4 {
		ts.Fatalf("usage: scribble FILE OFFSET LEN SEED")
	}
	f, err := os.OpenFile(ts.MkAbs(args[0]), os.O_WRONLY, 0)
	ts.Check(err)
	defer f.Close()
	b := make([]byte, atoi(ts, args[2]))
	rand.New(rand.NewSource(atoi(ts, args[3]))).Read(b)
	_, err = f.WriteAt(b, atoi(ts, args[1]))
	ts.Check(err)
}

// flipbyte FILE OFFSET: invert one byte (negative offsets count from the end).
func cmdFlipbyte(ts *testscript.TestScript, neg bool, args []string) {
	b, err := os.ReadFile(ts.MkAbs(args[0]))
	ts.Check(err)
	off := atoi(ts, args[1])
	if off < 0 {
		off += int64(len(b))
	}
	b[off] ^= 0xFF
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), b, 0o644))
}

// cut FILE N: truncate FILE to N bytes (negative: remove -N bytes).
func cmdCut(ts *testscript.TestScript, neg bool, args []string) {
	p := ts.MkAbs(args[0])
	st, err := os.Stat(p)
	ts.Check(err)
	n := atoi(ts, args[1])
	if n < 0 {
		n += st.Size()
	}
	ts.Check(os.Truncate(p, n))
}
