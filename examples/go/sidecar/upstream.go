package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
)

// endpointSuffixes are the OpenAI paths an upstream URL may end with: a
// URL given as a full endpoint names the server, and every route goes to
// its own path on that server.
var endpointSuffixes = []string{"/v1/chat/completions", "/v1/completions", "/v1/models", "/v1"}

// parseUpstream reads an upstream URL given as a base URL
// (http://host:8200, http://host:8200/prefix) or as a full endpoint URL
// (http://host:8200/v1/completions) and returns its base: scheme, host and
// any path prefix before /v1, without a trailing slash.
func parseUpstream(raw string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return "", fmt.Errorf("bad upstream URL %q: %v", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("bad upstream URL %q: the scheme must be http or https", raw)
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("bad upstream URL %q: want scheme://host:port with an optional path", raw)
	}
	p := strings.TrimRight(u.Path, "/")
	for _, s := range endpointSuffixes {
		if strings.HasSuffix(p, s) {
			p = strings.TrimSuffix(p, s)
			break
		}
	}
	return u.Scheme + "://" + u.Host + strings.TrimRight(p, "/"), nil
}

// checkHostPort accepts "host:port" and "[v6]:port" only: no scheme, path,
// user or query, and a numeric port from 1 to 65535.
func checkHostPort(s string) error {
	if s == "" || strings.ContainsAny(s, "/?#@ \\") || strings.Contains(s, "://") {
		return fmt.Errorf("%q is not host:port", s)
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return fmt.Errorf("%q is not host:port", s)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
		return fmt.Errorf("%q: bad port", s)
	}
	return nil
}

// allowlist is the set of prefill hosts a client may name in
// x-prefiller-host-port ("*" allows any).
type allowlist struct {
	any   bool
	hosts map[string]bool
}

func newAllowlist(entries []string) (*allowlist, error) {
	a := &allowlist{hosts: map[string]bool{}}
	for _, e := range entries {
		e = strings.TrimSpace(e)
		switch {
		case e == "":
		case e == "*":
			a.any = true
		default:
			if err := checkHostPort(e); err != nil {
				return nil, fmt.Errorf("prefiller allowlist: %v", err)
			}
			a.hosts[strings.ToLower(e)] = true
		}
	}
	return a, nil
}

func (a *allowlist) allows(hostport string) bool {
	return a.any || a.hosts[strings.ToLower(hostport)]
}

// hostOf returns host:port of a base URL, with the scheme's default port.
func hostOf(base string) string {
	u, err := url.Parse(base)
	if err != nil {
		return ""
	}
	if u.Port() != "" {
		return u.Host
	}
	if u.Scheme == "https" {
		return net.JoinHostPort(u.Hostname(), "443")
	}
	return net.JoinHostPort(u.Hostname(), "80")
}

// tlsConfig builds the upstream TLS settings: a CA file to trust instead
// of the system roots and a client certificate for mutual TLS. nil when
// none is given.
func tlsConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" && certFile == "" && keyFile == "" {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("upstream CA file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("upstream CA file %s: no PEM certificate in it", caFile)
		}
		c.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("upstream client certificate: give both the certificate and the key file")
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("upstream client certificate: %v", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// notFoundWatch logs, the first time an upstream URL answers 404 before it
// ever answered anything else, which URL was called: a wrong upstream URL
// otherwise shows only as every request failing.
type notFoundWatch struct {
	mu   sync.Mutex
	seen map[string]bool // URL -> warned (true) or answered (false)
}

const notFoundWatchMax = 1024

func (n *notFoundWatch) observe(leg, target string, status int, logf func(string, ...any)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.seen == nil {
		n.seen = map[string]bool{}
	}
	if _, known := n.seen[target]; known {
		return
	}
	if len(n.seen) >= notFoundWatchMax {
		return
	}
	if status != 404 {
		n.seen[target] = false
		return
	}
	n.seen[target] = true
	logf("%s upstream answered 404 Not Found to POST %s: check its URL "+
		"(a base URL such as http://host:port, or the full endpoint URL)", leg, target)
}
