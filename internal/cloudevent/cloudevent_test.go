package cloudevent

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// samplePayload is line 12 of the shared sample stream: a destroyed event with
// every envelope member and a data object of six members.
const samplePayload = `{"specversion": "1.0", "id": "urn:cellos:event:e331f1f5-563b-9c31-613c-2e3831c8e93d", "source": "/cellos/supervisor/host-2", "type": "dev.cellos.events.cell.lifecycle.v1.destroyed", "time": "2026-11-12T00:42:22Z", "datacontenttype": "application/json", "data": {"cellId": "cell-02daa0b3-0", "specId": "spec-8", "runId": "run-41972530e85c", "formationId": "02daa0b3-49a7-a4bf-8050-cbb812881d4e", "outcome": "succeeded", "terminalState": "forced"}, "subject": "cell:cell-02daa0b3-0"}`

func mustTime(t *testing.T, s string) *time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	v = v.UTC()
	return &v
}

func TestDecodeEnvelope(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		want    Event // compared field by field, Data as bytes
	}{
		{
			name:    "full sample",
			payload: samplePayload,
			want: Event{
				ID:      "urn:cellos:event:e331f1f5-563b-9c31-613c-2e3831c8e93d",
				Type:    "dev.cellos.events.cell.lifecycle.v1.destroyed",
				Subject: "cell:cell-02daa0b3-0",
				Time:    mustTime(t, "2026-11-12T00:42:22Z"),
				Data:    json.RawMessage(`{"cellId": "cell-02daa0b3-0", "specId": "spec-8", "runId": "run-41972530e85c", "formationId": "02daa0b3-49a7-a4bf-8050-cbb812881d4e", "outcome": "succeeded", "terminalState": "forced"}`),
			},
		},
		{name: "empty object", payload: `{}`, want: Event{}},
		{name: "surrounding whitespace", payload: " \n\t{ \"type\" : \"x\" } \r\n", want: Event{Type: "x"}},
		{name: "type is a number", payload: `{"type": 42, "data": "str"}`, want: Event{Data: json.RawMessage(`"str"`)}},
		{name: "every string member of the wrong type", payload: `{"id":null,"type":[],"subject":true,"time":5}`, want: Event{}},
		{name: "data null is kept raw", payload: `{"data":null}`, want: Event{Data: json.RawMessage(`null`)}},
		{name: "data nested", payload: `{"data":{"a":[1,{"b":"}"}]}}`, want: Event{Data: json.RawMessage(`{"a":[1,{"b":"}"}]}`)}},
		{name: "escaped strings", payload: `{"type":"a\"b\u00e9\\c","id":"\ud83d\ude00"}`, want: Event{Type: "a\"bé\\c", ID: "😀"}},
		{name: "escaped key", payload: `{"typ\u0065":"x"}`, want: Event{Type: "x"}},
		{name: "an escaped backslash before u is no escape", payload: `{"id":"\\ud800"}`, want: Event{ID: `\ud800`}},
		{name: "surrogate pairs in upper case", payload: `{"id":"\uD83D\uDE00\uDBFF\uDFFF"}`, want: Event{ID: "😀\U0010FFFF"}},
		{name: "keys are case-sensitive", payload: `{"Type":"x","TYPE":"y"}`, want: Event{}},
		{name: "last duplicate wins", payload: `{"type":"a","type":"b"}`, want: Event{Type: "b"}},
		{name: "last duplicate wins even if not a string", payload: `{"type":"a","type":1}`, want: Event{}},
		{name: "unknown members skipped", payload: `{"x":{"type":"no"},"y":["type"],"type":"yes"}`, want: Event{Type: "yes"}},
		{name: "time with fraction", payload: `{"time":"2026-11-12T00:42:22.123456789Z"}`, want: Event{Time: mustTime(t, "2026-11-12T00:42:22.123456789Z")}},
		{name: "time with offset is normalised to UTC", payload: `{"time":"2026-11-12T02:42:22+02:00"}`, want: Event{Time: mustTime(t, "2026-11-12T00:42:22Z")}},
		{name: "time with lower-case t and z", payload: `{"time":"2026-11-12t00:42:22z"}`, want: Event{Time: mustTime(t, "2026-11-12T00:42:22Z")}},
		{name: "time with a comma fraction is not RFC 3339", payload: `{"time":"2026-11-12T00:42:22,5Z"}`, want: Event{}},
		{name: "time unparsable", payload: `{"time":"yesterday"}`, want: Event{}},
		{name: "time date only", payload: `{"time":"2026-11-12"}`, want: Event{}},
		{name: "time not a string", payload: `{"time":1700000000}`, want: Event{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode(nil, []byte(tt.payload))
			if err != nil {
				t.Fatalf("Decode: unexpected error %v", err)
			}
			assertEvent(t, got, tt.want)
		})
	}
}

