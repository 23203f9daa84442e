//! The `atomc` command line.
fn main() {}
