package pdtrace

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

const evilID = "abc\x00\r\nX-Evil: 1"

func wantNUL(t *testing.T, what string, err error) {
	t.Helper()
	e := wantStatus(t, what, err, StatusInvalid)
	if !strings.Contains(e.Message, "NUL") {
		t.Fatalf("%s: message %q does not say NUL", what, e.Message)
	}
}

func noEvil(t *testing.T, what string, h http.Header) {
	t.Helper()
	for k, vs := range h {
		for _, v := range vs {
			if strings.ContainsAny(v, "\x00\r\n") || strings.Contains(v, "X-Evil") {
				t.Fatalf("%s: header %s = %q", what, k, v)
			}
		}
	}
}

// A request id holding a NUL is refused like any id the library refuses:
// the request begins with an id of its own, and what is sent is what the
// library holds.
func TestRequestIDWithNULIsRefused(t *testing.T) {
	tr, _ := openConsole(t, nil)
	in := http.Header{}
	in.Set(HeaderRequestID, "ok") // replaced below, past net/http's checks
	in[HeaderRequestID] = []string{evilID}
	for _, begin := range []func() (*Request, error){
		func() (*Request, error) { return tr.BeginFromHeader(in, 0) },
		func() (*Request, error) {
			req := httptest.NewRequest("GET", "/v1/completions", nil)
			req.Header = in
			return tr.BeginWith(req, 0, "nixlv2", "m")
		},
	} {
		r, err := begin()
		wantNUL(t, "begin with a NUL in x-request-id", err)
		if r == nil {
			t.Fatal("the request did not begin")
		}
		if id := r.ID(); id == "" || strings.ContainsAny(id, "\x00\r\n") || strings.HasPrefix(id, "abc") {
			t.Fatalf("ID() = %q", id)
		}
		h := http.Header{}
		mustOK(t, "SendPrefill", r.SendPrefill(h, 0))
		noEvil(t, "SendPrefill", h)
		if h.Get(HeaderRequestID) != r.ID() {
			t.Fatalf("x-request-id %q, ID() %q", h.Get(HeaderRequestID), r.ID())
		}
		wantNUL(t, "SetID", r.SetID(evilID))
		h = http.Header{}
		mustOK(t, "InjectDecode", r.InjectDecode(h))
		noEvil(t, "InjectDecode", h)
		r.Close()
	}
	// A good id given at begin is read back from the library.
	r, err := tr.BeginFromHeader(http.Header{HeaderRequestID: {"rid-9"}}, 0)
	mustOK(t, "begin", err)
	h := http.Header{}
	mustOK(t, "SendPrefill", r.SendPrefill(h, 0))
	if h.Get(HeaderRequestID) != "rid-9" || r.ID() != "rid-9" {
		t.Fatalf("x-request-id %q, ID %q", h.Get(HeaderRequestID), r.ID())
	}
	r.Close()
}

