//! Rules of the layout family.

use crate::rules::Rule;

pub const RULES: &[Rule] = &[];
