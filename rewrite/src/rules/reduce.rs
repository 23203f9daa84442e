//! Rules of the reduce family.

use crate::rules::Rule;

pub const RULES: &[Rule] = &[];
