//! Property tests of the unary family's lowering rules.
mod common;

use common::*;
use proptest::prelude::*;

proptest! {
    #![proptest_config(config(32))]

    /// Relu = max(x, 0): exact.
    #[test]
    fn relu(x in any_shape().prop_flat_map(|s| f32_tensor(s, 10.0))) {
        let (g, feeds) = one_op("Relu", 14, vec![], &[Arg::Input(x)], 1);
        check_rule("unary/relu", &g, feeds, 0.0)?;
    }
}
