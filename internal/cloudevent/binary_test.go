package cloudevent

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// binaryHeader is a binary-mode header with the attributes of samplePayload.
func binaryHeader() map[string][]string {
	return map[string][]string{
		"ce-specversion": {"1.0"},
		"ce-id":          {"urn:cellos:event:e331f1f5-563b-9c31-613c-2e3831c8e93d"},
		"ce-source":      {"/cellos/supervisor/host-2"},
		"ce-type":        {"dev.cellos.events.cell.lifecycle.v1.destroyed"},
		"ce-time":        {"2026-11-12T00:42:22Z"},
		"ce-subject":     {"cell:cell-02daa0b3-0"},
		"Content-Type":   {"application/json"},
	}
}

// with returns binaryHeader with the given headers set, or removed when
// given no values.
func with(headers map[string][]string) map[string][]string {
	h := binaryHeader()
	for k, v := range headers {
		if v == nil {
			delete(h, k)
			continue
		}
		h[k] = v
	}
	return h
}

func TestDecodeBinary(t *testing.T) {
	const body = `{"cellId": "cell-02daa0b3-0", "outcome": "succeeded"}`
	sample := Event{
		ID:      "urn:cellos:event:e331f1f5-563b-9c31-613c-2e3831c8e93d",
		Type:    "dev.cellos.events.cell.lifecycle.v1.destroyed",
		Subject: "cell:cell-02daa0b3-0",
		Time:    mustTime(t, "2026-11-12T00:42:22Z"),
		Data:    json.RawMessage(body),
	}
	// edit returns sample with f applied, so each case shows its difference.
	edit := func(f func(*Event)) Event {
		ev := sample
		f(&ev)
		return ev
	}
	tests := []struct {
		name    string
		header  map[string][]string
		payload string
		want    Event
	}{
		{"the same event as structured mode", binaryHeader(), body, sample},
		{
			"header names in any case",
			map[string][]string{
				"CE-SPECVERSION": {"1.0"}, "Ce-Id": {sample.ID}, "ce-TYPE": {sample.Type},
				"cE-sUbJeCt": {sample.Subject}, "CE-time": {"2026-11-12T00:42:22Z"},
			},
			body, sample,
		},
		{"no Content-Type", with(map[string][]string{"Content-Type": nil}), body, sample},
		{"Content-Type is not consulted", with(map[string][]string{"Content-Type": {"text/plain"}}), body, sample},
		{"a body with surrounding whitespace is trimmed", binaryHeader(), "\r\n " + body + "\t\n", sample},
		{"a body that is not an object is data without members", binaryHeader(), `["cellId"]`, edit(func(e *Event) { e.Data = json.RawMessage(`["cellId"]`) })},
		{"a body that is not JSON is no data", binaryHeader(), "cellId=cell-02daa0b3-0", edit(func(e *Event) { e.Data = nil })},
		{"an empty body is no data", binaryHeader(), "", edit(func(e *Event) { e.Data = nil })},
		{"a body that is not UTF-8 is no data", binaryHeader(), "\"\xff\"", edit(func(e *Event) { e.Data = nil })},
		{"a body with a lone surrogate is no data, not a rejection", binaryHeader(), `{"cellId":"\ud800"}`, edit(func(e *Event) { e.Data = nil })},
		{"a structured envelope as body is data", binaryHeader(), `{"type":"x","data":{}}`, edit(func(e *Event) { e.Data = json.RawMessage(`{"type":"x","data":{}}`) })},
		{"absent attributes are empty", map[string][]string{"ce-specversion": {"1.0"}}, body, Event{Data: json.RawMessage(body)}},
		{"lower-case t and z in ce-time", with(map[string][]string{"ce-time": {"2026-11-12t00:42:22z"}}), body, sample},
		{"ce-time that is not RFC 3339", with(map[string][]string{"ce-time": {"12 Nov 2026"}}), body, edit(func(e *Event) { e.Time = nil })},
		{"percent-encoding", with(map[string][]string{"ce-id": {"Euro%20%E2%82%AC%20%F0%9F%98%80"}}), body, edit(func(e *Event) { e.ID = "Euro € 😀" })},
		{"percent-encoding in lower case", with(map[string][]string{"ce-id": {"%e2%82%ac"}}), body, edit(func(e *Event) { e.ID = "€" })},
		{"needless percent-encoding", with(map[string][]string{"ce-type": {"dev.cellos.events.cell.lifecycle.v1.%64estroyed"}}), body, sample},
		{"plus is not a space", with(map[string][]string{"ce-id": {"a+b"}}), body, edit(func(e *Event) { e.ID = "a+b" })},
		{"raw UTF-8 is kept", with(map[string][]string{"ce-id": {"é"}}), body, edit(func(e *Event) { e.ID = "é" })},
		{"surrounding spaces and tabs are dropped", with(map[string][]string{"ce-id": {" \tx \t"}}), body, edit(func(e *Event) { e.ID = "x" })},
		{"a quoted string is unquoted", with(map[string][]string{"ce-id": {`"a \"b\" \\c"`}}), body, edit(func(e *Event) { e.ID = `a "b" \c` })},
		{"a quoted string is percent-decoded after", with(map[string][]string{"ce-id": {`"a%20b"`}}), body, edit(func(e *Event) { e.ID = "a b" })},
		{"an empty quoted string", with(map[string][]string{"ce-id": {`""`}}), body, edit(func(e *Event) { e.ID = "" })},
		{"a quote inside a value is literal", with(map[string][]string{"ce-id": {`a"b`}}), body, edit(func(e *Event) { e.ID = `a"b` })},
		{"one value in two spellings", with(map[string][]string{"CE-ID": {sample.ID}}), body, sample},
		{"one value twice in one header", with(map[string][]string{"ce-id": {sample.ID, "urn:cellos:event:e331f1f5-563b-9c31-613c-2e3831c8e93d"}}), body, sample},
		{"other headers are not attributes", with(map[string][]string{"Nats-Msg-Id": {"x"}, "id": {"y"}, "cе-id": {"cyrillic e"}}), body, sample},
		{"names fold ASCII case only", with(map[string][]string{"ce-\u212a": {"Kelvin sign"}, "ce-k": {"k"}, "ce-\u017fubject": {"long s"}}), body, sample},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode(tt.header, []byte(tt.payload))
			if err != nil {
				t.Fatalf("Decode: unexpected error %v", err)
			}
			assertEvent(t, got, tt.want)
			want, _ := tt.want.DataString("cellId")
			if g, _ := got.DataString("cellId"); g != want {
				t.Errorf("DataString(cellId) = %q, want %q", g, want)
			}
		})
	}
}

