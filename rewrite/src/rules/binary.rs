//! Rules of the binary family.

use crate::rules::Rule;

pub const RULES: &[Rule] = &[];
