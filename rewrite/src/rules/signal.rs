//! Rules of the signal family.

use crate::rules::Rule;

pub const RULES: &[Rule] = &[];
