package status

import (
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
)

// summary is what kstatus reads: Reconciling=True is InProgress, Stalled=True
// is Failed, and Ready=True with neither is Current. All three are always
// written, so that none is left over from an earlier state.
type summary struct {
	ready, reconciling, stalled bool
	reason, message             string
}

// formationSummary: Pending is InProgress; Running and Succeeded are Current;
// Failed and Cancelled are Failed.
func formationSummary(phase cellosv1.FormationPhase) summary {
	switch phase {
	case cellosv1.FormationRunning:
		return summary{ready: true, reason: cellosv1.RunningReason, message: "The formation is running"}
	case cellosv1.FormationSucceeded:
		return summary{ready: true, reason: cellosv1.SucceededReason, message: "The formation completed"}
	case cellosv1.FormationFailed:
		return summary{stalled: true, reason: cellosv1.FailedReason, message: "The formation failed"}
	case cellosv1.FormationCancelled:
		return summary{stalled: true, reason: cellosv1.CancelledReason, message: "The formation was cancelled"}
	default:
		return summary{reconciling: true, reason: cellosv1.PendingReason, message: "The formation was created and has not started"}
	}
}

// cellSummary: Pending is InProgress; Running, and Destroyed with outcome
// succeeded, are Current; Destroyed otherwise is Failed.
func cellSummary(state cellosv1.CellState, outcome string) summary {
	switch {
	case state == cellosv1.CellRunning:
		return summary{ready: true, reason: cellosv1.RunningReason, message: "The cell is running"}
	case state == cellosv1.CellDestroyed && outcome == cellosv1.OutcomeSucceeded:
		return summary{ready: true, reason: cellosv1.SucceededReason, message: "The cell was destroyed after succeeding"}
	case state == cellosv1.CellDestroyed && outcome == cellosv1.OutcomeFailed:
		return summary{stalled: true, reason: cellosv1.FailedReason, message: "The cell was destroyed after failing"}
	case state == cellosv1.CellDestroyed:
		return summary{stalled: true, reason: cellosv1.DestroyedReason, message: "The cell was destroyed without succeeding"}
	default:
		return summary{reconciling: true, reason: cellosv1.PendingReason, message: "The cell was seen but has not started"}
	}
}

// SetAwaitingStream marks a Formation that no event has named yet, such as a
// declared one just applied from Git: InProgress for kstatus, so that GitOps
// tools do not call it healthy before the stream has spoken.
func SetAwaitingStream(s *cellosv1.FormationStatus, generation int64, now time.Time) {
	SetHeld(s, generation, false, cellosv1.AwaitingStreamReason, "No event of the stream has named this formation yet", now)
}

// SetHeld sets the kstatus summary of a Formation that holds no projection:
// InProgress while it waits (for admission, its publish, or the stream), or
// Failed when it is stalled (an invalid spec, a refused takeover), with the
// reason and a message that says what to do.
func SetHeld(s *cellosv1.FormationStatus, generation int64, stalled bool, reason, message string, now time.Time) {
	s.ObservedGeneration = generation
	setSummary(&s.Conditions, summary{reconciling: !stalled, stalled: stalled, reason: reason, message: message},
		generation, metav1.NewTime(now))
}

// SetPublished records whether the operator's created event of a declared
// Formation is in the stream.
func SetPublished(s *cellosv1.FormationStatus, generation int64, published bool, reason, message string, now time.Time) {
	setCondition(&s.Conditions, cellosv1.PublishedCondition, published, reason, message, generation, metav1.NewTime(now))
}

// setFormationConditions writes the kstatus summary of the phase, Complete
// for success, and Degraded after the last phase event.
func setFormationConditions(s *cellosv1.FormationStatus, degraded bool, generation int64, now metav1.Time) {
	setSummary(&s.Conditions, formationSummary(s.Phase), generation, now)
	if s.Phase == cellosv1.FormationSucceeded {
		setCondition(&s.Conditions, cellosv1.CompleteCondition, true, cellosv1.SucceededReason, "The formation completed", generation, now)
	} else {
		setCondition(&s.Conditions, cellosv1.CompleteCondition, false, notCompleteReason(s.Phase), "The formation has not completed", generation, now)
	}
	if degraded {
		setCondition(&s.Conditions, cellosv1.DegradedCondition, true, cellosv1.DegradedReason, "The last phase event reported the formation degraded", generation, now)
	} else {
		setCondition(&s.Conditions, cellosv1.DegradedCondition, false, cellosv1.HealthyReason, "The last phase event did not report the formation degraded", generation, now)
	}
}

// notCompleteReason says why a Formation in phase, not Succeeded, is not
// Complete: it has not finished yet, or finished without success.
func notCompleteReason(phase cellosv1.FormationPhase) string {
	if phase == cellosv1.FormationFailed || phase == cellosv1.FormationCancelled {
		return cellosv1.FinishedWithoutSuccessReason
	}
	return cellosv1.NotFinishedReason
}

// PhaseReason is the reason that names a Formation's phase, in its
// conditions and in the Event raised when the phase changes.
func PhaseReason(phase cellosv1.FormationPhase) string {
	return formationSummary(phase).reason
}

func setSummary(conds *[]metav1.Condition, k summary, generation int64, now metav1.Time) {
	setCondition(conds, cellosv1.ReadyCondition, k.ready, k.reason, k.message, generation, now)
	setCondition(conds, cellosv1.ReconcilingCondition, k.reconciling, k.reason, k.message, generation, now)
	setCondition(conds, cellosv1.StalledCondition, k.stalled, k.reason, k.message, generation, now)
}

func setCondition(conds *[]metav1.Condition, condType string, ok bool, reason, msg string, generation int64, now metav1.Time) {
	status := metav1.ConditionFalse
	if ok {
		status = metav1.ConditionTrue
	}
	meta.SetStatusCondition(conds, metav1.Condition{
		Type: condType, Status: status, Reason: reason, Message: msg,
		ObservedGeneration: generation, LastTransitionTime: now,
	})
}
