package statuswriter

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
)

// kstatus reads Ready, Reconciling and Stalled: Reconciling=True is
// InProgress, Stalled=True is Failed, and Ready=True with neither is Current.
// Each setter writes all three so that none is left over from an earlier state.

// setFormationConditions: Pending is InProgress; Running and Succeeded are
// Current; Failed and Cancelled are Failed. Complete marks success and
// Degraded follows the last phase event.
func setFormationConditions(s *cellosv1.FormationStatus, degraded bool, generation int64, now metav1.Time) {
	set := func(t string, ok bool, reason, msg string) {
		setCondition(&s.Conditions, t, ok, reason, msg, generation, now)
	}
	switch s.Phase {
	case cellosv1.FormationRunning:
		set(cellosv1.ReadyCondition, true, cellosv1.RunningReason, "The formation is running")
		set(cellosv1.ReconcilingCondition, false, cellosv1.RunningReason, "The formation has started")
		set(cellosv1.StalledCondition, false, cellosv1.RunningReason, "The formation is running")
	case cellosv1.FormationSucceeded:
		set(cellosv1.ReadyCondition, true, cellosv1.SucceededReason, "The formation completed")
		set(cellosv1.ReconcilingCondition, false, cellosv1.SucceededReason, "The formation completed")
		set(cellosv1.StalledCondition, false, cellosv1.SucceededReason, "The formation completed")
	case cellosv1.FormationFailed, cellosv1.FormationCancelled:
		reason, msg := cellosv1.FailedReason, "The formation failed"
		if s.Phase == cellosv1.FormationCancelled {
			reason, msg = cellosv1.CancelledReason, "The formation was cancelled"
		}
		set(cellosv1.ReadyCondition, false, reason, msg)
		set(cellosv1.ReconcilingCondition, false, reason, msg)
		set(cellosv1.StalledCondition, true, reason, msg)
	default:
		set(cellosv1.ReadyCondition, false, cellosv1.PendingReason, "The formation was created and has not started")
		set(cellosv1.ReconcilingCondition, true, cellosv1.PendingReason, "The formation was created and has not started")
		set(cellosv1.StalledCondition, false, cellosv1.PendingReason, "The formation was created and has not started")
	}
	if s.Phase == cellosv1.FormationSucceeded {
		set(cellosv1.CompleteCondition, true, cellosv1.SucceededReason, "The formation completed")
	} else {
		set(cellosv1.CompleteCondition, false, string(s.Phase), "The formation has not completed")
	}
	if degraded {
		set(cellosv1.DegradedCondition, true, cellosv1.DegradedReason, "The last phase event reported the formation degraded")
	} else {
		set(cellosv1.DegradedCondition, false, cellosv1.HealthyReason, "The last phase event did not report the formation degraded")
	}
}

// setCellConditions: Pending is InProgress; Running, and Destroyed with
// outcome succeeded, are Current; Destroyed otherwise is Failed.
func setCellConditions(s *cellosv1.CellStatus, now metav1.Time) {
	set := func(t string, ok bool, reason, msg string) {
		setCondition(&s.Conditions, t, ok, reason, msg, 0, now)
	}
	switch {
	case s.State == cellosv1.CellRunning:
		set(cellosv1.ReadyCondition, true, cellosv1.RunningReason, "The cell is running")
		set(cellosv1.ReconcilingCondition, false, cellosv1.RunningReason, "The cell has started")
		set(cellosv1.StalledCondition, false, cellosv1.RunningReason, "The cell is running")
	case s.State == cellosv1.CellDestroyed && s.Outcome == cellosv1.OutcomeSucceeded:
		set(cellosv1.ReadyCondition, true, cellosv1.SucceededReason, "The cell was destroyed after succeeding")
		set(cellosv1.ReconcilingCondition, false, cellosv1.SucceededReason, "The cell has finished")
		set(cellosv1.StalledCondition, false, cellosv1.SucceededReason, "The cell was destroyed after succeeding")
	case s.State == cellosv1.CellDestroyed:
		reason, msg := cellosv1.DestroyedReason, "The cell was destroyed without succeeding"
		if s.Outcome == cellosv1.OutcomeFailed {
			reason, msg = cellosv1.FailedReason, "The cell was destroyed after failing"
		}
		set(cellosv1.ReadyCondition, false, reason, msg)
		set(cellosv1.ReconcilingCondition, false, reason, msg)
		set(cellosv1.StalledCondition, true, reason, msg)
	default:
		set(cellosv1.ReadyCondition, false, cellosv1.PendingReason, "The cell was seen but has not started")
		set(cellosv1.ReconcilingCondition, true, cellosv1.PendingReason, "The cell was seen but has not started")
		set(cellosv1.StalledCondition, false, cellosv1.PendingReason, "The cell was seen but has not started")
	}
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
