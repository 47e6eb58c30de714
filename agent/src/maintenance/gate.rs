//! The gate in front of disruptive work (upgrades, plan changes that restart): run now, or wait
//! for the instance's next maintenance window. Nothing is ever cut off at a window's end: work
//! that outlasts its window is reported as overrunning, because stopping a restart or an upgrade
//! mid-step would leave the database worse off than finishing it.

use std::time::{Duration, SystemTime};

use super::clock::Clock;
use super::window::{WeeklyWindow, WindowPosition};

/// A window that began this recently counts as "just started": work started now gets the whole
/// window, the most room any window gives. Work longer than a whole window therefore still runs
/// (at the start of one, reported as overrunning) instead of waiting forever, and a waiter that
/// wakes a little after the start does not miss its window.
pub const START_SLACK: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateDecision {
    /// Start now. `window_end` is the end of the window the work runs in (`None`: forced outside
    /// a window, or the instance has none), past which it is reported overrunning;
    /// `overrun_expected` says the expected duration already goes past it.
    Run { window_end: Option<SystemTime>, overrun_expected: bool },
    /// Wait (state `waiting_for_window`) and start at `until`, the next window's start.
    Wait { until: SystemTime },
}

/// Decides for work expected to take `expected` on an instance with `window`. `force` runs at
/// once whatever the window says. An instance without a window has nothing to wait for.
pub fn decide(window: Option<&WeeklyWindow>, expected: Duration, force: bool, clock: &dyn Clock) -> GateDecision {
    let now = clock.now();
    let Some(window) = window else {
        return GateDecision::Run { window_end: None, overrun_expected: false };
    };
    match window.position(now) {
        WindowPosition::Inside { start, end } => {
            let left = end.duration_since(now).unwrap_or_default();
            let just_started = now.duration_since(start).unwrap_or_default() < START_SLACK;
            if force || expected <= left || just_started {
                GateDecision::Run { window_end: Some(end), overrun_expected: expected > left }
            } else {
                GateDecision::Wait { until: window.next_start_after(now) }
            }
        }
        WindowPosition::Outside { next } if !force => GateDecision::Wait { until: next },
        WindowPosition::Outside { .. } => GateDecision::Run { window_end: None, overrun_expected: false },
    }
}

/// Whether work started with `window_end` has run past it at `now`.
pub fn is_overrunning(window_end: Option<SystemTime>, clock: &dyn Clock) -> bool {
    window_end.is_some_and(|end| clock.now() >= end)
}

#[cfg(test)]
#[path = "gate_tests.rs"]
mod tests;
