package reliability

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/jetstream"
	"cellos.dev/cellos-operator/internal/simulator"
	"cellos.dev/cellos-operator/internal/store"
)

// msg is one message to publish, and what kind of message it is.
type msg struct {
	subject string
	header  nats.Header
	data    []byte
	// kind is "valid" for an event as cellos writes it, another word for a
	// valid event made awkward (binary mode, a duplicate, a respelled
	// formation id, a cell id that is no object name), and "poison/..." for a
	// payload the fold must reject or ignore.
	kind string
}

func (m msg) poison() bool { return strings.HasPrefix(m.kind, "poison/") }

// mix says how much of each awkward kind a generated stream holds, as
// fractions of its messages; the rest are the simulator's events as cellos
// writes them.
type mix struct {
	poison, duplicate, binary, respelled, awkwardID float64
}

// adversarial is the mix of the crash and outage scenarios: a tenth of the
// messages are poison, and a tenth are valid events made awkward.
var adversarial = mix{poison: 0.10, duplicate: 0.03, binary: 0.03, respelled: 0.02, awkwardID: 0.02}

// generate makes a reproducible stream of n messages: the simulator's
// realistic lifecycles (several formations in flight, failures,
// degradations) with the mix of awkward and poison messages.
func generate(seed uint64, n int, mx mix) []msg {
	gen := simulator.NewGenerator(simulator.Config{
		Seed: seed, CellsPerFormation: 3, FailureRate: 0.2, DegradedRate: 0.2, InFlight: 8,
		Start: time.Date(2027, 5, 1, 8, 0, 0, 0, time.UTC),
	})
	rng := rand.New(rand.NewPCG(seed, 0x7265))
	var history []msg
	next := func() msg {
		ev, _ := gen.Next()
		m := msg{subject: ev.Subject, data: ev.Payload, kind: "valid"}
		history = append(history, m)
		if len(history) > 2000 {
			history = history[1000:]
		}
		return m
	}
	out := make([]msg, 0, n)
	for len(out) < n {
		r := rng.Float64()
		switch {
		case r < mx.poison:
			out = append(out, poisonMessage(rng))
		case r < mx.poison+mx.duplicate && len(history) > 0:
			m := history[rng.IntN(len(history))]
			m.kind = "duplicate"
			out = append(out, m)
		case r < mx.poison+mx.duplicate+mx.binary:
			out = append(out, toBinary(next()))
		case r < mx.poison+mx.duplicate+mx.binary+mx.respelled:
			out = append(out, respell(rng, next()))
		case r < mx.poison+mx.duplicate+mx.binary+mx.respelled+mx.awkwardID:
			out = append(out, awkwardCellEvent(rng))
		default:
			out = append(out, next())
		}
	}
	return out
}

