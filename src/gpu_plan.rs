//! The launch plan of a model compiled for a GPU (`atomc compile --target
//! nvptx64-nvidia-cuda`): `<name>.plan.json` next to `<name>.ptx` (one PTX module, an
//! `.entry` per kernel) and `<name>.weights.bin`. Written by [`crate::gpu`] (feature
//! `llvm`), read by [`crate::cuda`] (feature `cuda`); plain serde types so that either side
//! builds without the other.
//!
//! Running a plan: allocate the workspace (`workspace_bytes`, [`PLAN_ALIGN`]-aligned
//! offsets), upload the weights blob, zero a device `i32` error flag; for each step in
//! order launch `entry` of `ptx` on `grid` x `block` (1-D) with one pointer parameter per
//! binding (the kernel's inputs, then its output) and the error flag last; then do the
//! `copies` (an output no kernel writes in place, copied from a buffer). A nonzero flag
//! after a step is a run-time error: 1 a Gather position out of range, 2 a load out of
//! bounds, 3 an integer division by zero.

use serde::{Deserialize, Serialize};

/// The plan format version (bump on an incompatible change).
pub const PLAN_FORMAT: u32 = 1;

/// Workspace offsets and weight offsets are multiples of this many bytes.
pub const PLAN_ALIGN: usize = 64;

/// Where a kernel parameter points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Binding {
    /// The caller's input `i`.
    Input(usize),
    /// The caller's output `i`.
    Output(usize),
    /// `workspace + offset` (bytes).
    Workspace(usize),
    /// `weights + offset` (bytes into the weights blob).
    Weight(usize),
}

/// One kernel launch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The kernel's name in atomc's partition.
    pub kernel: String,
    /// The PTX file (relative to the plan) and the `.entry` in it.
    pub ptx: String,
    pub entry: String,
    /// The schedule the kernel was generated with (`gpu_threads(N)`).
    pub schedule: String,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    /// The kernel's inputs in order, then its output.
    pub bindings: Vec<Binding>,
}

/// An output no kernel writes in place: `bytes` bytes copied from `from` after the steps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Copy {
    pub output: usize,
    pub from: Binding,
    pub bytes: usize,
}

/// A graph input or output: dense, row-major, little endian.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tensor {
    pub name: String,
    /// The dtype's name (`float32`, `int64`, ...).
    pub dtype: String,
    pub shape: Vec<usize>,
    pub bytes: usize,
}

/// A whole launch plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format: u32,
    pub name: String,
    pub model: String,
    pub target: String,
    /// The GPU architecture the PTX is for (`sm_80`, `sm_90`).
    pub gpu: String,
    /// The weights blob (relative to the plan) and its size.
    pub weights: String,
    pub weight_bytes: usize,
    pub workspace_bytes: usize,
    pub inputs: Vec<Tensor>,
    pub outputs: Vec<Tensor>,
    pub steps: Vec<Step>,
    pub copies: Vec<Copy>,
}
