//! Rules of the loss family.

use crate::rules::Rule;

pub const RULES: &[Rule] = &[];