func TestStringsWithNULAreRefused(t *testing.T) {
	tr, path := openConsole(t, nil)
	before, _ := tr.Stats()
	_, err := tr.BeginRemote("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\x00", "", 0)
	wantNUL(t, "BeginRemote traceparent", err)
	_, err = tr.BeginRemote("", "a=b\x00", 0)
	wantNUL(t, "BeginRemote tracestate", err)
	req := httptest.NewRequest("GET", "/", nil)
	_, err = tr.BeginWith(req, 0, "nixl\x00", "")
	wantNUL(t, "BeginWith connector", err)
	_, err = tr.BeginWith(req, 0, "", "m\x00")
	wantNUL(t, "BeginWith model", err)
	_, err = tr.BeginWith(req, 0, "", "", Int("k\x00", 1))
	wantNUL(t, "BeginWith attribute key", err)
	after, _ := tr.Stats()
	if after.SpansStarted != before.SpansStarted {
		t.Fatalf("refused begins started %d spans", after.SpansStarted-before.SpansStarted)
	}

	r, err := tr.BeginRemote("", "", 0)
	mustOK(t, "begin", err)
	wantNUL(t, "SetMode", r.SetMode(ModeConcurrent, "r\x00"))
	wantNUL(t, "SetConnector", r.SetConnector("a\x00b"))
	wantNUL(t, "SetModel", r.SetModel("a\x00b"))
	wantNUL(t, "SetLeg target", r.SetLeg(LegPrefill, "h:1\x00", 200, ""))
	wantNUL(t, "SetLeg error", r.SetLeg(LegPrefill, "h:1", 500, "e\x00"))
	wantNUL(t, "SetResponse", r.SetResponse(500, "e\x00"))
	wantNUL(t, "PrefillResult", r.PrefillResult(0, "t\x00", 200, ""))
	wantNUL(t, "SetString key", r.SetString("k\x00", "v"))
	wantNUL(t, "SetInt key", r.SetInt("k\x00", 1))
	wantNUL(t, "SetAttributes key", r.SetAttributes(String("k\x00", "v")))
	wantNUL(t, "leg AddEvent", r.Leg(LegPrefill).AddEvent("e\x00", 0))
	wantNUL(t, "leg SetStatus", r.Leg(LegDecode).SetStatus(StatusError, "m\x00"))
	_, err = r.Finish(0, &Outcome{Status: 500, ErrorType: "e\x00"})
	wantNUL(t, "Finish ErrorType", err)
	_, err = r.Finish(0, &Outcome{Status: 200, DecodeTarget: "t\x00", DecodeStatus: 200})
	wantNUL(t, "Finish DecodeTarget", err)
	// Attribute string values travel with their length: NULs are data.
	mustOK(t, "SetString value with NUL", r.SetString("raw", "a\x00b"))
	_, err = r.Finish(0, &Outcome{Status: 200})
	mustOK(t, "Finish", err)
	r.Close()

	_, err = tr.Start("n\x00", KindInternal, nil, 0)
	wantNUL(t, "Start name", err)
	_, err = tr.StartRemote("n", KindInternal, "", "a=b\x00", 0)
	wantNUL(t, "StartRemote tracestate", err)
	s, err := tr.Start("s", KindInternal, nil, 0)
	mustOK(t, "Start", err)
	wantNUL(t, "Span SetString key", s.SetString("k\x00", "v"))
	wantNUL(t, "Span SetAttributes key", s.SetAttributes(Bool("k\x00", true)))
	wantNUL(t, "Span AddEvent", s.AddEvent("e\x00", 0))
	mustOK(t, "AddEvent", s.AddEvent("e", 0))
	wantNUL(t, "Span SetEventString value", s.SetEventString("k", "v\x00"))
	wantNUL(t, "Span SetEventInt key", s.SetEventInt("k\x00", 1))
	wantNUL(t, "Span SetStatus", s.SetStatus(StatusError, "m\x00"))
	mustOK(t, "End", s.End(0))
	s.Close()

	_, _, _, err = ParseTraceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\x00junk")
	wantNUL(t, "ParseTraceparent", err)

	for name, set := range map[string]func(*Options){
		"ServiceName": func(o *Options) { o.ServiceName = "s\x00" },
		"Endpoint":    func(o *Options) { o.Endpoint = "http://h\x00" },
		"Headers":     func(o *Options) { o.Headers = "a=b\x00" },
		"ConsolePath": func(o *Options) { o.ConsolePath = path + "\x00x" },
		"SpoolDir":    func(o *Options) { o.SpoolDir = "/tmp\x00" },
	} {
		o := &Options{Exporter: ExporterNone, IgnoreEnvironment: true}
		set(o)
		_, err := Open(o)
		wantNUL(t, "Open "+name, err)
		if !strings.Contains(err.Error(), name) {
			t.Fatalf("Open %s: error %q does not name the option", name, err)
		}
	}
	flush(t, tr)
	for _, sp := range readSpans(t, path) {
		for _, kv := range sp.Attributes {
			if strings.Contains(kv.Key, "\x00") {
				t.Fatalf("span %s has key %q", sp.Name, kv.Key)
			}
		}
	}
}

// The log callback's handle must stay valid while the C close runs: the
// exporter logs its failures until pdt_tracer_close returns.
func TestLogCallbackOutlivesClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	mustOK(t, "listen", err)
	refused := "http://" + ln.Addr().String()
	ln.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer srv.Close()
	for _, endpoint := range []string{refused, srv.URL} {
		for run := 0; run < 3; run++ {
			var mu sync.Mutex
			n := 0
			tr, err := Open(&Options{
				Exporter: ExporterOTLP, Endpoint: endpoint, IgnoreEnvironment: true,
				ScheduleDelay: 10 * time.Millisecond, Timeout: 300 * time.Millisecond,
				ExportTimeout: 400 * time.Millisecond, MaxExportBatchSize: 4,
				Log: func(LogLevel, string) { mu.Lock(); n++; mu.Unlock() },
			})
			mustOK(t, "Open", err)
			for i := 0; i < 32; i++ {
				s, err := tr.Start("s", KindInternal, nil, 0)
				mustOK(t, "Start", err)
				s.Close()
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = tr.Close(ctx) // spans are dropped: the export fails
			cancel()
			mu.Lock()
			got := n
			mu.Unlock()
			if got == 0 {
				t.Fatalf("%s run %d: the callback saw no failure", endpoint, run)
			}
		}
	}
}
