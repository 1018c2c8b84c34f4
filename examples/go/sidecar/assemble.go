package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
)

// passthroughReason says why a non-streamed request cannot be answered
// from a streamed decode ("" when it can): the assembler rebuilds text,
// message content and usage, not several candidates, log probabilities,
// echoed prompts or tool calls.
func passthroughReason(body map[string]any, chat bool) string {
	if n, ok := number(body["n"]); ok && n > 1 {
		return "n>1"
	}
	if v, ok := body["best_of"]; ok && v != nil {
		return "best_of"
	}
	if v, ok := body["logprobs"]; ok && v != nil && v != false {
		return "logprobs"
	}
	for _, k := range []string{"top_logprobs", "prompt_logprobs"} {
		if v, ok := body[k]; ok && v != nil {
			return "logprobs"
		}
	}
	if e, _ := body["echo"].(bool); e && !chat {
		return "echo"
	}
	if tools, ok := body["tools"].([]any); ok && len(tools) > 0 {
		return "tools"
	}
	return ""
}

func number(v any) (float64, bool) {
	switch x := v.(type) {
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	case float64:
		return x, true
	}
	return 0, false
}

// assembler rebuilds the non-streamed OpenAI answer (completions or chat
// completions) from the chunks of a streamed one: what vLLM would have
// sent for the same request without stream.
type assembler struct {
	chat    bool
	top     map[string]json.RawMessage
	topKeys []string
	choices map[int]*choiceAcc
	order   []int
	usage   json.RawMessage
}

type choiceAcc struct {
	text, reasoning strings.Builder
	hasReasoning    bool
	role            string
	finish          json.RawMessage
	extra           map[string]json.RawMessage
	extraKeys       []string
}

func newAssembler(chat bool) *assembler {
	return &assembler{chat: chat, top: map[string]json.RawMessage{}, choices: map[int]*choiceAcc{}}
}

func setKey(m map[string]json.RawMessage, keys *[]string, k string, v json.RawMessage) {
	if _, ok := m[k]; !ok {
		*keys = append(*keys, k)
	}
	m[k] = v
}

var errChunk = errors.New("a chunk of the decode stream is not an OpenAI chunk")

// add takes the JSON of one data event.
func (a *assembler) add(data []byte) error {
	var c map[string]json.RawMessage
	if err := json.Unmarshal(data, &c); err != nil || c == nil {
		return errChunk
	}
	for k, v := range c {
		switch k {
		case "choices":
		case "usage":
			if !isNull(v) {
				a.usage = v
			}
		case "id", "object", "created", "model":
			if _, ok := a.top[k]; !ok {
				setKey(a.top, &a.topKeys, k, v)
			}
		default:
			if _, ok := a.top[k]; !ok || !isNull(v) {
				setKey(a.top, &a.topKeys, k, v)
			}
		}
	}
	var choices []map[string]json.RawMessage
	if raw, ok := c["choices"]; ok && !isNull(raw) {
		if err := json.Unmarshal(raw, &choices); err != nil {
			return errChunk
		}
	}
	for _, ch := range choices {
		idx := 0
		if raw, ok := ch["index"]; ok {
			if err := json.Unmarshal(raw, &idx); err != nil {
				return errChunk
			}
		}
		acc := a.choices[idx]
		if acc == nil {
			acc = &choiceAcc{extra: map[string]json.RawMessage{}}
			a.choices[idx] = acc
			a.order = append(a.order, idx)
		}
		for k, v := range ch {
			switch k {
			case "index":
			case "text":
				var s string
				if json.Unmarshal(v, &s) == nil {
					acc.text.WriteString(s)
				}
			case "delta":
				var d struct {
					Role             *string `json:"role"`
					Content          *string `json:"content"`
					ReasoningContent *string `json:"reasoning_content"`
				}
				if err := json.Unmarshal(v, &d); err != nil {
					return errChunk
				}
				if d.Role != nil && *d.Role != "" {
					acc.role = *d.Role
				}
				if d.Content != nil {
					acc.text.WriteString(*d.Content)
				}
				if d.ReasoningContent != nil {
					acc.hasReasoning = true
					acc.reasoning.WriteString(*d.ReasoningContent)
				}
			case "finish_reason":
				if !isNull(v) || acc.finish == nil {
					acc.finish = v
				}
			default:
				if _, ok := acc.extra[k]; !ok || !isNull(v) {
					setKey(acc.extra, &acc.extraKeys, k, v)
				}
			}
		}
	}
	return nil
}

func isNull(v json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(v), []byte("null")) }

// body returns the assembled answer.
func (a *assembler) body() []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	n := 0
	put := func(k string, v []byte) {
		if n > 0 {
			b.WriteByte(',')
		}
		n++
		kb, _ := json.Marshal(k)
		b.Write(kb)
		b.WriteByte(':')
		b.Write(v)
	}
	for _, k := range []string{"id", "object", "created", "model"} {
		v, ok := a.top[k]
		if !ok {
			continue
		}
		if k == "object" {
			obj := "text_completion"
			if a.chat {
				obj = "chat.completion"
			}
			v, _ = json.Marshal(obj)
		}
		put(k, v)
	}
	for _, k := range a.topKeys {
		switch k {
		case "id", "object", "created", "model":
			continue
		}
		put(k, a.top[k])
	}
	var cb bytes.Buffer
	cb.WriteByte('[')
	for i, idx := range a.order {
		acc := a.choices[idx]
		if i > 0 {
			cb.WriteByte(',')
		}
		cb.WriteString(`{"index":`)
		ib, _ := json.Marshal(idx)
		cb.Write(ib)
		if a.chat {
			role := acc.role
			if role == "" {
				role = "assistant"
			}
			msg := struct {
				Role      string  `json:"role"`
				Content   string  `json:"content"`
				Reasoning *string `json:"reasoning_content,omitempty"`
			}{Role: role, Content: acc.text.String()}
			if acc.hasReasoning {
				r := acc.reasoning.String()
				msg.Reasoning = &r
			}
			mb, _ := json.Marshal(msg)
			cb.WriteString(`,"message":`)
			cb.Write(mb)
		} else {
			tb, _ := json.Marshal(acc.text.String())
			cb.WriteString(`,"text":`)
			cb.Write(tb)
		}
		for _, k := range acc.extraKeys {
			kb, _ := json.Marshal(k)
			cb.WriteByte(',')
			cb.Write(kb)
			cb.WriteByte(':')
			cb.Write(acc.extra[k])
		}
		fin := acc.finish
		if fin == nil {
			fin = json.RawMessage("null")
		}
		cb.WriteString(`,"finish_reason":`)
		cb.Write(fin)
		cb.WriteByte('}')
	}
	cb.WriteByte(']')
	put("choices", cb.Bytes())
	if a.usage != nil {
		put("usage", a.usage)
	}
	b.WriteByte('}')
	return b.Bytes()
}
