package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue makes a leaf certificate for 127.0.0.1 (server) or a client.
func (ca *testCA) issue(t *testing.T, client bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "leaf"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	if client {
		tmpl.ExtKeyUsage, tmpl.IPAddresses = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
}

func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestUpstreamTLS runs prefill and decode over mutual TLS with
// certificates made here: the right CA and client certificate pass; a
// wrong CA fails with an error that says so.
func TestUpstreamTLS(t *testing.T) {
	dir := t.TempDir()
	ca, other := newTestCA(t, "upstream CA"), newTestCA(t, "another CA")
	srvCert, srvKey := ca.issue(t, false)
	cliCert, cliKey := ca.issue(t, true)
	pair, err := tls.X509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	serve := func(h http.HandlerFunc) *httptest.Server {
		s := httptest.NewUnstartedServer(h)
		s.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool,
			ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
		s.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are expected
		s.StartTLS()
		t.Cleanup(s.Close)
		return s
	}
	pre := serve(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"id":"p","choices":[{"text":"x"}],"kv_transfer_params":{"remote_engine_id":"e"},"usage":{"prompt_tokens":3}}`)
	})
	dec := serve(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"id\":\"d\",\"choices\":[{\"text\":\"secure\"}]}\n\ndata: [DONE]\n\n")
	})
	caFile := writeFile(t, dir, "ca.pem", ca.pem)
	otherFile := writeFile(t, dir, "other.pem", other.pem)
	certFile := writeFile(t, dir, "client.pem", cliCert)
	keyFile := writeFile(t, dir, "client-key.pem", cliKey)
	preHost := strings.TrimPrefix(pre.URL, "https://")

	for _, c := range []struct {
		name, ca string
		want     int
	}{{"right CA", caFile, 200}, {"wrong CA", otherFile, 502}} {
		e := newEnv(t, dec.URL, "nixlv2", func(cfg *Config) {
			cfg.CAFile, cfg.CertFile, cfg.KeyFile, cfg.PrefillerTLS = c.ca, certFile, keyFile, true
		})
		resp, text := post(t, e.srv.URL, "/v1/completions", `{"model":"m","prompt":"p"}`,
			map[string]string{"x-prefiller-host-port": preHost})
		if resp.StatusCode != c.want {
			t.Fatalf("%s: %d %q", c.name, resp.StatusCode, text)
		}
		if c.want == 200 {
			if !strings.Contains(text, "secure") {
				t.Fatalf("%s: %q", c.name, text)
			}
			continue
		}
		e2 := apiErr(t, resp, text)
		t.Logf("%s: %s", c.name, e2.Error.Message)
		if e2.Error.Type != "tls_error" || !strings.Contains(e2.Error.Message, "certificate") ||
			!strings.Contains(e2.Error.Message, "CA file") {
			t.Fatalf("%s: the error must say it is the certificate: %+v", c.name, e2.Error)
		}
		ps := one(t, e.spans(t, 2), pfx+"prefill")
		if ps.Status.Code != 2 || ps.str("error.type") != "tls_error" {
			t.Fatalf("prefill span %d %q", ps.Status.Code, ps.str("error.type"))
		}
	}
	// Without the client certificate the upstreams refuse the handshake.
	e := newEnv(t, dec.URL, "nixlv2", func(cfg *Config) { cfg.CAFile = caFile })
	if resp, text := post(t, e.srv.URL, "/v1/completions", `{"model":"m","prompt":"p"}`, nil); resp.StatusCode != 502 {
		t.Fatalf("no client certificate: %d %q", resp.StatusCode, text)
	}
	// Bad files are refused at start with a clear error.
	for _, files := range [][3]string{{filepath.Join(dir, "none.pem"), "", ""}, {keyFile, "", ""}, {caFile, certFile, ""}} {
		if _, err := tlsConfig(files[0], files[1], files[2]); err == nil {
			t.Fatalf("%v accepted", files)
		}
	}
}