// envelope decodes a simulator event's JSON envelope.
func envelope(data []byte) map[string]any {
	var env map[string]any
	if err := json.Unmarshal(data, &env); err != nil {
		panic(err)
	}
	return env
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// toBinary moves an event to binary content mode: its attributes in ce-
// headers, its data as the payload.
func toBinary(m msg) msg {
	env := envelope(m.data)
	h := nats.Header{}
	h.Set("ce-specversion", "1.0")
	for _, a := range []string{"id", "source", "type", "time", "subject"} {
		if s, ok := env[a].(string); ok {
			h.Set("ce-"+a, s)
		}
	}
	h.Set("Content-Type", "application/json")
	return msg{subject: m.subject, header: h, data: mustJSON(env["data"]), kind: "binary"}
}

// respell writes a formation event's id in another spelling the reference
// accepts: upper case, braced, or as a URN. It must land on the same object.
func respell(rng *rand.Rand, m msg) msg {
	env := envelope(m.data)
	data, _ := env["data"].(map[string]any)
	id, _ := data["formationId"].(string)
	if id == "" {
		return m
	}
	switch rng.IntN(3) {
	case 0:
		data["formationId"] = strings.ToUpper(id)
	case 1:
		data["formationId"] = "{" + id + "}"
	default:
		data["formationId"] = "urn:uuid:" + id
	}
	return msg{subject: m.subject, data: mustJSON(env), kind: "respelled"}
}

// awkwardIDs are cell ids that are valid in the stream but are no valid
// object name: the operator must give each an object of its own.
var awkwardIDs = []string{
	"CELL-Upper-Case",
	"cell-upper-case",
	strings.Repeat("x", 300),
	strings.Repeat("y", 299) + "Z",
	"zelle-ä-ß-日本-🚀",
	"a/b/../c",
	"a/b/c",
	"with space",
	"..",
	".",
	"-leading-dash",
	"trailing-dash-",
	"UPPER/with/SLASH",
	"tab\tand\nnewline",
	"",
}

// awkwardCellEvent is a valid cell event on one of the awkward ids.
func awkwardCellEvent(rng *rand.Rand) msg {
	id := awkwardIDs[rng.IntN(len(awkwardIDs))]
	types := []string{fold.TypeCellStarted, fold.TypeCellCommandCompleted, fold.TypeCellDestroyed}
	data := map[string]any{"cellId": id, "specId": "spec-awkward", "runId": fmt.Sprintf("run-%d", rng.IntN(5))}
	typ := types[rng.IntN(len(types))]
	switch typ {
	case fold.TypeCellCommandCompleted:
		data["exitCode"] = rng.IntN(3)
	case fold.TypeCellDestroyed:
		data["outcome"] = []string{"succeeded", "failed"}[rng.IntN(2)]
	}
	env := map[string]any{
		"specversion": "1.0", "id": fmt.Sprintf("urn:cellos:event:awkward-%d", rng.Uint64()),
		"source": "/cellos/supervisor/host-9", "type": typ,
		"time": time.Date(2027, 5, 1, 9, rng.IntN(60), rng.IntN(60), 0, time.UTC).Format(time.RFC3339),
		"data": data,
	}
	return msg{subject: "cellos.events.cell.awkward", data: mustJSON(env), kind: "awkward-id"}
}

// poisonMessage is one payload the fold must reject or ignore, without
// panicking and without blocking the stream.
func poisonMessage(rng *rand.Rand) msg {
	p := func(kind string, data []byte) msg {
		return msg{subject: "cellos.events.poison", data: data, kind: "poison/" + kind}
	}
	valid := `{"specversion":"1.0","id":"urn:cellos:event:p","source":"/cellos/supervisor/host-1","type":"dev.cellos.events.cell.lifecycle.v1.started","time":"2027-05-01T08:00:00Z","data":{"cellId":"poison-cell","specId":"s","formationId":"0b0e8f4c-7d1a-4c2e-9f3b-2a6d8e1c4b7a"}}`
	// Huge payloads are 2 in 82: the stream must stay within the test
	// server's store. The eight other kinds share the rest.
	k := rng.IntN(82)
	kind := 2
	if k >= 2 {
		kind = []int{0, 1, 3, 4, 5, 6, 7, 8}[(k-2)/10]
	}
	switch kind {
	case 0: // not JSON at all
		b := make([]byte, 1+rng.IntN(200))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		if b[0] == '{' || b[0] == '[' {
			b[0] = '#'
		}
		return p("not-json", b)
	case 1: // a valid event cut short
		return p("truncated", []byte(valid[:1+rng.IntN(len(valid)-2)]))
	case 2: // huge: up to 900 KiB, under the server's 1 MiB payload limit
		size := 64<<10 + rng.IntN(836<<10)
		if rng.IntN(2) == 0 {
			return p("huge-garbage", []byte(strings.Repeat("\x00garbage", size/8)))
		}
		return p("huge-unclosed", []byte(`{"type":"dev.cellos.events.cell.lifecycle.v1.started","data":{"cellId":"`+strings.Repeat("h", size)))
	case 3: // deeply nested
		depth := 1000 + rng.IntN(100000)
		return p("deep", []byte(strings.Repeat("[", depth)+strings.Repeat("]", depth)))
	case 4: // JSON, but not an object
		return p("not-an-object", []byte([]string{`[]`, `null`, `"str"`, `42`, `true`, `[{"type":"x"}]`, ``, ` `}[rng.IntN(8)]))
	case 5: // fields of the wrong types
		return p("wrong-types", []byte([]string{
			`{"type":42,"data":{"cellId":"c"}}`,
			`{"type":"dev.cellos.events.cell.lifecycle.v1.started","data":"not an object"}`,
			`{"type":"dev.cellos.events.cell.lifecycle.v1.started","data":["cellId","c"]}`,
			`{"type":"dev.cellos.events.cell.lifecycle.v1.started","data":{"cellId":123}}`,
			`{"type":"dev.cellos.events.cell.lifecycle.v1.started","data":{"cellId":null}}`,
			`{"type":"dev.cellos.events.cell.lifecycle.v1.started","data":{"cellId":{"id":"c"}}}`,
			`{"type":"dev.cellos.events.cell.formation.v1.created","data":{"formationId":{}}}`,
			`{"type":"dev.cellos.events.cell.formation.v1.created","data":{"formationId":12345678}}`,
			`{"type":["dev.cellos.events.cell.formation.v1.created"],"data":{"formationId":"0b0e8f4c-7d1a-4c2e-9f3b-2a6d8e1c4b7a"}}`,
			`{"type":"dev.cellos.events.cell.lifecycle.v1.started","data":null}`,
			`{"type":null}`,
			`{"type":"dev.cellos.events.cell.formation.v1.created","data":{"formationId":""}}`,
			`{"type":"dev.cellos.events.cell.formation.v1.","data":{"formationId":"not-even-close"}}`,
		}[rng.IntN(13)]))
	case 6: // formation events whose id is no UUID the reference accepts
		bad := []string{
			"not-a-uuid", "1234", " 0b0e8f4c-7d1a-4c2e-9f3b-2a6d8e1c4b7a", "0b0e8f4c-7d1a-4c2e-9f3b-2a6d8e1c4b7",
			"URN:UUID:0b0e8f4c-7d1a-4c2e-9f3b-2a6d8e1c4b7a", "{0b0e8f4c7d1a4c2e9f3b2a6d8e1c4b7a}",
			"0b0e8f4c-7d1a-4c2e-9f3b-2a6d8e1c4b7g", "0b0e8f4c_7d1a_4c2e_9f3b_2a6d8e1c4b7a",
			"０b0e8f4c-7d1a-4c2e-9f3b-2a6d8e1c4b7", "../../etc/passwd", "FORMATION/With/Slash",
		}
		phases := []string{"created", "running", "completed", "failed"}
		return p("bad-uuid", mustJSON(map[string]any{
			"type": fold.FormationTypePrefix + phases[rng.IntN(len(phases))],
			"data": map[string]any{"formationId": bad[rng.IntN(len(bad))]},
		}))
	case 7: // not UTF-8, or lone surrogates
		return p("bad-utf8", []byte([]string{
			"{\"type\":\"\xff\xfe\",\"data\":{\"cellId\":\"c\"}}",
			`{"type":"dev.cellos.events.cell.lifecycle.v1.started","data":{"cellId":"\ud800"}}`,
			"{\"type\":\"dev.cellos.events.cell.lifecycle.v1.started\",\"data\":{\"cellId\":\"\xc3\x28\"}}",
		}[rng.IntN(3)]))
	default: // binary content mode gone wrong
		h := nats.Header{}
		h.Set("ce-specversion", "1.0")
		switch rng.IntN(3) {
		case 0:
			h.Set("ce-type", "%zz-not-percent-encoded")
		case 1:
			h["ce-type"] = []string{fold.TypeCellStarted, fold.TypeCellDestroyed}
		default:
			h.Set("ce-id", "%C0%A0")
		}
		return msg{subject: "cellos.events.poison", header: h, data: []byte(`{"cellId":"binary-poison"}`), kind: "poison/binary-headers"}
	}
}

// ensureStream creates the stream as the operator would, and returns it.
func ensureStream(tb testing.TB, jsc natsjs.JetStream) store.Stream {
	tb.Helper()
	s, err := jetstream.EnsureStream(context.Background(), jsc, streamName)
	if err != nil {
		tb.Fatal(err)
	}
	info := s.CachedInfo()
	return store.Stream{Name: info.Config.Name, Created: info.Created}
}

// publish sends msgs in order, at most rate a second (0: as fast as the
// server acknowledges), and fails the test on a message not acknowledged.
func publish(tb testing.TB, jsc natsjs.JetStream, msgs []msg, rate float64) {
	tb.Helper()
	if err := publishCtx(context.Background(), jsc, msgs, rate); err != nil {
		tb.Fatal(err)
	}
}

// publishCtx is publish until ctx ends.
func publishCtx(ctx context.Context, jsc natsjs.JetStream, msgs []msg, rate float64) error {
	const window = 256
	var pending []natsjs.PubAckFuture
	await := func(f natsjs.PubAckFuture) error {
		select {
		case <-f.Ok():
			return nil
		case err := <-f.Err():
			return fmt.Errorf("publishing to %s: %w", f.Msg().Subject, err)
		case <-time.After(30 * time.Second):
			return fmt.Errorf("no acknowledgement within 30s")
		}
	}
	begin := time.Now()
	for i, m := range msgs {
		if ctx.Err() != nil {
			break
		}
		if rate > 0 {
			if d := time.Until(begin.Add(time.Duration(float64(i) / rate * float64(time.Second)))); d > 0 {
				time.Sleep(d)
			}
		}
		if len(pending) == window {
			if err := await(pending[0]); err != nil {
				return err
			}
			pending = pending[1:]
		}
		f, err := jsc.PublishMsgAsync(&nats.Msg{Subject: m.subject, Header: m.header, Data: m.data})
		if err != nil {
			return fmt.Errorf("publishing message %d (%s): %w", i, m.kind, err)
		}
		pending = append(pending, f)
	}
	for _, f := range pending {
		if err := await(f); err != nil {
			return err
		}
	}
	return nil
}

// kinds counts messages by kind, for the logs.
func kinds(msgs []msg) map[string]int {
	n := map[string]int{}
	for _, m := range msgs {
		n[m.kind]++
	}
	return n
}

// publishThrough publishes msgs in order at about rate a second, and keeps
// trying each one while the server is away, so that events arrive the
// moment it is back. Each message carries a Nats-Msg-Id, so that a retry
// of one the server stored but did not acknowledge is dropped as a
// duplicate. It returns how many it published.
func publishThrough(ctx context.Context, jsc natsjs.JetStream, msgs []msg, rate float64, run string) (int, error) {
	begin := time.Now()
	for i, m := range msgs {
		if rate > 0 {
			if d := time.Until(begin.Add(time.Duration(float64(i) / rate * float64(time.Second)))); d > 0 {
				select {
				case <-ctx.Done():
					return i, ctx.Err()
				case <-time.After(d):
				}
			}
		}
		h := nats.Header{}
		for k, v := range m.header {
			h[k] = v
		}
		h.Set(natsjs.MsgIDHeader, fmt.Sprintf("%s-%d", run, i))
		for {
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := jsc.PublishMsg(pctx, &nats.Msg{Subject: m.subject, Header: h, Data: m.data})
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return i, ctx.Err()
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return len(msgs), nil
}
