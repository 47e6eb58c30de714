//! Maintenance windows: the weekly window of each instance (`window`), the clock it is read
//! against (`clock`), and the gate that decides when a disruptive operation may run (`gate`).
//! Pure arithmetic over an injectable clock, so every boundary is tested without waiting a week.

pub mod clock;
pub mod gate;
pub mod window;

pub use clock::{Clock, OffsetClock, SystemClock};
pub use gate::{GateDecision, decide};
pub use window::WeeklyWindow;
