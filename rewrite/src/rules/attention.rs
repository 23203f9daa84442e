//! Rules of the attention family.

use crate::rules::Rule;

pub const RULES: &[Rule] = &[];
