//! Rules of the rnn family.

use crate::rules::Rule;

pub const RULES: &[Rule] = &[];
