//! The settings a configuration reload replaces at once: every account's policy (rights,
//! capabilities, limits, nick format) and `[general]`. The router, the delivery lanes and the
//! portal service read them afresh for each event, so a right taken away stops that traffic from
//! the next event on.

use crate::config::General;
use crate::router::Policies;
use std::sync::{Arc, RwLock};

/// One consistent set of settings.
#[derive(Debug)]
pub struct Settings {
    /// Every account's policy.
    pub policies: Policies,
    /// `[general]`.
    pub general: General,
}

/// The settings in force, replaced whole by a reload.
#[derive(Debug)]
pub struct Live(RwLock<Arc<Settings>>);

impl Live {
    /// Settings in force from now.
    pub fn new(policies: Policies, general: General) -> Arc<Self> {
        Arc::new(Self(RwLock::new(Arc::new(Settings { policies, general }))))
    }

    /// The settings in force: one snapshot, consistent for as long as it is held.
    pub fn now(&self) -> Arc<Settings> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts `settings` in force.
    pub fn replace(&self, settings: Settings) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(settings);
    }
}