func assertEvent(t *testing.T, got, want Event) {
	t.Helper()
	check := func(field, g, w string) {
		if g != w {
			t.Errorf("%s = %q, want %q", field, g, w)
		}
	}
	check("ID", got.ID, want.ID)
	check("Type", got.Type, want.Type)
	check("Subject", got.Subject, want.Subject)
	switch {
	case got.Time == nil && want.Time == nil:
	case got.Time == nil || want.Time == nil || !got.Time.Equal(*want.Time) || got.Time.Location() != time.UTC:
		t.Errorf("Time = %v, want %v (UTC)", got.Time, want.Time)
	}
	if (got.Data == nil) != (want.Data == nil) || !bytes.Equal(got.Data, want.Data) {
		t.Errorf("Data = %q, want %q", got.Data, want.Data)
	}
}

func TestDecodeRejects(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		reason  string // prefix of the DecodeError reason
	}{
		{"not json", "not json at all", "payload is not JSON: "},
		{"empty", "", "payload is not JSON: "},
		{"whitespace only", " \n", "payload is not JSON: "},
		{"truncated", `{"type": "dev.cellos.events.cell.lifecycle.v1.started", "data": {"cellId": "trunc`, "payload is not JSON: "},
		{"trailing garbage", `{} x`, "payload is not JSON: "},
		{"two objects", `{}{}`, "payload is not JSON: "},
		{"invalid utf-8", "{\"type\":\"\xff\"}", "payload is not JSON: invalid UTF-8"},
		{"lone leading surrogate", `{"data":{"cellId":"\ud800"}}`, "payload is not JSON: the escape \\ud800 at byte 19 is a lone UTF-16 surrogate"},
		{"lone trailing surrogate", `{"data":{"cellId":"\udc00"}}`, "payload is not JSON: the escape \\udc00 at byte 19 is a lone UTF-16 surrogate"},
		{"leading surrogate at the end of a string", `{"id":"a\uD83D"}`, "payload is not JSON: the escape \\uD83D at byte 8"},
		{"leading surrogate before another escape", `{"id":"\ud83d\n"}`, "payload is not JSON: the escape \\ud83d"},
		{"two leading surrogates", `{"id":"\ud83d\ud83d\ude00"}`, "payload is not JSON: the escape \\ud83d at byte 7"},
		{"reversed pair", `{"id":"\ude00\ud83d"}`, "payload is not JSON: the escape \\ude00 at byte 7"},
		{"surrogate in a key", `{"\udfff":1}`, "payload is not JSON: the escape \\udfff at byte 2"},
		{"surrogate deep in data", `{"type":"t","data":{"a":[{"b":["x","\uDBFF"]}]}}`, "payload is not JSON: the escape \\uDBFF"},
		{"surrogate after an escaped backslash", `{"id":"\\\ud800"}`, "payload is not JSON: the escape \\ud800 at byte 9"},
		// serde_json's limits, anywhere in the payload.
		{"128 nested arrays", strings.Repeat("[", 128) + strings.Repeat("]", 128), "payload is not JSON: arrays and objects nest more than 127 deep at byte 127"},
		{"128 levels with the envelope, in data", `{"data":` + strings.Repeat("[", 127) + strings.Repeat("]", 127) + `}`, "payload is not JSON: arrays and objects nest more than 127 deep"},
		{"128 nested objects", strings.Repeat(`{"a":`, 128) + "1" + strings.Repeat("}", 128), "payload is not JSON: arrays and objects nest more than 127 deep"},
		{"1e400", `{"data":{"exitCode":1e400}}`, "payload is not JSON: the number at byte 20 (5 bytes) is out of float64's range"},
		{"-1e400", `{"x":[-1e400]}`, "payload is not JSON: the number at byte 6 (6 bytes) is out of float64's range"},
		{"a 401-digit integer", `{"id":1` + strings.Repeat("0", 400) + `}`, "payload is not JSON: the number at byte 6 (401 bytes) is out of float64's range"},
		{"array", `[1,2,3]`, "payload is a JSON array, not an object"},
		{"string", `"{}"`, "payload is a JSON string, not an object"},
		{"number", ` 42 `, "payload is a JSON number, not an object"},
		{"negative number", `-1`, "payload is a JSON number, not an object"},
		{"boolean", `true`, "payload is a JSON boolean, not an object"},
		{"null", `null`, "payload is JSON null, not an object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(nil, []byte(tt.payload))
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("Decode error = %#v, want *DecodeError", err)
			}
			if !strings.HasPrefix(de.Reason, tt.reason) || de.Error() != de.Reason {
				t.Errorf("reason = %q (Error %q), want prefix %q", de.Reason, de.Error(), tt.reason)
			}
		})
	}
}

