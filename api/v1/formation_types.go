package v1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// FormationPhase is the lifecycle phase of a formation, as the last formation
// event in stream order set it.
// +kubebuilder:validation:Enum=Pending;Running;Succeeded;Failed;Cancelled
type FormationPhase string

// The formation phases, in the order a formation normally passes through them.
const (
	FormationPending   FormationPhase = "Pending"
	FormationRunning   FormationPhase = "Running"
	FormationSucceeded FormationPhase = "Succeeded"
	FormationFailed    FormationPhase = "Failed"
	FormationCancelled FormationPhase = "Cancelled"
)

// FormationSpec declares a formation as a cellos formation document: a set of
// members, one of which coordinates, each other one authorized by a member.
// +kubebuilder:validation:XValidation:rule="self.members.exists(m, m.name == self.coordinator)",message="coordinator must name one of the members",fieldPath=".coordinator"
// +kubebuilder:validation:XValidation:rule="self.members.all(m, m.name == self.coordinator || has(m.authorizedBy))",message="every member other than the coordinator needs authorizedBy, naming the member that admits it",fieldPath=".members"
// +kubebuilder:validation:XValidation:rule="self.members.all(m, !has(m.authorizedBy) || (m.authorizedBy != m.name && self.members.exists(o, o.name == m.authorizedBy)))",message="authorizedBy must name another member of the formation, not the member itself",fieldPath=".members"
type FormationSpec struct {
	// coordinator is the name of the member that leads the formation. It must
	// be one of members.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Coordinator string `json:"coordinator"`

	// members are the formation's participants. Each name is unique; every
	// member but the coordinator names in authorizedBy the member that
	// admits it.
	// +required
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:XValidation:rule="self.all(m, self.exists_one(o, o.name == m.name))",message="member names must be unique"
	Members []FormationMember `json:"members"`
}

// FormationMember is one participant of a formation.
type FormationMember struct {
	// name identifies the member within its formation: a DNS label, such as
	// "planner" or "worker-1".
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// authorizedBy is the name of the member that admits this one. Every
	// member but the coordinator needs it, and it must name another member.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	AuthorizedBy string `json:"authorizedBy,omitempty"`
}

// FormationStatus mirrors the projection of the cellos event stream for one
// formation. The operator owns it; a hand edit is overwritten.
type FormationStatus struct {
	// formationId is the formation's UUID, lowercase and hyphenated, exactly
	// as the stream identifies it.
	// +optional
	// +kubebuilder:validation:MaxLength=36
	FormationID string `json:"formationId,omitempty"`

	// formationName is the human name the stream last gave the formation.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	FormationName string `json:"formationName,omitempty"`

	// phase is the lifecycle phase set by the last formation event in stream order.
	// +optional
	Phase FormationPhase `json:"phase,omitempty"`

	// cells reads "running/total" over the Cells correlated to this
	// formation, for kubectl get.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	Cells string `json:"cells,omitempty"`

	// cellCounts counts the cells correlated to this formation, by state,
	// as the stream tells them: a Cell deleted after its TTL still counts.
	// +optional
	CellCounts CellCounts `json:"cellCounts,omitzero"`

	// document is the data of the first event seen for this formation: the
	// formation document as the stream carried it.
	// +optional
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	Document *runtime.RawExtension `json:"document,omitempty"`

	// finishedAt is when the stream stored the event that made the phase
	// final (Succeeded, Failed or Cancelled), to the second. A Formation
	// the operator created from the stream is deleted, with its Cells,
	// --formation-ttl after it; a declared one is never deleted by the
	// operator.
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

	// observedGeneration is the metadata.generation this status was written for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions follow kstatus: Ready, Reconciling, Stalled, plus Complete
	// and Degraded.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// CellCounts counts a formation's Cells by state.
type CellCounts struct {
	// total is the number of Cells correlated to the formation.
	Total int32 `json:"total"`
	// pending is the number of those Cells seen but not yet started.
	Pending int32 `json:"pending"`
	// running is the number of those Cells that run.
	Running int32 `json:"running"`
	// destroyed is the number of those Cells that were destroyed.
	Destroyed int32 `json:"destroyed"`
}

// Formation is a group of cells that run together under one coordinator.
//
// A Formation with a spec is declared: written by a user, often from Git. A
// Formation without a spec is observed: the operator created it when the
// event stream first named its formation. Either way the status mirrors the
// stream, and label cellos.dev/formation-id carries the formation's UUID.
//
// A declared Formation's spec is what the operator published: it cannot
// change, nor be removed, once set.
// +kubebuilder:object:root=true
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.spec) || (has(self.spec) && self.spec == oldSelf.spec)",message="spec is immutable once declared: create a new Formation to change it"
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Namespaced,categories=cellos,shortName=fm;fms
// +kubebuilder:printcolumn:name="Formation Name",type=string,JSONPath=`.status.formationName`,description="The name the stream gives the formation"
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Cells",type=string,JSONPath=`.status.cells`,description="Running cells over all cells"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Formation ID",type=string,JSONPath=`.status.formationId`,priority=1
// +kubebuilder:printcolumn:name="Last Seq",type=integer,JSONPath=`.status.lastAppliedSequence`,priority=1
type Formation struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec declares the formation. It is absent on a Formation the operator
	// observed in the stream rather than one a user declared.
	// +optional
	Spec *FormationSpec `json:"spec,omitempty"`

	// status is the projection of the event stream for this formation.
	// +optional
	Status FormationStatus `json:"status,omitzero"`
}

// FormationList is a list of Formations.
// +kubebuilder:object:root=true
type FormationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Formation `json:"items"`
}
