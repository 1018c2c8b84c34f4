package main

import "testing"

func TestDecisionReason(t *testing.T) {
	for in, want := range map[string]string{
		"uncached_input_below_threshold": "uncached_input_below_threshold",
		"":                               "no prefiller",
		"has space":                      "no prefiller",
		"x\nInjected: 1":                 "no prefiller",
		string(make([]byte, 65)):         "no prefiller",
		"a-b.c:d_1":                      "a-b.c:d_1",
	} {
		if got := decisionReason(in); got != want {
			t.Errorf("decisionReason(%q) = %q, want %q", in, got, want)
		}
	}
}
