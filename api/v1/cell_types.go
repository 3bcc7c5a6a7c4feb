package v1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CellState is the lifecycle state of a cell, as its lifecycle events set it.
// +kubebuilder:validation:Enum=Pending;Running;Destroyed
type CellState string

// The cell states. A cell first seen in the stream is Pending until started.
const (
	CellPending   CellState = "Pending"
	CellRunning   CellState = "Running"
	CellDestroyed CellState = "Destroyed"
)

// Cell outcomes that the conditions read; the stream may carry others.
const (
	OutcomeSucceeded = "succeeded"
	OutcomeFailed    = "failed"
)

// CellStatus mirrors the projection of the cellos event stream for one cell.
// The operator owns it; a hand edit is overwritten.
type CellStatus struct {
	// cellId is the cell's id exactly as the stream carries it in data.cellId.
	// The object's name is derived from it and may differ.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	CellID string `json:"cellId,omitempty"`

	// specId is the execution cell spec the cell runs, from its first event
	// that names one.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	SpecID string `json:"specId,omitempty"`

	// runId is the supervisor's run id, from the first event that carries
	// one, even empty.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	RunID string `json:"runId,omitempty"`

	// formationId is the UUID of the formation the cell belongs to, when its
	// events name one.
	// +optional
	// +kubebuilder:validation:MaxLength=36
	FormationID string `json:"formationId,omitempty"`

	// state is Pending until the cell starts, Running once it starts, and
	// Destroyed once it is torn down.
	// +optional
	State CellState `json:"state,omitempty"`

	// startedAt is the time of the cell's last started event.
	// +optional
	StartedAt *metav1.Time `json:"startedAt,omitempty"`

	// destroyedAt is the time of the cell's last destroyed event.
	// +optional
	DestroyedAt *metav1.Time `json:"destroyedAt,omitempty"`

	// outcome is how the cell ended, as its destroyed event says: for
	// example succeeded or failed.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Outcome string `json:"outcome,omitempty"`

	// exitCode is the exit code of the cell's command, once reported.
	// +optional
	ExitCode *int32 `json:"exitCode,omitempty"`

	// finishedAt is when the stream stored the event that destroyed the
	// cell, to the second. The Cell is deleted --cell-ttl after it.
	// +optional
	FinishedAt *metav1.Time `json:"finishedAt,omitempty"`

	// lastAppliedSequence is the highest stream sequence folded into this
	// status. On replay, events at or below it are skipped for this object.
	// +optional
	LastAppliedSequence int64 `json:"lastAppliedSequence,omitempty"`
	// streamStamp ties lastAppliedSequence to the stream and the object it
	// was projected from (a digest of the stream's name and creation time,
	// the id and the sequence). The operator trusts a lastAppliedSequence
	// ahead of its own projection only under a valid stamp: a status of a
	// recreated stream, or one edited by hand, is overwritten, while one
	// written by a replica further along the same stream is never moved back.
	// +optional
	// +kubebuilder:validation:MaxLength=24
	StreamStamp string `json:"streamStamp,omitempty"`
	// observedGeneration is the generation the conditions were computed for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions follow kstatus: Ready, Reconciling and Stalled.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// Cell is one workload that a cellos supervisor runs, as its lifecycle events
// describe it. The operator creates Cells from the stream; they have no spec.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,categories=cellos,shortName=cl
// +kubebuilder:printcolumn:name="State",type=string,JSONPath=`.status.state`
// +kubebuilder:printcolumn:name="Outcome",type=string,JSONPath=`.status.outcome`
// +kubebuilder:printcolumn:name="Exit Code",type=integer,JSONPath=`.status.exitCode`
// +kubebuilder:printcolumn:name="Formation",type=string,JSONPath=`.status.formationId`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Cell ID",type=string,JSONPath=`.status.cellId`,priority=1
// +kubebuilder:printcolumn:name="Spec",type=string,JSONPath=`.status.specId`,priority=1
type Cell struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// status is the projection of the event stream for this cell.
	// +optional
	Status CellStatus `json:"status,omitzero"`
}

// CellList is a list of Cells.
// +kubebuilder:object:root=true
type CellList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Cell `json:"items"`
}
