//! The static memory plan of a partitioned graph: every value a kernel reads or writes gets
//! a [`Location`]. Graph inputs are read where the caller put them, weights where they were
//! loaded, and graph outputs computed by kernels are written straight into the caller's
//! output buffers. Every other value gets a slice of one arena: values are placed in step
//! order, best fit among the free gaps, and a slice is free again after the last step that
//! reads it (a step's outputs never share memory with its own inputs).

use ir::graph::{Graph, ValueId};
use ir::partition::{Plan, Step};
use std::collections::HashMap;

/// Arena slices start at multiples of this many bytes (a cache line; enough for any
/// vector load).
pub const ALIGN: usize = 64;

/// Where a value lives during a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// The caller's input buffer `i` (in the order of `Graph::inputs`).
    Input(usize),
    /// The caller's output buffer `i` (in the order of `Graph::outputs`).
    Output(usize),
    /// A constant of the graph (`Graph::consts`), read in place.
    Weight,
    /// `bytes` bytes at `offset` in the arena.
    Arena { offset: usize, bytes: usize },
    /// A value without a static shape (data-dependent), only produced and read by host
    /// steps: it is kept as a tensor, outside the arena.
    Dynamic,
}

/// Locations of the values of one plan, and the arena size they need.
#[derive(Clone, Debug, Default)]
pub struct MemoryPlan {
    locations: HashMap<ValueId, Location>,
    /// The bytes of the arena.
    pub arena_bytes: usize,
    /// Graph outputs that no kernel writes in place (an input, a weight, a host step's
    /// result, or a value that is also an earlier output): `(output index, value)`, copied
    /// into the caller's buffer after the last step.
    pub copied_outputs: Vec<(usize, ValueId)>,
}

/// Errors of memory planning.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("value '{0}' has no type: the graph is not specialized")]
    Untyped(String),
    #[error("value '{value}' needs {numel} elements of {dtype}: too large")]
    TooLarge { value: String, numel: usize, dtype: ir::DType },
    #[error("the plan reads value '{0}' before any step writes it")]
    ReadBeforeWrite(String),
}

impl MemoryPlan {
    /// Plans the memory of `plan`, a partition of `g`.
    pub fn new(g: &Graph, plan: &Plan) -> Result<MemoryPlan, Error> {
        let mut mp = MemoryPlan::default();
        for (i, input) in g.inputs.iter().enumerate() {
            mp.locations.insert(input.value, Location::Input(i));
        }
        for v in g.consts.keys() {
            mp.locations.entry(*v).or_insert(Location::Weight);
        }
        // Graph outputs written by a kernel go straight to the caller's buffer.
        let kernel_outputs: Vec<ValueId> = plan
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Kernel { output, .. } => Some(*output),
                Step::Host { .. } => None,
            })
            .collect();
        for (i, &v) in g.outputs.iter().enumerate() {
            if !mp.locations.contains_key(&v) && kernel_outputs.contains(&v) {
                mp.locations.insert(v, Location::Output(i));
            } else {
                mp.copied_outputs.push((i, v));
            }
        }
        // The last step reading each value (graph outputs stay live to the end).
        let steps = plan.steps.len();
        let mut last_use: HashMap<ValueId, usize> = HashMap::new();
        for (i, s) in plan.steps.iter().enumerate() {
            for v in step_reads(g, s) {
                last_use.insert(v, i);
            }
        }
        for &v in &g.outputs {
            last_use.insert(v, steps);
        }
        let mut arena = Arena::default();
        let mut free_after: Vec<Vec<(usize, usize)>> = vec![Vec::new(); steps + 1];
        for (i, s) in plan.steps.iter().enumerate() {
            for v in step_reads(g, s) {
                if !mp.locations.contains_key(&v) {
                    return Err(Error::ReadBeforeWrite(g.name(v).to_string()));
                }
            }
            for v in step_writes(g, s) {
                if mp.locations.contains_key(&v) {
                    continue;
                }
                let ty = g.value(v).ty.as_ref().ok_or_else(|| Error::Untyped(g.name(v).to_string()))?;
                let Some(shape) = &ty.shape else {
                    mp.locations.insert(v, Location::Dynamic);
                    continue;
                };
                let numel = ir::tensor::checked_numel(shape).map_err(|_| Error::TooLarge {
                    value: g.name(v).to_string(),
                    numel: shape.iter().product(),
                    dtype: ty.dtype,
                })?;
                let bytes = numel
                    .checked_mul(ty.dtype.size())
                    .ok_or_else(|| Error::TooLarge { value: g.name(v).to_string(), numel, dtype: ty.dtype })?;
                let offset = arena.alloc(bytes);
                mp.locations.insert(v, Location::Arena { offset, bytes });
                // A value nobody reads is free after the step that writes it.
                let end = last_use.get(&v).copied().unwrap_or(i).max(i);
                free_after[end].push((offset, bytes));
            }
            for (offset, bytes) in std::mem::take(&mut free_after[i]) {
                arena.free(offset, bytes);
            }
        }
        mp.arena_bytes = arena.size;
        Ok(mp)
    }

    /// Where `v` lives; `None` for a value no step or output touches.
    pub fn location(&self, v: ValueId) -> Option<&Location> {
        self.locations.get(&v)
    }
}

/// The values a step reads.
fn step_reads(g: &Graph, s: &Step) -> Vec<ValueId> {
    match s {
        Step::Kernel { inputs, .. } => inputs.clone(),
        Step::Host { node } => g.nodes.get(*node).map(|n| n.inputs.iter().flatten().copied().collect()).unwrap_or_default(),
    }
}