// TestDecodeWithinSerdeLimits checks the other side of serde_json's limits:
// 127 levels, and numbers that a float64 holds or that read as 0.
func TestDecodeWithinSerdeLimits(t *testing.T) {
	for name, payload := range map[string]string{
		"127 levels with the envelope": `{"data":` + strings.Repeat("[", 126) + strings.Repeat("]", 126) + `}`,
		"127 nested objects":           strings.Repeat(`{"a":`, 127) + "1" + strings.Repeat("}", 127),
		"1e300":                        `{"data":{"n":1e300,"m":-1e300}}`,
		"a 300-digit integer":          `{"data":{"n":1` + strings.Repeat("0", 299) + `}}`,
		"1e-400 reads as 0":            `{"data":{"n":1e-400}}`,
		"0e400 is 0":                   `{"data":{"n":0e400}}`,
		"brackets in strings":          `{"id":"` + strings.Repeat("[", 200) + `"}`,
	} {
		if _, err := Decode(nil, []byte(payload)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	// In binary mode the payload is the data, one level inside the event it
	// stands for: 127 levels of it are one too many.
	h := map[string][]string{"ce-specversion": {"1.0"}}
	deep := strings.Repeat("[", 127) + strings.Repeat("]", 127)
	if ev, err := Decode(h, []byte(deep)); err != nil || ev.Data != nil {
		t.Errorf("binary data 127 deep: data %q, error %v; want no data", ev.Data, err)
	}
	if ev, err := Decode(h, []byte(deep[1:len(deep)-1])); err != nil || ev.Data == nil {
		t.Errorf("binary data 126 deep: data %q, error %v; want data", ev.Data, err)
	}
}

func TestDecodeDataDoesNotAliasPayload(t *testing.T) {
	payload := []byte(`{"data":{"cellId":"abc"}}`)
	ev, err := Decode(nil, payload)
	if err != nil {
		t.Fatal(err)
	}
	for i := range payload {
		payload[i] = 'X'
	}
	if string(ev.Data) != `{"cellId":"abc"}` {
		t.Errorf("Data changed with the payload buffer: %q", ev.Data)
	}
	if got, _ := ev.DataString("cellId"); got != "abc" {
		t.Errorf("DataString changed with the payload buffer: %q", got)
	}
}

func TestDecodeDataBase64(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		name    string
		members string // members after "type"
		want    string // Data; "" means none
		cellID  string // DataString("cellId"); "" means none
	}{
		{"JSON object", `"data_base64":"` + b64(`{"cellId":"b"}`) + `"`, `{"cellId":"b"}`, "b"},
		{"surrounding whitespace is trimmed", `"data_base64":"` + b64(" \n{\"cellId\":\"b\"}\t ") + `"`, `{"cellId":"b"}`, "b"},
		{"JSON that is not an object has no members", `"data_base64":"` + b64(`["cellId"]`) + `"`, `["cellId"]`, ""},
		{"JSON string", `"data_base64":"` + b64(`"x"`) + `"`, `"x"`, ""},
		{"data wins over data_base64", `"data":{"cellId":"a"},"data_base64":"` + b64(`{"cellId":"b"}`) + `"`, `{"cellId":"a"}`, "a"},
		{"data null still wins", `"data_base64":"` + b64(`{"cellId":"b"}`) + `","data":null`, `null`, ""},
		{"bytes that are not JSON are no data", `"data_base64":"` + b64("not json") + `"`, "", ""},
		{"bytes that are not UTF-8 are no data", `"data_base64":"` + b64("\"\xff\"") + `"`, "", ""},
		{"a lone surrogate makes the bytes not JSON", `"data_base64":"` + b64(`{"cellId":"\ud800"}`) + `"`, "", ""},
		{"empty", `"data_base64":""`, "", ""},
		{"not a string", `"data_base64":{"cellId":"b"}`, "", ""},
		{"invalid character", `"data_base64":"eyJj*A=="`, "", ""},
		{"URL alphabet", `"data_base64":"` + base64.URLEncoding.EncodeToString([]byte(`{"a":"??>"}`)) + `"`, "", ""},
		{"missing padding", `"data_base64":"` + strings.TrimRight(b64(`{"a":1}`), "=") + `"`, "", ""},
		{"line break", `"data_base64":"` + b64(`{"cellId":`)[:8] + `\r\n` + b64(`{"cellId":"b"}`)[8:] + `"`, "", ""},
		{"zero padding bits", `"data_base64":"e30="`, `{}`, ""},
		{"non-zero padding bits", `"data_base64":"e31="`, "", ""},
		{"last duplicate wins", `"data_base64":"` + b64(`1`) + `","data_base64":"` + b64(`2`) + `"`, `2`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := Decode(nil, []byte(`{"type":"t",`+tt.members+`}`))
			if err != nil {
				t.Fatal(err)
			}
			if (tt.want == "") != (ev.Data == nil) || string(ev.Data) != tt.want {
				t.Errorf("Data = %q, want %q", ev.Data, tt.want)
			}
			if got, _ := ev.DataString("cellId"); got != tt.cellID {
				t.Errorf("DataString(cellId) = %q, want %q", got, tt.cellID)
			}
		})
	}
}

