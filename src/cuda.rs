//! The GPU runtime (cargo feature `cuda`): loads a model compiled for a GPU (the PTX
//! module, the launch plan of [`crate::gpu_plan`] and the weights blob) and runs it on a
//! CUDA device through `cudarc`'s driver API, loaded dynamically at run time, so that the
//! crate builds (and [`CudaModel::load`] fails with a clear error) where no CUDA driver is
//! installed.
#![allow(unsafe_code)]

use crate::gpu_plan::{Binding, PLAN_FORMAT, Plan};
use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg};
use std::path::Path;
use std::sync::Arc;

/// Errors of loading and running a GPU model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no CUDA driver: libcuda could not be loaded (no NVIDIA driver on this machine)")]
    NoDriver,
    #[error("CUDA: {0}")]
    Driver(String),
    #[error("'{path}': {msg}")]
    Plan { path: String, msg: String },
    #[error("{0}")]
    Input(String),
    #[error("step {step} (kernel '{kernel}'): run-time error code {code}: {msg}")]
    Runtime { step: usize, kernel: String, code: i32, msg: String },
}

fn driver(e: cudarc::driver::DriverError) -> Error {
    Error::Driver(e.to_string())
}

/// Whether the CUDA driver library can be loaded and has a device.
pub fn device_available() -> Result<(), Error> {
    // SAFETY: only tries to open the driver library by its usual names.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(Error::NoDriver);
    }
    match CudaContext::device_count().map_err(driver)? {
        0 => Err(Error::Driver("the driver reports no device".into())),
        _ => Ok(()),
    }
}

/// A loaded GPU model: its functions, weights, workspace and error flag on device 0.
pub struct CudaModel {
    plan: Plan,
    stream: Arc<CudaStream>,
    functions: Vec<CudaFunction>,
    weights: CudaSlice<u8>,
    workspace: CudaSlice<u8>,
    flag: CudaSlice<i32>,
}

