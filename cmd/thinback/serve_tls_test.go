package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/thinback/thinback/cmd/internal/nbd"
	"github.com/thinback/thinback/cmd/internal/nbd/nbdtest"
)

// TestServeTLS: with --tls-cert, --tls-key and --tls-client-ca, a client
// must start TLS before anything else, and show a certificate the CA
// signed; over TLS the exports list and read as without; libnbd's client
// (nbds+unix://) reads them too.
func TestServeTLS(t *testing.T) {
	work, store, states := serveStore(t)
	pki := filepath.Join(work, "pki")
	if err := os.Mkdir(pki, 0o700); err != nil {
		t.Fatal(err)
	}
	ca := nbdtest.PKI(t, pki)
	conf, err := serveTLS(filepath.Join(pki, "server-cert.pem"), filepath.Join(pki, "server-key.pem"), filepath.Join(pki, "ca-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	sock, _, _, _, log := startServe(t, store, nbd.Options{TLS: conf})
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	client, err := tls.LoadX509KeyPair(filepath.Join(pki, "client-cert.pem"), filepath.Join(pki, "client-key.pem"))
	if err != nil {
		t.Fatal(err)
	}

	// Before TLS: every option refused, but STARTTLS.
	k := nbdtest.Dial(t, "unix", sock)
	if final, _ := k.Option(nbd.OptList, nil); final != nbd.RepErrTLSReqd {
		t.Fatalf("NBD_OPT_LIST before TLS: reply %#x, want NBD_REP_ERR_TLS_REQD", final)
	}
	if final := k.Go("disk.img"); final != nbd.RepErrTLSReqd {
		t.Fatalf("NBD_OPT_GO before TLS: reply %#x, want NBD_REP_ERR_TLS_REQD", final)
	}
	k.StartTLS(&tls.Config{RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{client}})
	final, list := k.Option(nbd.OptList, nil)
	if final != nbd.RepAck || len(list) != 3 {
		t.Fatalf("NBD_OPT_LIST over TLS: reply %#x, %d names", final, len(list))
	}
	if final := k.Go("disk.img@1"); final != nbd.RepAck || k.Size != uint64(len(states[0])) {
		t.Fatalf("NBD_OPT_GO over TLS: reply %#x, size %d", final, k.Size)
	}
	k.Request(nbd.CmdRead, 5, 1000, 200000, nil)
	if h, code, b := k.Reply(200000); h != 5 || code != 0 || !bytes.Equal(b, states[0][1000:201000]) {
		t.Fatalf("a read over TLS: handle %d code %d", h, code)
	}

	// Without a client certificate: no further.
	k = nbdtest.Dial(t, "unix", sock)
	if final, _ := k.Option(nbd.OptStartTLS, nil); final != nbd.RepAck {
		t.Fatalf("NBD_OPT_STARTTLS: reply %#x", final)
	}
	tc := tls.Client(k.Conn, &tls.Config{RootCAs: roots, ServerName: "localhost"})
	tc.SetDeadline(time.Now().Add(30 * time.Second))
	err = tc.Handshake()
	if err == nil {
		// TLS 1.3: the server's refusal of the missing certificate
		// comes with the first read.
		b := binary.BigEndian.AppendUint64(nil, nbd.OptMagic)
		b = binary.BigEndian.AppendUint32(b, nbd.OptList)
		b = binary.BigEndian.AppendUint32(b, 0)
		tc.Write(b)
		_, err = io.ReadFull(tc, make([]byte, 20))
	}
	if err == nil {
		t.Fatal("a client without a certificate got an answer over TLS")
	}

	if _, err := exec.LookPath("nbdinfo"); err == nil {
		out, err := exec.Command("nbdinfo", "--size", "nbds+unix:///disk.img?socket="+sock+"&tls-certificates="+pki).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != strconv.Itoa(len(states[1])) {
			t.Fatalf("nbdinfo over TLS: %v\n%s", err, out)
		}
		out, err = exec.Command("nbdinfo", "--size", "nbd+unix:///disk.img?socket="+sock).CombinedOutput()
		if err == nil {
			t.Fatalf("nbdinfo without TLS got an answer: %s", out)
		}
	}
	if s := log.String(); s != "" {
		t.Logf("serve said:\n%s", s)
	}
}
