//! Rules of the norm family.

use crate::rules::Rule;

pub const RULES: &[Rule] = &[];
