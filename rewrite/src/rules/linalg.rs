//! Rules of the linalg family.

use crate::rules::Rule;

pub const RULES: &[Rule] = &[];
