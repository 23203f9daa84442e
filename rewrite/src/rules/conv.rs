//! Rules of the conv family.

use crate::rules::Rule;

pub const RULES: &[Rule] = &[];