/// The values a step writes.
fn step_writes(g: &Graph, s: &Step) -> Vec<ValueId> {
    match s {
        Step::Kernel { output, .. } => vec![*output],
        Step::Host { node } => g.nodes.get(*node).map(|n| n.outputs.iter().flatten().copied().collect()).unwrap_or_default(),
    }
}

/// Free-gap bookkeeping of the arena: best fit, coalescing on free.
#[derive(Default)]
struct Arena {
    /// Free gaps `(offset, bytes)`, sorted by offset, never adjacent.
    free: Vec<(usize, usize)>,
    size: usize,
}

impl Arena {
    fn alloc(&mut self, bytes: usize) -> usize {
        let bytes = bytes.max(1).next_multiple_of(ALIGN);
        let best = self
            .free
            .iter()
            .enumerate()
            .filter(|(_, (_, n))| *n >= bytes)
            .min_by_key(|(_, (_, n))| *n)
            .map(|(i, _)| i);
        if let Some(i) = best {
            let (off, n) = self.free[i];
            if n == bytes {
                self.free.remove(i);
            } else {
                self.free[i] = (off + bytes, n - bytes);
            }
            return off;
        }
        // Grow: a free gap at the end is extended rather than skipped.
        if let Some(&(off, n)) = self.free.last()
            && off + n == self.size
        {
            self.free.pop();
            self.size = off + bytes;
            return off;
        }
        let off = self.size;
        self.size += bytes;
        off
    }

    fn free(&mut self, offset: usize, bytes: usize) {
        let bytes = bytes.max(1).next_multiple_of(ALIGN);
        let i = self.free.partition_point(|&(o, _)| o < offset);
        self.free.insert(i, (offset, bytes));
        // Coalesce with the next gap, then with the previous one.
        if i + 1 < self.free.len() && self.free[i].0 + self.free[i].1 == self.free[i + 1].0 {
            self.free[i].1 += self.free[i + 1].1;
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].0 + self.free[i - 1].1 == self.free[i].0 {
            self.free[i - 1].1 += self.free[i].1;
            self.free.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(text: &str) -> Graph {
        let g = ir::text::parse(text).unwrap();
        ir::infer::specialize(&g, &Default::default()).unwrap()
    }

    /// Checks that no two values whose lifetimes overlap share arena bytes.
    fn check_no_overlap(g: &Graph, plan: &Plan, mp: &MemoryPlan) {
        let mut live: Vec<(usize, usize, usize, usize)> = Vec::new(); // (def, last, off, bytes)
        for (i, s) in plan.steps.iter().enumerate() {
            for v in step_writes(g, s) {
                if let Some(Location::Arena { offset, bytes }) = mp.location(v) {
                    let last = plan
                        .steps
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| step_reads(g, s).contains(&v))
                        .map(|(j, _)| j)
                        .max()
                        .unwrap_or(i);
                    live.push((i, last, *offset, *bytes));
                }
            }
        }
        for (a, x) in live.iter().enumerate() {
            assert!(x.2 + x.3 <= mp.arena_bytes);
            for y in &live[a + 1..] {
                let time = x.0 <= y.1 && y.0 <= x.1;
                let space = x.2 < y.2 + y.3 && y.2 < x.2 + x.3;
                assert!(!(time && space), "overlap: {x:?} {y:?}");
            }
        }
    }

    #[test]
    fn chain_reuses_memory_and_outputs_go_to_the_caller() {
        // Reductions anchor kernels, so each is its own step with an arena intermediate.
        let g = graph(
            r#"graph {
  input %x: f32[64,64]
  %a: f32[64,1] = atom.Reduce@0 "a" {axes=[1], fn="Max"} (%x)
  %b: f32[64,64] = atom.View@0 "b" {shape=[64, 64], strides=[1, 0]} (%a)
  %c: f32[64,64] = atom.Binary@0 "c" {fn="Sub"} (%x, %b)
  %e: f32[64,64] = atom.Unary@0 "e" {fn="Exp"} (%c)
  %s: f32[64,1] = atom.Reduce@0 "s" {axes=[1], fn="Sum"} (%e)
  %r: f32[64,1] = atom.Unary@0 "r" {fn="Recip"} (%s)
  %rb: f32[64,64] = atom.View@0 "rb" {shape=[64, 64], strides=[1, 0]} (%r)
  %y: f32[64,64] = atom.Binary@0 "y" {fn="Mul"} (%e, %rb)
  output %y
}"#,
        );
        let plan = ir::partition::partition(&g).unwrap();
        let mp = MemoryPlan::new(&g, &plan).unwrap();
        let y = g.find("y").unwrap();
        assert_eq!(mp.location(y), Some(&Location::Output(0)));
        assert_eq!(mp.location(g.find("x").unwrap()), Some(&Location::Input(0)));
        assert!(mp.copied_outputs.is_empty());
        check_no_overlap(&g, &plan, &mp);
        assert!(mp.arena_bytes > 0);
    }

    #[test]
    fn arena_reuses_freed_gaps() {
        let mut a = Arena::default();
        let x = a.alloc(100);
        let y = a.alloc(1000);
        a.free(x, 100);
        let z = a.alloc(64);
        assert_eq!(z, x);
        a.free(y, 1000);
        a.free(z, 64);
        assert_eq!(a.free, vec![(0, a.size)]);
        assert_eq!(a.alloc(a.size), 0);
    }

    #[test]
    fn input_passed_through_is_copied() {
        let g = graph("graph {\n  input %x: f32[4]\n  output %x\n}");
        let plan = ir::partition::partition(&g).unwrap();
        let mp = MemoryPlan::new(&g, &plan).unwrap();
        assert_eq!(mp.copied_outputs, vec![(0, g.find("x").unwrap())]);
    }
}
