//! Compiling a model for an NVIDIA GPU (`atomc compile --target nvptx64-nvidia-cuda --gpu
//! sm_80|sm_90`, cargo feature `llvm`): the pipeline of [`crate::aot`] up to the kernels
//! and the static step list ([`crate::aot::lower_program`]), then every kernel scheduled
//! for the GPU (`search` gives `gpu_threads(N)` for an `sm_XX` target) and compiled by
//! LLVM's NVPTX backend into one PTX module (`codegen::llvm::nvptx`), written with the
//! weights blob and the launch plan ([`crate::gpu_plan`]). A host step or a kernel that
//! cannot run on the GPU is refused, every such kernel named.

use crate::aot::{Error, Lowered, lower_program};
use crate::gpu_plan::{self, Binding, Plan};
use codegen::cranelift::{BufferRef, TensorDesc};
use codegen::llvm::nvptx::{self, GpuKernel};
use ir::infer::InputShapes;
use std::path::{Path, PathBuf};

/// What `compile` wrote.
#[derive(Clone, Debug)]
pub struct GpuArtifacts {
    pub ptx: PathBuf,
    pub plan: PathBuf,
    pub weights: PathBuf,
    pub plan_data: Plan,
}

/// A model compiled for a GPU, in memory.
pub struct GpuBuilt {
    pub ptx: String,
    pub plan: Plan,
    pub weights: Vec<u8>,
}

/// The binding of a buffer reference.
fn binding(b: BufferRef) -> Binding {
    match b {
        BufferRef::Input(i) => Binding::Input(i),
        BufferRef::Output(i) => Binding::Output(i),
        BufferRef::Workspace(o) => Binding::Workspace(o),
        BufferRef::Weight(o) => Binding::Weight(o),
    }
}

fn tensor(t: &TensorDesc) -> gpu_plan::Tensor {
    gpu_plan::Tensor { name: t.name.clone(), dtype: t.dtype.name().to_string(), shape: t.shape.clone(), bytes: t.bytes().unwrap_or(0) }
}

/// Compiles `graph` specialized to `shapes` for `gpu` into a PTX module and its plan
/// (files named after `name`; `model` is recorded in the plan).
pub fn build(graph: &ir::Graph, name: &str, model: &str, shapes: &InputShapes, gpu: &str) -> Result<GpuBuilt, Error> {
    let target = targets::Target::named(gpu)
        .filter(|t| t.triple == nvptx::TRIPLE && nvptx::GPUS.contains(&gpu))
        .ok_or_else(|| ir::Error::Unsupported(format!("unknown GPU '{gpu}' (known: {})", nvptx::GPUS.join(", "))))?;
    let Lowered { kernels, program, weights } = lower_program(graph, shapes)?;
    let planner = search::Planner::new(target, 1);
    let schedules: Vec<_> = kernels.iter().map(|k| planner.schedule(k).0).collect();
    let entries: Vec<String> = kernels.iter().enumerate().map(|(i, k)| nvptx::entry_name(&format!("k{i}"), &k.name)).collect();
    let refused: Vec<String> = kernels.iter().zip(&schedules).filter_map(|(k, s)| nvptx::check(k, s).err().map(|e| e.to_string())).collect();
    if !refused.is_empty() {
        let msg = format!("{} of {} kernels cannot run on the GPU:\n  {}", refused.len(), kernels.len(), refused.join("\n  "));
        return Err(ir::Error::Unsupported(msg).into());
    }
    let gk: Vec<GpuKernel<'_>> =
        kernels.iter().zip(&schedules).zip(&entries).map(|((k, s), e)| GpuKernel { entry: e.clone(), kernel: k, schedule: s }).collect();
    let module = nvptx::compile_ptx(&gk, gpu)?;
    let ptx_file = format!("{name}.ptx");
    let steps = program
        .steps
        .iter()
        .map(|st| {
            let l = module.launches[st.kernel];
            gpu_plan::Step {
                kernel: kernels[st.kernel].name.clone(),
                ptx: ptx_file.clone(),
                entry: entries[st.kernel].clone(),
                schedule: schedules[st.kernel].to_string(),
                grid: [l.grid, 1, 1],
                block: [l.block, 1, 1],
                bindings: st.buffers.iter().copied().map(binding).collect(),
            }
        })
        .collect();
    let plan = Plan {
        format: gpu_plan::PLAN_FORMAT,
        name: name.to_string(),
        model: model.to_string(),
        target: nvptx::TRIPLE.to_string(),
        gpu: gpu.to_string(),
        weights: format!("{name}.weights.bin"),
        weight_bytes: weights.len(),
        workspace_bytes: program.workspace_bytes,
        inputs: program.inputs.iter().map(tensor).collect(),
        outputs: program.outputs.iter().map(tensor).collect(),
        steps,
        copies: program.copies.iter().map(|c| gpu_plan::Copy { output: c.output, from: binding(c.from), bytes: c.bytes }).collect(),
    };
    Ok(GpuBuilt { ptx: module.ptx, plan, weights })
}

/// Compiles the model at `path` for `gpu` into `out_dir/<name>.{ptx,plan.json,weights.bin}`.
pub fn compile(path: &Path, out_dir: &Path, name: Option<&str>, shapes: &InputShapes, gpu: &str) -> Result<GpuArtifacts, Error> {
    let name = match name {
        Some(n) => n.to_string(),
        None => crate::aot::c_identifier(&path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()),
    };
    if crate::aot::c_identifier(&name) != name {
        return Err(Error::BadName(name));
    }
    let model = ir::onnx::import_file(path)?;
    let built = build(&model.graph, &name, &path.display().to_string(), shapes, gpu)?;
    std::fs::create_dir_all(out_dir).map_err(|source| Error::Io { what: "cannot create", path: out_dir.to_path_buf(), source })?;
    let write = |p: &Path, bytes: &[u8]| std::fs::write(p, bytes).map_err(|source| Error::Io { what: "cannot write", path: p.to_path_buf(), source });
    let ptx = out_dir.join(built.plan.steps.first().map_or_else(|| format!("{name}.ptx"), |s| s.ptx.clone()));
    let plan = out_dir.join(format!("{name}.plan.json"));
    let weights = out_dir.join(&built.plan.weights);
    write(&ptx, built.ptx.as_bytes())?;
    write(&weights, &built.weights)?;
    let text = serde_json::to_string_pretty(&built.plan).map_err(|e| ir::Error::Internal(format!("JSON: {e}")))?;
    write(&plan, format!("{text}\n").as_bytes())?;
    Ok(GpuArtifacts { ptx, plan, weights, plan_data: built.plan })
}
