//! Start-up: the operations the last stop left waiting for a maintenance window wait again, each
//! with its job rebuilt from its stored parameters and its instance's window as registered now.

use crate::instances::Registry;
use crate::ops::{OperationEngine, sleep};
use crate::plan::{PlanChanges, RESTART_KIND};
use crate::upgrade::{UpgradeService, minor};

/// The disruptive kinds: the test `sleep`, the restart a plan change leaves for the window,
/// PostgreSQL major upgrades and minor upgrades.
pub(super) async fn rearm_waiting(
    engine: &OperationEngine,
    registry: &Registry,
    plans: &PlanChanges,
    upgrades: &UpgradeService,
    test_kinds: bool,
) {
    for record in engine.waiting_for_window() {
        if record.kind == RESTART_KIND {
            match plans.rearm_restart(&record) {
                Ok(()) => continue,
                Err(e) => {
                    let reason =
                        format!("the agent restarted and cannot re-arm this plan restart ({e}); change the plan again");
                    if let Err(e) = engine.abandon_waiting(&record.id, &reason).await {
                        tracing::error!(op = %record.id, "give up the operation waiting for its maintenance window: {e:#}");
                    }
                    continue;
                }
            }
        }
        if record.kind == minor::KIND {
            if let Err(e) = upgrades.minor.rearm(&record) {
                let reason = format!("the agent restarted and cannot re-arm this minor upgrade ({e}); submit it again");
                if let Err(e) = engine.abandon_waiting(&record.id, &reason).await {
                    tracing::error!(op = %record.id, "give up the operation waiting for its maintenance window: {e:#}");
                }
            }
            continue;
        }
        if record.kind == crate::upgrade::KIND {
            if let Err(e) = upgrades.rearm(&record).await {
                let reason = format!("the agent restarted and this upgrade would be refused now: {e}");
                if let Err(e) = engine.abandon_waiting(&record.id, &reason).await {
                    tracing::error!(op = %record.id, "give up the upgrade waiting for its maintenance window: {e:#}");
                }
            }
            continue;
        }
        let rearmed = match (record.kind.as_str(), sleep::from_params(&record.params)) {
            (sleep::KIND, Some((duration, Some(force)))) if test_kinds => {
                let window = registry.get(&record.target).ok().and_then(|i| i.spec.maintenance_window);
                let gate = sleep::disruptive(window.as_ref(), duration, force);
                engine.resume_waiting(&record.id, true, gate, sleep::job(duration))
            }
            _ => {
                let reason = format!(
                    "the agent restarted while this {} operation waited for its maintenance window and cannot \
                     re-arm it (its kind is disabled or unknown); submit it again",
                    record.kind
                );
                engine.abandon_waiting(&record.id, &reason).await
            }
        };
        if let Err(e) = rearmed {
            tracing::error!(op = %record.id, "re-arm the operation waiting for its maintenance window: {e:#}");
        }
    }
}
