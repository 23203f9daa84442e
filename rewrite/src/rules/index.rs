//! Rules of the index family.

use crate::rules::Rule;

pub const RULES: &[Rule] = &[];
