//! Rules of the quant family.

use crate::rules::Rule;

pub const RULES: &[Rule] = &[];