impl CudaModel {
    /// Loads `<plan>.plan.json` and the PTX and weights it names (relative to it) onto
    /// device 0.
    pub fn load(plan_path: &Path) -> Result<CudaModel, Error> {
        let bad = |msg: String| Error::Plan { path: plan_path.display().to_string(), msg };
        let text = std::fs::read_to_string(plan_path).map_err(|e| bad(e.to_string()))?;
        let plan: Plan = serde_json::from_str(&text).map_err(|e| bad(format!("not a launch plan: {e}")))?;
        if plan.format != PLAN_FORMAT {
            return Err(bad(format!("plan format {}, this atomc reads {PLAN_FORMAT}", plan.format)));
        }
        let dir = plan_path.parent().unwrap_or(Path::new("."));
        let weights = std::fs::read(dir.join(&plan.weights)).map_err(|e| bad(format!("weights '{}': {e}", plan.weights)))?;
        if weights.len() != plan.weight_bytes {
            return Err(bad(format!("weights '{}' has {} bytes, the plan says {}", plan.weights, weights.len(), plan.weight_bytes)));
        }
        device_available()?;
        let ctx = CudaContext::new(0).map_err(driver)?;
        let stream = ctx.default_stream();
        let mut modules = std::collections::HashMap::new();
        let mut functions = Vec::with_capacity(plan.steps.len());
        for s in &plan.steps {
            if !modules.contains_key(&s.ptx) {
                let src = std::fs::read_to_string(dir.join(&s.ptx)).map_err(|e| bad(format!("PTX '{}': {e}", s.ptx)))?;
                let m = ctx.load_module(cudarc::nvrtc::Ptx::from_src(src)).map_err(driver)?;
                modules.insert(s.ptx.clone(), m);
            }
            let m = &modules[&s.ptx];
            functions.push(m.load_function(&s.entry).map_err(driver)?);
        }
        let weights = if weights.is_empty() { stream.alloc_zeros::<u8>(1) } else { stream.clone_htod(&weights) }.map_err(driver)?;
        let workspace = stream.alloc_zeros::<u8>(plan.workspace_bytes.max(1)).map_err(driver)?;
        let flag = stream.alloc_zeros::<i32>(1).map_err(driver)?;
        Ok(CudaModel { plan, stream, functions, weights, workspace, flag })
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Runs the model on `inputs` (one byte slice per input, its exact size, native
    /// endian) and returns the outputs' bytes.
    pub fn run(&mut self, inputs: &[&[u8]]) -> Result<Vec<Vec<u8>>, Error> {
        if inputs.len() != self.plan.inputs.len() {
            return Err(Error::Input(format!("{} inputs given, the model has {}", inputs.len(), self.plan.inputs.len())));
        }
        for (t, b) in self.plan.inputs.iter().zip(inputs) {
            if t.bytes != b.len() {
                return Err(Error::Input(format!("input '{}' has {} bytes, it needs {}", t.name, b.len(), t.bytes)));
            }
        }
        let s = self.stream.clone();
        let ins: Vec<CudaSlice<u8>> = inputs.iter().map(|b| if b.is_empty() { s.alloc_zeros::<u8>(1) } else { s.clone_htod(*b) }).collect::<Result<_, _>>().map_err(driver)?;
        let outs: Vec<CudaSlice<u8>> = self.plan.outputs.iter().map(|t| s.alloc_zeros::<u8>(t.bytes.max(1))).collect::<Result<_, _>>().map_err(driver)?;
        let base = |b: Binding| -> u64 {
            let (ptr, off) = match b {
                Binding::Input(i) => (ins[i].device_ptr(&s).0, 0),
                Binding::Output(i) => (outs[i].device_ptr(&s).0, 0),
                Binding::Workspace(o) => (self.workspace.device_ptr(&s).0, o),
                Binding::Weight(o) => (self.weights.device_ptr(&s).0, o),
            };
            ptr + off as u64
        };
        for (i, (step, f)) in self.plan.steps.iter().zip(&self.functions).enumerate() {
            for b in &step.bindings {
                let ok = match *b {
                    Binding::Input(j) => j < ins.len(),
                    Binding::Output(j) => j < outs.len(),
                    Binding::Workspace(o) => o <= self.plan.workspace_bytes,
                    Binding::Weight(o) => o <= self.plan.weight_bytes,
                };
                if !ok {
                    return Err(Error::Plan { path: self.plan.name.clone(), msg: format!("step {i} binds {b:?}, which does not exist") });
                }
            }
            let ptrs: Vec<u64> = step.bindings.iter().map(|&b| base(b)).collect();
            let flag = self.flag.device_ptr(&s).0;
            let mut launch = s.launch_builder(f);
            for p in &ptrs {
                launch.arg(p);
            }
            launch.arg(&flag);
            let cfg = LaunchConfig { grid_dim: (step.grid[0], step.grid[1], step.grid[2]), block_dim: (step.block[0], step.block[1], step.block[2]), shared_mem_bytes: 0 };
            // SAFETY: the entry takes one pointer per binding and the error flag (the
            // plan's contract, from the same compile as the PTX); every pointer is inside
            // a live allocation of the size the plan gives its buffer.
            unsafe { launch.launch(cfg) }.map_err(driver)?;
            let code = s.clone_dtoh(&self.flag).map_err(driver)?;
            if let Some(&c) = code.first().filter(|&&c| c != 0) {
                let msg = match c {
                    1 => "a Gather position out of range",
                    2 => "a load out of bounds",
                    3 => "an integer division by zero",
                    _ => "unknown",
                };
                s.memset_zeros(&mut self.flag).map_err(driver)?;
                return Err(Error::Runtime { step: i, kernel: step.kernel.clone(), code: c, msg: msg.into() });
            }
        }
        s.synchronize().map_err(driver)?;
        let mut results: Vec<Vec<u8>> = outs.iter().map(|o| s.clone_dtoh(o)).collect::<Result<_, _>>().map_err(driver)?;
        for c in &self.plan.copies {
            let src = base(c.from);
            let mut host = vec![0u8; c.bytes];
            // SAFETY: `src` points at `c.bytes` bytes of a live allocation (the plan's
            // copy of a buffer of that size).
            unsafe { cudarc::driver::result::memcpy_dtoh_sync(&mut host, src) }.map_err(driver)?;
            if let Some(r) = results.get_mut(c.output) {
                r.truncate(0);
                r.extend(host);
            }
        }
        for (r, t) in results.iter_mut().zip(&self.plan.outputs) {
            r.truncate(t.bytes);
        }
        Ok(results)
    }
}
