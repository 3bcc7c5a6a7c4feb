package cloudevent

import (
	"encoding/json"
	"time"
)

// Envelope is a CloudEvent as cellos and the operator write it: in the JSON
// event format (structured content mode), with JSON data. Event is what is
// read; Envelope is what is written, so that every writer spells the
// attributes alike.
type Envelope struct {
	SpecVersion     string `json:"specversion"`
	ID              string `json:"id"`
	Source          string `json:"source"`
	Type            string `json:"type"`
	Subject         string `json:"subject"`
	Time            string `json:"time"`
	DataContentType string `json:"datacontenttype"`
	Data            any    `json:"data"`
}

// idPrefix makes an event id a URN, as cellos writes them.
const idPrefix = "urn:cellos:event:"

// NewEnvelope is the CloudEvents 1.0 envelope of an event: id is the unique
// part of its URN, t its time (written in RFC 3339, UTC) and data its JSON
// data.
func NewEnvelope(id, source, typ, subject string, t time.Time, data any) Envelope {
	return Envelope{
		SpecVersion:     "1.0",
		ID:              idPrefix + id,
		Source:          source,
		Type:            typ,
		Subject:         subject,
		Time:            t.UTC().Format(time.RFC3339),
		DataContentType: "application/json",
		Data:            data,
	}
}

// Encode returns the envelope in JSON; it fails only when the data cannot
// be encoded.
func (e Envelope) Encode() ([]byte, error) {
	return json.Marshal(e)
}