func TestDataString(t *testing.T) {
	tests := []struct {
		name   string
		data   string // the data member; "" means absent
		keys   []string
		want   string
		wantOK bool
	}{
		{"first key", `{"formationId":"a","formation_id":"b"}`, []string{"formationId", "formation_id"}, "a", true},
		{"falls through absent", `{"formation_id":"b"}`, []string{"formationId", "formation_id"}, "b", true},
		{"falls through non-string", `{"formationId":42,"formation_id":"b"}`, []string{"formationId", "formation_id"}, "b", true},
		{"falls through null", `{"formationId":null,"formation_id":"b"}`, []string{"formationId", "formation_id"}, "b", true},
		{"empty string stops the chain", `{"formationName":"","name":"n"}`, []string{"formationName", "name"}, "", true},
		{"none match", `{"x":"y"}`, []string{"formationId", "formation_id"}, "", false},
		{"no keys", `{"x":"y"}`, nil, "", false},
		{"data absent", ``, []string{"cellId"}, "", false},
		{"data null", `null`, []string{"cellId"}, "", false},
		{"data is a string", `"cellId"`, []string{"cellId"}, "", false},
		{"data is an array", `["cellId","x"]`, []string{"cellId"}, "", false},
		{"data empty object", `{}`, []string{"cellId"}, "", false},
		{"nested members are not top-level", `{"inner":{"cellId":"x"}}`, []string{"cellId"}, "", false},
		{"escaped value", `{"cellId":"a\/b\n"}`, []string{"cellId"}, "a/b\n", true},
		{"escaped key", `{"cell\u0049d":"x"}`, []string{"cellId"}, "x", true},
		{"last duplicate wins", `{"cellId":"a","cellId":"b"}`, []string{"cellId"}, "b", true},
		{"last duplicate wins when not a string", `{"cellId":"a","cellId":1}`, []string{"cellId"}, "", false},
		{"whitespace around members", "{ \"cellId\" :\n \"x\" , \"y\":1 }", []string{"cellId"}, "x", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			payload := `{"type":"t"}`
			if tt.data != "" {
				payload = `{"type":"t","data":` + tt.data + `}`
			}
			ev, err := Decode(nil, []byte(payload))
			if err != nil {
				t.Fatal(err)
			}
			got, ok := ev.DataString(tt.keys...)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("DataString(%q) = %q, %v; want %q, %v", tt.keys, got, ok, tt.want, tt.wantOK)
			}
			// An Event built by hand must read the same as a decoded one.
			manual := Event{Data: ev.Data}
			if g, o := manual.DataString(tt.keys...); g != got || o != ok {
				t.Errorf("hand-built DataString = %q, %v; decoded gave %q, %v", g, o, got, ok)
			}
		})
	}
}

