//! Property tests of the algebra rules: views compose, neutral elements vanish.
mod common;

use common::*;
use ir::Attr;
use proptest::prelude::*;

proptest! {
    #![proptest_config(config(32))]

    /// Transpose then transpose back composes to one view (then to nothing): exact. Dims of
    /// at least 2, so neither transpose is an identity view.
    #[test]
    fn transpose_twice(x in proptest::collection::vec(2usize..=4, 3).prop_flat_map(|s| f32_tensor(s, 10.0))) {
        let text = "graph {\n  input %x: f32[a,b,c]\n  %t = Transpose@17 \"t1\" {perm=[2,0,1]} (%x)\n  %y = Transpose@17 \"t2\" {perm=[1,2,0]} (%t)\n  output %y\n}";
        let g = ir::text::parse(text).unwrap();
        let s = x.shape().to_vec();
        let shapes = [("x".to_string(), s)].into_iter().collect();
        let g = ir::infer::specialize(&g, &shapes).unwrap();
        check_rule("algebra/view-of-view", &g, vec![x], 0.0)?;
    }

    /// Relu's max with a broadcast zero is unchanged by the algebra rules; multiplying
    /// by a constant one vanishes: exact.
    #[test]
    fn mul_by_one(x in shape(2, 5).prop_flat_map(|s| f32_tensor(s, 10.0))) {
        let ones = ir::Tensor::from_vec(vec![1], vec![1.0f32]).unwrap();
        let (g, feeds) = one_op("Mul", 14, vec![], &[Arg::Input(x), Arg::Const(ones)], 1);
        check_rule("algebra/mul-one", &g, feeds, 0.0)?;
    }

    /// Adding a constant -0.0 vanishes (exact for every x, -0.0 included).
    #[test]
    fn add_negative_zero(x in shape(2, 5).prop_flat_map(|s| f32_tensor(s, 10.0))) {
        let z = ir::Tensor::from_vec(vec![1], vec![-0.0f32]).unwrap();
        let (g, feeds) = one_op("Add", 14, vec![], &[Arg::Input(x), Arg::Const(z)], 1);
        check_rule("algebra/add-zero", &g, feeds, 0.0)?;
    }
}

#[test]
fn attr_helper_builds_ints() {
    assert_eq!(ints(&[1, 2]), Attr::Ints(vec![1, 2]));
}
