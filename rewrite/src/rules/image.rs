//! Rules of the image family.

use crate::rules::Rule;

pub const RULES: &[Rule] = &[];