func TestDecodeBinaryRejects(t *testing.T) {
	tests := []struct {
		name   string
		header map[string][]string
		reason string
	}{
		{"malformed percent-encoding", with(map[string][]string{"ce-id": {"100%"}}), `binary-mode header "ce-id": percent-decoding: invalid URL escape "%"`},
		{"non-hex percent-encoding", with(map[string][]string{"ce-id": {"%zz"}}), `binary-mode header "ce-id": percent-decoding: invalid URL escape "%zz"`},
		{"overlong UTF-8", with(map[string][]string{"ce-id": {"%C0%A0"}}), `binary-mode header "ce-id": percent-decodes to invalid UTF-8`},
		{"a lone byte", with(map[string][]string{"ce-subject": {"%FF"}}), `binary-mode header "ce-subject": percent-decodes to invalid UTF-8`},
		{"raw bytes that are not UTF-8", with(map[string][]string{"ce-type": {"\xff"}}), `binary-mode header "ce-type": percent-decodes to invalid UTF-8`},
		{"unterminated quoted string", with(map[string][]string{"ce-id": {`"abc`}}), `binary-mode header "ce-id": unterminated quoted string`},
		{"escaped closing quote", with(map[string][]string{"ce-id": {`"abc\"`}}), `binary-mode header "ce-id": unterminated quoted string`},
		{"a lone quote", with(map[string][]string{"ce-id": {`"`}}), `binary-mode header "ce-id": unterminated quoted string`},
		{"text after a quoted string", with(map[string][]string{"ce-id": {`"a"b"`}}), `binary-mode header "ce-id": text after a quoted string`},
		{"control character in a quoted string", with(map[string][]string{"ce-id": {"\"a\x01\""}}), `binary-mode header "ce-id": control character '\x01' in a quoted string`},
		{"a header the fold does not read still has to decode", with(map[string][]string{"ce-source": {"%"}}), `binary-mode header "ce-source": `},
		{
			"two values in two spellings", with(map[string][]string{"CE-TYPE": {"a"}}),
			`binary-mode attribute "type" has two values, "a" and "dev.cellos.events.cell.lifecycle.v1.destroyed"`,
		},
		{"two values in one header", with(map[string][]string{"ce-subject": {"a", "b"}}), `binary-mode attribute "subject" has two values, "a" and "b"`},
		// Names and values come from the publisher: a reason quotes at most
		// MaxQuoted bytes of each.
		{
			"a long header name is quoted in part", with(map[string][]string{"ce-" + strings.Repeat("n", 1<<20): {"%"}}),
			`binary-mode header "ce-` + strings.Repeat("n", MaxQuoted-3) + `"…(1048579 bytes): percent-decoding`,
		},
		{
			"long values are quoted in part", with(map[string][]string{"ce-subject": {strings.Repeat("a", 1<<20), strings.Repeat("b", 1<<20)}}),
			`binary-mode attribute "subject" has two values, "` + strings.Repeat("a", MaxQuoted) + `"…(1048576 bytes) and "` + strings.Repeat("b", MaxQuoted) + `"…(1048576 bytes)`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(tt.header, []byte(`{}`))
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("Decode error = %#v, want *DecodeError", err)
			}
			if !strings.HasPrefix(de.Reason, tt.reason) {
				t.Errorf("reason = %.400q, want prefix %.400q", de.Reason, tt.reason)
			}
		})
	}
}

