package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testPKI writes to dir a CA (ca-cert.pem), a server certificate for
// localhost signed by it (server-cert.pem, server-key.pem) and a client
// certificate signed by it (client-cert.pem, client-key.pem): the names
// libnbd's tls-certificates directory uses.
func testPKI(t testing.TB, dir string) (ca *x509.Certificate) {
	t.Helper()
	write := func(name, typ string, der []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey := newKey()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "thinback test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	if ca, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	write("ca-cert.pem", "CERTIFICATE", der)
	for i, who := range []string{"server", "client"} {
		key := newKey()
		c := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: "localhost"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
			KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment}
		if who == "server" {
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		} else {
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		}
		der, err := x509.CreateCertificate(rand.Reader, c, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		write(who+"-cert.pem", "CERTIFICATE", der)
		write(who+"-key.pem", "PRIVATE KEY", kder)
	}
	return ca
}

// startTLS sends NBD_OPT_STARTTLS and runs the client's TLS handshake.
func (k *nbdClient) startTLS(conf *tls.Config) {
	k.t.Helper()
	if final, _ := k.option(nbdOptStartTLS, nil); final != nbdRepAck {
		k.t.Fatalf("NBD_OPT_STARTTLS: reply %#x", final)
	}
	tc := tls.Client(k.c, conf)
	if err := tc.Handshake(); err != nil {
		k.t.Fatalf("TLS handshake: %v", err)
	}
	k.c = tc
}

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
	ca := testPKI(t, pki)
	conf, err := serveTLS(filepath.Join(pki, "server-cert.pem"), filepath.Join(pki, "server-key.pem"), filepath.Join(pki, "ca-cert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	sock, _, _, log := startServe(t, store, nbdOptions{TLS: conf})
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	client, err := tls.LoadX509KeyPair(filepath.Join(pki, "client-cert.pem"), filepath.Join(pki, "client-key.pem"))
	if err != nil {
		t.Fatal(err)
	}

	// Before TLS: every option refused, but STARTTLS.
	k := dialNBD(t, sock)
	if final, _ := k.option(nbdOptList, nil); final != nbdRepErrTLSReqd {
		t.Fatalf("NBD_OPT_LIST before TLS: reply %#x, want NBD_REP_ERR_TLS_REQD", final)
	}
	if final := k.goExport("disk.img"); final != nbdRepErrTLSReqd {
		t.Fatalf("NBD_OPT_GO before TLS: reply %#x, want NBD_REP_ERR_TLS_REQD", final)
	}
	k.startTLS(&tls.Config{RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{client}})
	final, list := k.option(nbdOptList, nil)
	if final != nbdRepAck || len(list) != 3 {
		t.Fatalf("NBD_OPT_LIST over TLS: reply %#x, %d names", final, len(list))
	}
	if final := k.goExport("disk.img@1"); final != nbdRepAck || k.sz != uint64(len(states[0])) {
		t.Fatalf("NBD_OPT_GO over TLS: reply %#x, size %d", final, k.sz)
	}
	k.request(nbdCmdRead, 5, 1000, 200000, nil)
	if h, code, b := k.reply(200000); h != 5 || code != 0 || !bytes.Equal(b, states[0][1000:201000]) {
		t.Fatalf("a read over TLS: handle %d code %d", h, code)
	}

	// Without a client certificate: no further.
	k = dialNBD(t, sock)
	if final, _ := k.option(nbdOptStartTLS, nil); final != nbdRepAck {
		t.Fatalf("NBD_OPT_STARTTLS: reply %#x", final)
	}
	tc := tls.Client(k.c, &tls.Config{RootCAs: roots, ServerName: "localhost"})
	tc.SetDeadline(time.Now().Add(30 * time.Second))
	err = tc.Handshake()
	if err == nil {
		// TLS 1.3: the server's refusal of the missing certificate
		// comes with the first read.
		b := binary.BigEndian.AppendUint64(nil, nbdOptMagic)
		b = binary.BigEndian.AppendUint32(b, nbdOptList)
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
