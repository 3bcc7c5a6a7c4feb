package v1

// Condition types follow kstatus, so that kubectl wait and Flux read
// Formations and Cells without custom health checks; Argo CD reads them
// through the health checks in config/argocd.
const (
	// ReadyCondition is True while the object is up: a Formation that runs or
	// has succeeded, a Cell that runs or was destroyed after succeeding.
	ReadyCondition = "Ready"

	// ReconcilingCondition is True while the object has not yet reached a
	// steady state: a Pending Formation or Cell.
	ReconcilingCondition = "Reconciling"

	// StalledCondition is True when the object ended without success and will
	// not recover by itself: a Failed or Cancelled Formation, a Cell destroyed
	// with an outcome other than succeeded.
	StalledCondition = "Stalled"

	// CompleteCondition is True once a Formation has Succeeded.
	CompleteCondition = "Complete"

	// DegradedCondition is True while the last phase event of a Formation was
	// degraded: it runs, short of full strength.
	DegradedCondition = "Degraded"

	// PublishedCondition is on declared Formations that the operator admitted:
	// True once their created event is in the stream, False with the reason
	// while publishing fails.
	PublishedCondition = "Published"

	// DocumentDroppedCondition is True on a Formation whose document, the
	// data of its first event, was larger than status keeps; absent
	// otherwise.
	DocumentDroppedCondition = "DocumentDropped"
)

// Condition reasons name the projected fact that set a condition.
const (
	// DocumentTooLargeReason: the formation's document was over the bound
	// status keeps, and was dropped.
	DocumentTooLargeReason = "DocumentTooLarge"
	// PendingReason: the object was seen in the stream but has not started.
	PendingReason = "Pending"
	// RunningReason: the Formation or Cell runs.
	RunningReason = "Running"
	// SucceededReason: the Formation completed, or the Cell was destroyed with outcome succeeded.
	SucceededReason = "Succeeded"
	// FailedReason: the Formation failed, or the Cell was destroyed with outcome failed.
	FailedReason = "Failed"
	// CancelledReason: the Formation was cancelled.
	CancelledReason = "Cancelled"
	// DestroyedReason: the Cell was destroyed with an outcome other than succeeded or failed.
	DestroyedReason = "Destroyed"
	// DegradedReason: the last formation phase event was degraded.
	DegradedReason = "Degraded"
	// HealthyReason: the last formation phase event was not degraded.
	HealthyReason = "Healthy"
	// AwaitingStreamReason: no event of the stream has named the Formation yet.
	AwaitingStreamReason = "AwaitingStream"
	// AwaitingAdmissionReason: a declared Formation the operator has not yet
	// admitted (given its formation id) or published.
	AwaitingAdmissionReason = "AwaitingAdmission"
	// PublishedReason: the Formation's created event is in the stream.
	PublishedReason = "Published"
	// PublishFailedReason: publishing the Formation's created event failed;
	// the operator retries with backoff.
	PublishFailedReason = "PublishFailed"
	// InvalidSpecReason: the spec breaks an admission rule; nothing is
	// published. Create a corrected Formation.
	InvalidSpecReason = "InvalidSpec"
	// TakeoverRefusedReason: the Formation is labelled with a formation it
	// may not follow: another namespace's, or one deleted with the
	// Formation that declared it.
	TakeoverRefusedReason = "TakeoverRefused"
	// InvalidFormationIDReason: the label cellos.dev/formation-id is not a
	// formation id in canonical form (lower-case, hyphenated), the only form
	// ids are compared in; nothing is published for the Formation.
	InvalidFormationIDReason = "InvalidFormationID"
	// NotFinishedReason: Complete is False because the Formation is still
	// Pending or Running; it may yet succeed.
	NotFinishedReason = "NotFinished"
	// FinishedWithoutSuccessReason: Complete is False for good because the
	// Formation failed or was cancelled.
	FinishedWithoutSuccessReason = "FinishedWithoutSuccess"
)

// Event reasons name what a Kubernetes Event reports. The Events raised on
// a phase change of a Formation take the phase's condition reason above
// (PendingReason, RunningReason, ...); those about publishing take
// PublishedReason, PublishFailedReason and CancelledReason; a spec refused
// at admission takes InvalidSpecReason; and a Formation stalled takes its
// Stalled reason, TakeoverRefusedReason or InvalidFormationIDReason.
const (
	// AdmittedReason: a declared Formation was admitted and given its
	// formation id.
	AdmittedReason = "Admitted"
	// ProjectionRefusedReason: the API server refused to store an object's
	// projection for good, and the operator moved past it.
	ProjectionRefusedReason = "ProjectionRefused"
	// NameCollisionReason: another cell id meets a Cell's name, and is
	// refused.
	NameCollisionReason = "NameCollision"
	// QuotaExceededReason: a ResourceQuota refused to create an object. It
	// is raised once per wait for room, not once per retry.
	QuotaExceededReason = "QuotaExceeded"
	// RejectedEventReason: an event of the stream could not be used and was
	// skipped; raised on the cursor ConfigMap.
	RejectedEventReason = "RejectedEvent"
	// StreamGapReason: sequences are missing from the stream; raised on the
	// cursor ConfigMap.
	StreamGapReason = "StreamGap"
	// StreamRecreatedReason: the stream was deleted and created again under
	// its name, so its sequences number other events; raised on the cursor
	// ConfigMap.
	StreamRecreatedReason = "StreamRecreated"
)

// CancelFinalizer holds the Formation that owns a formation until deleting
// it has cancelled the formation in the stream and recorded its tombstone.
const CancelFinalizer = "cellos.dev/cancel"

// FormationIDLabel carries the formation's UUID on every Formation, and on
// every Cell correlated to one, so that a label selector finds them.
const FormationIDLabel = "cellos.dev/formation-id"