// TestDecodeContentMode checks which messages are read as binary: those with
// ce-specversion, unless Content-Type names the CloudEvents format.
func TestDecodeContentMode(t *testing.T) {
	const envelope = `{"type":"from-payload"}`
	tests := []struct {
		name     string
		header   map[string][]string
		wantType string
	}{
		{"no header", nil, "from-payload"},
		{"empty header", map[string][]string{}, "from-payload"},
		{"attributes without ce-specversion", map[string][]string{"ce-type": {"from-header"}}, "from-payload"},
		{"ce-specversion", map[string][]string{"ce-specversion": {"1.0"}, "ce-type": {"from-header"}}, "from-header"},
		{"ce-specversion of any value", map[string][]string{"Ce-Specversion": {""}, "ce-type": {"from-header"}}, "from-header"},
		{"ce-specversion spelled with a long s", map[string][]string{"ce-\u017fpecversion": {"1.0"}, "ce-type": {"from-header"}}, "from-payload"},
		{
			"a CloudEvents Content-Type makes it structured",
			map[string][]string{"ce-specversion": {"1.0"}, "ce-type": {"from-header"}, "content-type": {"application/cloudevents+json; charset=utf-8"}},
			"from-payload",
		},
		{
			"in any case, among other values",
			map[string][]string{"ce-specversion": {"1.0"}, "ce-type": {"from-header"}, "CONTENT-TYPE": {"text/plain", " Application/CloudEvents+JSON"}},
			"from-payload",
		},
		{
			"another Content-Type leaves it binary",
			map[string][]string{"ce-specversion": {"1.0"}, "ce-type": {"from-header"}, "Content-Type": {"application/json"}},
			"from-header",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := Decode(tt.header, []byte(envelope))
			if err != nil {
				t.Fatal(err)
			}
			if ev.Type != tt.wantType {
				t.Errorf("Type = %q, want %q", ev.Type, tt.wantType)
			}
		})
	}
}

func TestDecodeBinaryDataDoesNotAliasPayload(t *testing.T) {
	payload := []byte(`{"cellId":"abc"}`)
	ev, err := Decode(binaryHeader(), payload)
	if err != nil {
		t.Fatal(err)
	}
	for i := range payload {
		payload[i] = 'X'
	}
	if got, _ := ev.DataString("cellId"); got != "abc" || string(ev.Data) != `{"cellId":"abc"}` {
		t.Errorf("data changed with the payload buffer: %q", ev.Data)
	}
}
