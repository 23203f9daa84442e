//! Rules of the pool family.

use crate::rules::Rule;

pub const RULES: &[Rule] = &[];