func TestDataInt64(t *testing.T) {
	tests := []struct {
		name   string
		value  string // JSON value of exitCode; "" means absent
		want   int64
		wantOK bool
	}{
		{"zero", `0`, 0, true},
		{"positive", `3`, 3, true},
		{"negative", `-3`, -3, true},
		{"above int32", `4294967297`, 4294967297, true},
		{"int64 max", `9223372036854775807`, 9223372036854775807, true},
		{"int64 min", `-9223372036854775808`, -9223372036854775808, true},
		{"above int64", `9223372036854775808`, 0, false},
		{"below int64", `-9223372036854775809`, 0, false},
		{"beyond u64", `123456789012345678901234567890`, 0, false},
		{"negative zero is a float in serde_json", `-0`, 0, false},
		{"fraction", `3.0`, 0, false},
		{"fractional", `1.5`, 0, false},
		{"exponent", `3e0`, 0, false},
		{"capital exponent", `3E2`, 0, false},
		{"string", `"3"`, 0, false},
		{"null", `null`, 0, false},
		{"boolean", `true`, 0, false},
		{"object", `{"v":3}`, 0, false},
		{"absent", ``, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := `{"cellId":"c"}`
			if tt.value != "" {
				data = `{"cellId":"c","exitCode":` + tt.value + `}`
			}
			ev, err := Decode(nil, []byte(`{"data":`+data+`}`))
			if err != nil {
				t.Fatal(err)
			}
			got, ok := ev.DataInt64("exitCode")
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("DataInt64 = %d, %v; want %d, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
	if _, ok := (Event{Data: json.RawMessage(`[3]`)}).DataInt64("exitCode"); ok {
		t.Error("DataInt64 on non-object data reported a value")
	}
	if _, ok := (Event{Data: json.RawMessage(`{"exitCode":3`)}).DataInt64("exitCode"); ok {
		t.Error("DataInt64 on invalid hand-built data reported a value")
	}
}

// oracle decodes with encoding/json maps, the slow and obviously-correct way,
// so the fuzz test can hold the hand-written scanner to it.
type oracle struct {
	ok       bool
	envelope map[string]json.RawMessage
	rawData  json.RawMessage
}

func decodeOracle(payload []byte) oracle {
	if !utf8.Valid(payload) || hasLoneSurrogate(payload) {
		return oracle{}
	}
	var env map[string]json.RawMessage
	if err := json.Unmarshal(payload, &env); err != nil || env == nil || !withinSerde(payload, 0) {
		return oracle{}
	}
	return oracle{ok: true, envelope: env, rawData: oracleData(env)}
}

// oracleData returns the event's data: the data member, else data_base64
// when it is the canonical base64 (it survives a round trip) of JSON.
func oracleData(env map[string]json.RawMessage) json.RawMessage {
	if d, present := env["data"]; present {
		return d
	}
	var s string
	if err := json.Unmarshal(env["data_base64"], &s); err != nil {
		return nil
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || base64.StdEncoding.EncodeToString(b) != s {
		return nil
	}
	return oracleJSON(b)
}

// oracleJSON returns b, trimmed, when it is JSON that serde_json would read.
func oracleJSON(b []byte) json.RawMessage {
	if !utf8.Valid(b) || hasLoneSurrogate(b) || !json.Valid(b) || !withinSerde(b, 1) {
		return nil
	}
	return bytes.TrimSpace(b)
}

// withinSerde is the oracle for beyondSerde: encoding/json refuses numbers
// beyond float64 when it decodes into any, and the depth is counted on the
// decoded tree.
func withinSerde(b []byte, depth int) bool {
	var v any
	return json.Unmarshal(b, &v) == nil && depth+nesting(v) <= 127
}

func nesting(v any) int {
	deepest := 0
	switch v := v.(type) {
	case []any:
		for _, e := range v {
			deepest = max(deepest, nesting(e))
		}
	case map[string]any:
		for _, e := range v {
			deepest = max(deepest, nesting(e))
		}
	default:
		return 0
	}
	return deepest + 1
}

// escapeRE matches one JSON escape; applied left to right it splits a JSON
// text's escapes the way a decoder does.
var escapeRE = regexp.MustCompile(`\\(u[0-9a-fA-F]{4}|[^u])`)

// hasLoneSurrogate is the oracle for loneSurrogate: a regular expression and
// unicode/utf16 rather than a hand-written scan.
func hasLoneSurrogate(text []byte) bool {
	var units []uint16
	flush := func() bool {
		for i := 0; i < len(units); i++ {
			r := rune(units[i])
			if !utf16.IsSurrogate(r) {
				continue
			}
			if i+1 < len(units) && utf16.DecodeRune(r, rune(units[i+1])) != unicode.ReplacementChar {
				i++
				continue
			}
			return true
		}
		units = units[:0]
		return false
	}
	last := -1
	for _, m := range escapeRE.FindAllSubmatchIndex(text, -1) {
		if m[0] != last && flush() { // a gap: the run of \u escapes ended
			return true
		}
		last = m[1]
		if text[m[2]] != 'u' {
			if flush() {
				return true
			}
			continue
		}
		u, _ := strconv.ParseUint(string(text[m[2]+1:m[3]]), 16, 16)
		units = append(units, uint16(u))
	}
	return flush()
}

func oracleString(raw json.RawMessage) string {
	var s string
	if len(raw) == 0 || raw[0] != '"' {
		return ""
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return ""
	}
	return s
}

func FuzzDecode(f *testing.F) {
	structured := []string{
		samplePayload,
		`{}`, `[]`, `[1,2,3]`, `null`, `"x"`, `42`, `true`, ``, `{`, `{"a":}`,
		"not json at all",
		`{"type": 42, "data": "str"}`,
		`{"type": "dev.cellos.events.cell.lifecycle.v1.started", "data": {"cellId": "trunc`,
		`{"typ\u0065":"x","data":{"cell\u0049d":"\ud800","exitCode":-0}}`,
		`{"id":"\ud83d\ude00","data":{"cellId":"\\udc00","x":["\uDBFF\uDFFF\u00e9"]}}`,
		`{"id":"\ud83d\ud83d\ude00"}`, `{"id":"\ude00\ud83d"}`, `{"\udfff":1}`,
		`{"data":{"exitCode":2147483648,"a":[{"}":"]"}],"b":"\\\""}}`,
		`{"time":"2026-11-12T00:42:22.5+01:00","time":null}`,
		`{"time":"2026-11-12t00:42:22.5z"}`,
		`{"type":"t","data_base64":"eyJjZWxsSWQiOiJiIn0="}`,
		`{"data_base64":"IFsxXSA=","data":null}`, `{"data_base64":"e31="}`, `{"data_base64":"bm90IGpzb24="}`,
		"{\"type\":\"\xff\"}",
	}
	for _, s := range structured {
		f.Add("", []byte(s))
	}
	binary := []struct{ header, payload string }{
		{"ce-specversion: 1.0\nce-type: dev.cellos.events.cell.lifecycle.v1.started\nce-id: a%20b\nce-time: 2026-11-12t00:42:22z\nContent-Type: application/json", ` {"cellId":"c","exitCode":3} `},
		{"CE-SPECVERSION: 1.0\nce-subject: \"urn:uuid:\\\"x\"\nce-Subject: %22", "not json"},
		{"ce-specversion: 1.0\ncontent-type: application/cloudevents+json", samplePayload},
		{"ce-specversion: 1.0\nce-id: %C0%A0", `{"cellId":"\ud800"}`},
		{"ce-specversion: 1.0\nce-type: a\nCE-TYPE: b", `[]`},
		{"ce-specversion: 1.0\nce-type: a\nce-type: a \t", "\xff"},
	}
	for _, m := range binary {
		f.Add(m.header, []byte(m.payload))
	}
	f.Fuzz(func(t *testing.T, headerText string, payload []byte) {
		header := parseHeaderBlock(headerText)
		for name := range header {
			if !isASCII(name) {
				// The oracles below fold case with strings.ToLower, which
				// is only ASCII folding on ASCII; the table tests cover
				// names that are not.
				t.Skip()
			}
		}
		ev, err := Decode(header, payload)
		if err != nil {
			if _, ok := err.(*DecodeError); !ok {
				t.Fatalf("error %T (%v), want *DecodeError", err, err)
			}
		}
		if oracleIsBinary(header) {
			checkBinary(t, header, payload, ev, err)
		} else {
			checkStructured(t, payload, ev, err)
		}

		// Header names are case-insensitive: the message with every name in
		// upper case (and so some merged) decodes to the same event.
		upper := map[string][]string{}
		for k, v := range header {
			upper[strings.ToUpper(k)] = append(upper[strings.ToUpper(k)], v...)
		}
		ev2, err2 := Decode(upper, payload)
		if (err == nil) != (err2 == nil) || err == nil && !sameEvent(ev, ev2) {
			t.Fatalf("upper-case header names changed the decode: %+v (%v), then %+v (%v)", ev, err, ev2, err2)
		}
	})
}

// parseHeaderBlock reads the fuzzer's header text, one "name: value" a line,
// as NATS hands a header over: the value's leading spaces dropped. Text
// without any such line is no header.
func parseHeaderBlock(text string) map[string][]string {
	var header map[string][]string
	for line := range strings.Lines(text) {
		name, value, ok := strings.Cut(strings.TrimRight(line, "\r\n"), ":")
		if !ok || name == "" {
			continue
		}
		if header == nil {
			header = map[string][]string{}
		}
		header[name] = append(header[name], strings.TrimLeft(value, " \t"))
	}
	return header
}

func isASCII(s string) bool {
	for i := range len(s) {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// oracleIsBinary says whether a message is in binary content mode, by the
// rule documented on isBinary, spelled out with lower-case comparisons.
func oracleIsBinary(header map[string][]string) bool {
	binary := false
	for k, values := range header {
		switch strings.ToLower(k) {
		case "ce-specversion":
			binary = true
		case "content-type":
			for _, v := range values {
				if strings.HasPrefix(strings.ToLower(strings.TrimLeft(v, " \t")), "application/cloudevents") {
					return false
				}
			}
		}
	}
	return binary
}

// checkStructured holds a structured-mode decode to encoding/json.
func checkStructured(t *testing.T, payload []byte, ev Event, err error) {
	t.Helper()
	want := decodeOracle(payload)
	if err != nil {
		if want.ok {
			t.Fatalf("Decode rejected %q (%v) but encoding/json reads an object", payload, err)
		}
		return
	}
	if !want.ok {
		t.Fatalf("Decode accepted %q but encoding/json does not read an object", payload)
	}
	for key, got := range map[string]string{"id": ev.ID, "type": ev.Type, "subject": ev.Subject} {
		if w := oracleString(want.envelope[key]); got != w {
			t.Fatalf("%s = %q, encoding/json says %q", key, got, w)
		}
	}
	checkData(t, ev, want.rawData)
}

// checkBinary holds a binary-mode decode to the binding's rules where they
// are simple to state independently: a value without quotes or percent signs
// is itself, trimmed; several values of one attribute must agree; the body
// is the data when it is JSON.
func checkBinary(t *testing.T, header map[string][]string, payload []byte, ev Event, err error) {
	t.Helper()
	values := map[string][]string{} // by lower-case attribute name
	plain := true
	for k, vs := range header {
		name, ok := strings.CutPrefix(strings.ToLower(k), "ce-")
		if !ok {
			continue
		}
		for _, v := range vs {
			plain = plain && !strings.ContainsAny(v, `"%`) && utf8.ValidString(v)
			values[name] = append(values[name], strings.Trim(v, " \t"))
		}
	}
	agree := true
	for _, vs := range values {
		for _, v := range vs {
			agree = agree && v == vs[0]
		}
	}
	if err != nil {
		if plain && agree {
			t.Fatalf("Decode rejected plain, agreeing headers %q: %v", header, err)
		}
		return
	}
	if !agree {
		t.Fatalf("Decode accepted disagreeing headers %q", header)
	}
	if plain {
		first := func(name string) string {
			if vs := values[name]; len(vs) > 0 {
				return vs[0]
			}
			return ""
		}
		for name, got := range map[string]string{"id": ev.ID, "type": ev.Type, "subject": ev.Subject} {
			if w := first(name); got != w {
				t.Fatalf("%s = %q, headers say %q", name, got, w)
			}
		}
	}
	checkData(t, ev, oracleJSON(payload))
}

// checkData holds the event's data and its members to want, decoded with
// encoding/json.
func checkData(t *testing.T, ev Event, want json.RawMessage) {
	t.Helper()
	if (want != nil) != (ev.Data != nil) || !bytes.Equal(want, ev.Data) {
		t.Fatalf("Data = %q, encoding/json says %q", ev.Data, want)
	}
	var members map[string]json.RawMessage
	_ = json.Unmarshal(want, &members) // not an object: no members
	for key, raw := range members {
		w := oracleString(raw)
		wOK := len(raw) > 0 && raw[0] == '"'
		if got, ok := ev.DataString(key); got != w || ok != wOK {
			t.Fatalf("DataString(%q) = %q, %v; encoding/json says %q, %v", key, got, ok, w, wOK)
		}
		var n json.Number
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		_ = dec.Decode(&n)
		isInt := n.String() == string(raw) && n.String() != "-0" && !bytes.ContainsAny(raw, ".eE")
		if i, err := n.Int64(); isInt && err == nil {
			if got, ok := ev.DataInt64(key); !ok || got != i {
				t.Fatalf("DataInt64(%q) = %d, %v; want %d from %q", key, got, ok, i, raw)
			}
		}
		if got, ok := ev.DataInt64(key); ok {
			if string(n) != string(raw) || n.String() == "-0" {
				t.Fatalf("DataInt64(%q) = %d from non-integer %q", key, got, raw)
			}
			if i, err := n.Int64(); err != nil || i != got {
				t.Fatalf("DataInt64(%q) = %d, but %q reads as %d (%v)", key, got, raw, i, err)
			}
		}
	}
	if len(members) == 0 {
		if _, ok := ev.DataString("cellId", "formationId", ""); ok {
			t.Fatalf("DataString found a member in data without members: %q", ev.Data)
		}
	}
}

func sameEvent(a, b Event) bool {
	return a.ID == b.ID && a.Type == b.Type && a.Subject == b.Subject &&
		(a.Time == nil) == (b.Time == nil) && (a.Time == nil || a.Time.Equal(*b.Time)) &&
		(a.Data == nil) == (b.Data == nil) && bytes.Equal(a.Data, b.Data)
}

func BenchmarkDecode(b *testing.B) {
	payload := []byte(samplePayload)
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		ev, err := Decode(nil, payload)
		if err != nil {
			b.Fatal(err)
		}
		// Read data the way the fold does, so the benchmark covers the lookups.
		if _, ok := ev.DataString("cellId"); !ok {
			b.Fatal("no cellId")
		}
		ev.DataString("specId")
		ev.DataString("runId")
		ev.DataString("formationId")
		ev.DataString("outcome")
		ev.DataInt64("exitCode")
	}
}
