//! The Cranelift JIT backend (`--backend cranelift`): the atom graph is partitioned into
//! kernels, each compiled once by `codegen`; a kernel the backend does not support yet
//! (a dtype, a Scatter) runs on the kernel reference evaluator, and host steps on the
//! interpreter. Buffers are copied per kernel call: the runtime with a memory plan and
//! threads replaces this executor.

use codegen::JitKernel;
use ir::kernel::Kernel;
use ir::partition::{Plan, Step};
use ir::{DType, Graph, Tensor};

/// A partitioned graph with its compiled kernels.
pub struct JitPlan {
    graph: Graph,
    plan: Plan,
    /// Per plan step: the compiled kernel, or `None` (host step or unsupported kernel).
    compiled: Vec<Option<JitKernel>>,
}

impl JitPlan {
    /// Partitions an atom graph and compiles every kernel the backend supports.
    pub fn compile(graph: Graph) -> ir::Result<JitPlan> {
        let plan = ir::partition::partition(&graph)?;
        // Cranelift's SIMD is 128-bit whatever the host has.
        let target = targets::Target::host().with_vector_bits(128);
        let mut compiled = Vec::with_capacity(plan.steps.len());
        for step in &plan.steps {
            compiled.push(match step {
                Step::Kernel { kernel, .. } if supported(kernel) => match JitKernel::compile(kernel, &search::default_schedule(kernel, &target)) {
                    Ok(k) => Some(k),
                    Err(codegen::Error::Unsupported { .. }) => None,
                    Err(e) => return Err(e.into()),
                },
                _ => None,
            });
        }
        Ok(JitPlan { graph, plan, compiled })
    }

    /// How many kernels run as native code, and how many in all.
    pub fn compiled_kernels(&self) -> (usize, usize) {
        (self.compiled.iter().flatten().count(), self.plan.num_kernels())
    }

    pub fn run(&self, inputs: Vec<Tensor>) -> ir::Result<Vec<Tensor>> {
        ir::partition::run_plan_with(&self.graph, &self.plan, inputs, &mut |i, kernel, args| {
            match self.compiled.get(i).and_then(Option::as_ref) {
                Some(jit) => run_jit(jit, kernel, args),
                None => {
                    ir::kernel::verify(kernel)?;
                    kernel.eval(args)
                }
            }
        })
    }
}

/// The dtypes the Cranelift backend handles; kernels touching others use the evaluator.
fn supported(k: &Kernel) -> bool {
    let ok = |d: DType| matches!(d, DType::F32 | DType::I64 | DType::I32 | DType::Bool);
    k.inputs.iter().all(|b| ok(b.dtype)) && ok(k.output.dtype)
}

fn run_jit(jit: &JitKernel, kernel: &Kernel, args: &[&Tensor]) -> ir::Result<Tensor> {
    let bytes: Vec<Vec<u8>> = args.iter().map(|t| to_bytes(t)).collect::<ir::Result<_>>()?;
    let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
    let out = &kernel.output;
    let mut buf = vec![0u8; out.numel * out.dtype.size()];
    jit.run(&refs, &mut buf)?;
    from_bytes(out.dtype, out.numel, &buf)
}

fn to_bytes(t: &Tensor) -> ir::Result<Vec<u8>> {
    Ok(match t.data() {
        ir::Data::F32(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        ir::Data::I64(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        ir::Data::I32(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        ir::Data::Bool(v) => v.iter().map(|&b| b as u8).collect(),
        _ => return Err(ir::Error::Internal(format!("the JIT got a {} buffer", t.dtype()))),
    })
}

fn from_bytes(dtype: DType, numel: usize, b: &[u8]) -> ir::Result<Tensor> {
    let shape = vec![numel];
    match dtype {
        DType::F32 => Tensor::from_vec(shape, b.chunks_exact(4).map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect()),
        DType::I32 => Tensor::from_vec(shape, b.chunks_exact(4).map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect()),
        DType::I64 => Tensor::from_vec(
            shape,
            b.chunks_exact(8)
                .map(|c| i64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
        ),
        DType::Bool => Tensor::from_vec(shape, b.iter().map(|&x| x != 0).collect()),
        d => Err(ir::Error::Internal(format!("the JIT produced a {d} buffer"))),
    }
}
