//! NVPTX code generation: kernels under a [`ir::schedule::ScheduleStep::GpuThreads`] schedule become PTX
//! `.entry` functions through LLVM's NVPTX backend (triple `nvptx64-nvidia-cuda`, cpu
//! `sm_XX`, features `+ptx80`), several kernels per module.
//!
//! Every kernel is two functions. The thread function `<entry>_thread(p0, .., pN, gid)`
//! computes output point `gid` (the flattened output space, row-major): it returns at once
//! for a `gid` past the last point, else unflattens `gid` into the output axes, runs the
//! reduction sequentially (a Sum of products with `llvm.fma`), applies the epilogue and
//! stores the point; it returns 0, or the run-time error code of the host ABI (a Gather
//! position out of range, ...). Its expressions are the host LLVM backend's (`lower.rs`),
//! scalar. The entry `<entry>(p0, .., pN, err)` (calling convention `ptx_kernel`, 71)
//! computes `gid = ctaid.x * ntid.x + tid.x` and stores a nonzero code to `*err` (an
//! `i32` the launcher zeroes). `p0..` are the kernel's buffers: its inputs, then its output.
//!
//! No host helper exists on the GPU: the lowering runs with `device` set, so the math the
//! CPU takes from helpers (`pow`, `fmod`, asin and the other functions without a
//! polynomial, sin/cos/tan of large arguments, most f64 math) is emitted inline by
//! `dmath.rs` (every float function of f32 and f64 has a device form); a helper call that
//! still reached the module would be an [`Error::Unsupported`] naming it. The same thread
//! function can be wrapped for the host ([`emulate`]) so that tests check the GPU mapping's
//! semantics, device math included, on the CPU.

use super::lower::{Lower, Result, memory_type};
use crate::Error;
use inkwell::OptimizationLevel;
use inkwell::context::Context;
use inkwell::memory_buffer::MemoryBuffer;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine, TargetTriple};
use ir::atom::{BinaryFn, ReduceFn};
use ir::dtype::DType;
use ir::kernel::{Expr, Kernel};
use ir::schedule::Schedule;
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// The LLVM triple of the NVPTX target.
pub const TRIPLE: &str = "nvptx64-nvidia-cuda";

/// The PTX ISA feature: PTX 8.0 covers sm_80 and sm_90 (ptxas 12.x accepts it).
const PTX_FEATURES: &str = "+ptx80";

/// The GPU architectures atomc generates code for.
pub const GPUS: &[&str] = &["sm_80", "sm_90"];

/// A 1-D launch: `grid` blocks of `block` threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    pub grid: u32,
    pub block: u32,
}

/// One kernel of a PTX module: its `.entry` name, the kernel and its (GPU) schedule.
pub struct GpuKernel<'a> {
    pub entry: String,
    pub kernel: &'a Kernel,
    pub schedule: &'a Schedule,
}

/// A PTX module and the launch of each of its kernels (in the order given).
#[derive(Clone, Debug)]
pub struct PtxModule {
    pub ptx: String,
    pub launches: Vec<Launch>,
}

/// An identifier usable as a PTX entry name made from `name`: other characters become
/// `_`, prefixed by `prefix` (which starts with a letter).
pub fn entry_name(prefix: &str, name: &str) -> String {
    let tail: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    format!("{prefix}_{tail}")
}

/// The launch of `k` under `s`: one thread per output point, `block` threads per block
/// from the schedule's [`ir::schedule::ScheduleStep::GpuThreads`] (any other schedule is an
/// [`Error::InvalidKernel`]); at least one block.
pub fn launch(k: &Kernel, s: &Schedule) -> std::result::Result<Launch, Error> {
    let invalid = |msg: String| Error::InvalidKernel { kernel: k.name.clone(), msg };
    s.validate(k).map_err(|e| invalid(e.to_string()))?;
    let Some(block) = s.gpu_threads() else {
        return Err(invalid(format!("schedule '{s}' does not map the kernel onto GPU threads (no gpu_threads step)")));
    };
    let points = k.out_shape.iter().try_fold(1usize, |a, &n| a.checked_mul(n)).ok_or_else(|| invalid("the output has too many points".into()))?;
    let grid = points.div_ceil(block).max(1);
    let grid = u32::try_from(grid).map_err(|_| invalid(format!("{grid} blocks of {block} threads: more than a grid holds")))?;
    Ok(Launch { grid, block: block as u32 })
}

/// Whether `k` under `s` can run on the GPU: its launch and its lowering, without LLVM
/// (cheap: a model's kernels are all checked before any is compiled).
pub fn check(k: &Kernel, s: &Schedule) -> std::result::Result<(), Error> {
    launch(k, s)?;
    thread_function(k, "check").map(|_| ())
}

/// The thread function of `k` (named `<entry>_thread`, attribute group `#1`) and the
/// declarations it needs.
fn thread_function(k: &Kernel, entry: &str) -> Result<(String, BTreeSet<String>)> {
    ir::kernel::verify(k).map_err(|e| Error::InvalidKernel { kernel: k.name.clone(), msg: e.to_string() })?;
    let mut l = Lower::new(k, 1, true);
    l.device = true;
    l.gpu_point()?;
    let (body, decls) = l.finish();
    if let Some(d) = decls.iter().find(|d| d.starts_with("declare") && !d.contains("@llvm.")) {
        let helper = d.split('@').nth(1).and_then(|s| s.split('(').next()).unwrap_or(d);
        return Err(Error::Unsupported {
            kernel: k.name.clone(),
            msg: format!("needs the host helper '{helper}', which does not exist on the GPU"),
        });
    }
    let params: Vec<String> = (0..=k.inputs.len()).map(|i| format!("ptr %p{i}")).collect();
    let text = format!("define internal i32 @{entry}_thread({}, i64 %gid) #1 {{\n{body}}}\n", params.join(", "));
    Ok((text, decls))
}

/// The NVPTX data layout and target machine for `gpu` (`sm_80`, `sm_90`).
fn machine(gpu: &str) -> std::result::Result<TargetMachine, String> {
    if !GPUS.contains(&gpu) {
        return Err(format!("unknown GPU '{gpu}' (known: {})", GPUS.join(", ")));
    }
    Target::initialize_nvptx(&InitializationConfig::default());
    let triple = TargetTriple::create(TRIPLE);
    let target = Target::from_triple(&triple).map_err(|e| format!("LLVM has no NVPTX target: {e}"))?;
    target
        .create_target_machine(&triple, gpu, PTX_FEATURES, OptimizationLevel::Aggressive, RelocMode::Default, CodeModel::Default)
        .ok_or_else(|| format!("LLVM has no target machine for {TRIPLE} ({gpu})"))
}

/// Compiles `kernels` into one PTX module for `gpu`: one `.entry` per kernel, named by its
/// `entry`. The first kernel that cannot run on the GPU stops it with its error.
pub fn compile_ptx(kernels: &[GpuKernel<'_>], gpu: &str) -> std::result::Result<PtxModule, Error> {
    let first = kernels.first().map_or_else(|| "(none)".to_string(), |g| g.kernel.name.clone());
    let internal = |msg: String| Error::Internal { kernel: first.clone(), msg };
    let machine = machine(gpu).map_err(|msg| Error::Unsupported { kernel: first.clone(), msg })?;
    let layout = machine.get_target_data().get_data_layout();
    let layout = layout.as_str().to_string_lossy().into_owned();
    let mut text = String::new();
    let _ = writeln!(text, "target datalayout = \"{layout}\"");
    let _ = writeln!(text, "target triple = \"{TRIPLE}\"");
    let mut decls = BTreeSet::new();
    let mut launches = Vec::with_capacity(kernels.len());
    for g in kernels {
        launches.push(launch(g.kernel, g.schedule)?);
        let (f, d) = thread_function(g.kernel, &g.entry)?;
        text.push_str(&f);
        text.push_str(&entry_function(g.kernel, &g.entry));
        decls.extend(d);
    }
    for sreg in ["ctaid", "ntid", "tid"] {
        decls.insert(format!("declare i32 @llvm.nvvm.read.ptx.sreg.{sreg}.x()"));
    }
    for d in decls {
        let _ = writeln!(text, "{d}");
    }
    let _ = writeln!(text, "attributes #0 = {{ nounwind \"target-cpu\"=\"{gpu}\" \"target-features\"=\"{PTX_FEATURES}\" }}");
    let _ = writeln!(text, "attributes #1 = {{ alwaysinline nounwind \"target-cpu\"=\"{gpu}\" \"target-features\"=\"{PTX_FEATURES}\" }}");
    let _ = writeln!(text, "!0 = !{{!\"branch_weights\", i32 1, i32 2000}}");
    let context = Context::create();
    let buffer = MemoryBuffer::create_from_memory_range_copy(text.as_bytes(), "atomc_ptx");
    let module = context
        .create_module_from_ir(buffer)
        .map_err(|e| internal(format!("parsing the generated IR: {}", e.to_string_lossy())))?;
    module.verify().map_err(|e| internal(format!("verifying the generated IR: {}", e.to_string_lossy())))?;
    module
        .run_passes("default<O3>", &machine, PassBuilderOptions::create())
        .map_err(|e| internal(format!("optimizing: {}", e.to_string_lossy())))?;
    let ptx = machine
        .write_to_memory_buffer(&module, FileType::Assembly)
        .map_err(|e| internal(format!("emitting PTX: {}", e.to_string_lossy())))?;
    let ptx = String::from_utf8_lossy(ptx.as_slice()).trim_end_matches('\0').to_string();
    Ok(PtxModule { ptx, launches })
}

/// The `ptx_kernel` entry of `k`: the global thread index, the thread function, the error
/// flag.
fn entry_function(k: &Kernel, entry: &str) -> String {
    let n = k.inputs.len() + 1;
    let params: Vec<String> = (0..n).map(|i| format!("ptr %p{i}")).collect();
    let args: Vec<String> = (0..n).map(|i| format!("ptr %p{i}")).collect();
    format!(
        "define cc 71 void @{entry}({}, ptr %err) #0 {{
entry:
  %c = call i32 @llvm.nvvm.read.ptx.sreg.ctaid.x()
  %n = call i32 @llvm.nvvm.read.ptx.sreg.ntid.x()
  %t = call i32 @llvm.nvvm.read.ptx.sreg.tid.x()
  %c64 = zext i32 %c to i64
  %n64 = zext i32 %n to i64
  %t64 = zext i32 %t to i64
  %base = mul i64 %c64, %n64
  %gid = add i64 %base, %t64
  %code = call i32 @{entry}_thread({}, i64 %gid)
  %bad = icmp ne i32 %code, 0
  br i1 %bad, label %fail, label %done
fail:
  store volatile i32 %code, ptr %err, align 4
  ret void
done:
  ret void
}}
",
        params.join(", "),
        args.join(", ")
    )
}

impl Lower<'_> {
    /// The body of the thread function: output point `%gid` (see the module docs).
    fn gpu_point(&mut self) -> Result<()> {
        let k = self.k;
        let (reduce, body, epilogue) = self.compute_body("on the GPU")?;
        self.bases = (0..=k.inputs.len()).map(|i| format!("%p{i}")).collect();
        let r = self.declare_axes()?;
        let done = self.block("done");
        let points: i64 = self.extents[..r].iter().product();
        if points > 0 {
            if r > 0 {
                match self.range(&k.store) {
                    Some((lo, hi)) if lo >= 0 && hi < k.output.numel as i128 => {}
                    _ => return Err(self.invalid("the store index leaves the output buffer")),
                }
            }
            let inside = self.ins(format!("icmp ult i64 %gid, {points}"));
            let go = self.block("go");
            self.branch(&inside, &go, &done);
            self.start(&go);
            let mut rem = "%gid".to_string();
            for a in (0..r).rev() {
                let idx = if a == 0 {
                    rem.clone()
                } else {
                    let n = self.extents[a];
                    let idx = self.ins(format!("urem i64 {rem}, {n}"));
                    rem = self.ins(format!("udiv i64 {rem}, {n}"));
                    idx
                };
                let slot = self.axes[a].clone();
                self.write("i64", &idx, &slot);
            }
            self.point(*reduce, body, epilogue)?;
        }
        self.jump(&done);
        self.start(&done);
        self.emit("ret i32 0");
        for (e, blk) in std::mem::take(&mut self.err_blocks) {
            self.start(&blk);
            self.emit(format!("ret i32 {}", e as i32));
        }
        Ok(())
    }

    /// The point the output axes stand at: its reduction, epilogue and store.
    fn point(&mut self, reduce: Option<ReduceFn>, body: &Expr, epilogue: &Expr) -> Result<()> {
        let r = self.k.out_shape.len();
        self.cache.clear();
        let acc = match reduce {
            None => {
                self.live = r;
                self.expr(body)?
            }
            Some(f @ (ReduceFn::ArgMax | ReduceFn::ArgMin)) => self.arg_reduce(f, body)?,
            Some(f) => self.gpu_reduce(f, body)?,
        };
        self.live = r;
        self.cache.clear();
        self.acc = Some(acc);
        let (v, d) = self.expr(epilogue)?;
        self.acc = None;
        if d != self.k.output.dtype {
            return Err(self.invalid(format!("the epilogue gives {d}, the output is {}", self.k.output.dtype)));
        }
        let idx = self.affine(&self.k.store)?;
        let out = self.k.inputs.len();
        let addr = self.address(out, &idx, d);
        if d == DType::Bool {
            let byte = self.ins(format!("zext i1 {v} to i8"));
            self.emit(format!("store i8 {byte}, ptr {addr}, align 1"));
        } else {
            self.emit(format!("store {} {v}, ptr {addr}, align {}", memory_type(d), d.size()));
        }
        Ok(())
    }

    /// Reduction `f` of `body` over every reduction point, in order, one accumulator (a
    /// Sum of f32 products with `llvm.fma`).
    fn gpu_reduce(&mut self, f: ReduceFn, body: &Expr) -> Result<(String, DType)> {
        let r = self.k.out_shape.len();
        self.live = self.axes.len();
        let d = self.dtype_of(body)?;
        let ty = self.ty(d)?;
        let init = self.identity(f, d)?;
        if self.extents[r..].contains(&0) {
            return Ok((init, d));
        }
        let slot = self.slot(&ty);
        self.write(&ty, &init, &slot);
        let headers: Vec<String> = (r..self.axes.len()).map(|a| self.open_loop(a, "0")).collect();
        self.cache.clear();
        let next = match body {
            Expr::Binary(BinaryFn::Mul, x, y) if f == ReduceFn::Sum && d == DType::F32 => {
                let (x, _) = self.expr(x)?;
                let (y, _) = self.expr(y)?;
                let a = self.read(&ty, &slot);
                self.used_fma = true;
                self.intrinsic("fma", &ty, &[&x, &y, &a])
            }
            _ => {
                let (v, _) = self.expr(body)?;
                let a = self.read(&ty, &slot);
                self.combine(f, d, &a, &v)?
            }
        };
        self.write(&ty, &next, &slot);
        self.cache.clear();
        for (i, a) in (r..self.axes.len()).enumerate().rev() {
            let end = self.extents[a];
            self.close_loop(a, &headers[i], 1, end);
        }
        Ok((self.read(&ty, &slot), d))
    }
}

/// `k` under the GPU schedule `s` compiled for the host CPU with the GPU mapping kept:
/// the thread function wrapped in the host ABI (`i32 atomc_kernel(ptr buffers, i64 begin,
/// i64 end)`, parallel extent 1) runs every thread of the launch in order, `grid * block`
/// of them including those past the last point, and returns the first nonzero code. Tests
/// compare it with the evaluator: the GPU nest's semantics checked without a GPU.
pub fn emulate(k: &Kernel, s: &Schedule) -> std::result::Result<super::LlvmKernel, Error> {
    let internal = |msg: String| Error::Internal { kernel: k.name.clone(), msg };
    let host = super::HostTarget::detect().map_err(|e| Error::Unsupported { kernel: k.name.clone(), msg: format!("host not supported by LLVM: {e}") })?;
    let machine = host.machine().map_err(&internal)?;
    let layout = machine.get_target_data().get_data_layout();
    let text = emulation_module(k, s, host, &layout.as_str().to_string_lossy())?;
    let (engine, code) = super::jit(&k.name, &text, &machine, "default<O2>", OptimizationLevel::Default)?;
    Ok(super::LlvmKernel {
        name: k.name.clone(),
        inputs: k.inputs.clone(),
        output: k.output.clone(),
        _engine: engine,
        code,
        vectorized: false,
        fma: true,
        parallel_extent: 1,
    })
}

/// The host module of [`emulate`] (`host` triple, cpu and features, data layout `layout`).
fn emulation_module(k: &Kernel, s: &Schedule, host: &super::HostTarget, layout: &str) -> std::result::Result<String, Error> {
    let l = launch(k, s)?;
    let (thread, decls) = thread_function(k, "gpu")?;
    let threads = u64::from(l.grid) * u64::from(l.block);
    let n = k.inputs.len() + 1;
    let mut text = String::new();
    let _ = writeln!(text, "target datalayout = \"{layout}\"");
    let _ = writeln!(text, "target triple = \"{}\"", host.triple);
    text.push_str(&thread);
    let _ = writeln!(text, "define i32 @{}(ptr %buffers, i64 %begin, i64 %end) #0 {{\nentry:", super::FUNCTION);
    for i in 0..n {
        let _ = writeln!(text, "  %a{i} = getelementptr inbounds ptr, ptr %buffers, i64 {i}\n  %p{i} = load ptr, ptr %a{i}, align 8");
    }
    let args: Vec<String> = (0..n).map(|i| format!("ptr %p{i}")).collect();
    let _ = write!(
        text,
        "  br label %head
head:
  %g = phi i64 [ 0, %entry ], [ %g1, %next ]
  %more = icmp ult i64 %g, {threads}
  br i1 %more, label %body, label %done
body:
  %code = call i32 @gpu_thread({}, i64 %g)
  %bad = icmp ne i32 %code, 0
  br i1 %bad, label %fail, label %next
next:
  %g1 = add i64 %g, 1
  br label %head
fail:
  ret i32 %code
done:
  ret i32 0
}}
",
        args.join(", ")
    );
    for d in decls {
        let _ = writeln!(text, "{d}");
    }
    for g in ["#0", "#1"] {
        let _ = writeln!(text, "attributes {g} = {{ nounwind \"target-cpu\"=\"{}\" \"target-features\"=\"{}\" }}", host.cpu, host.features);
    }
    let _ = writeln!(text, "!0 = !{{!\"branch_weights\", i32 1, i32 2000}}");
    Ok(text)
}

/// The `ptxas` of the `nvidia-cuda-nvcc-cu12` wheel: `$ATOMC_PTXAS` when set, else the
/// wheel's binary in the first venv that has it: `$ATOMC_VENV`, `$ATOMC_CACHE/venv`.
/// `None` when there is none (a test then skips, saying why).
pub fn find_ptxas() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("ATOMC_PTXAS") {
        return Some(p.into());
    }
    let venvs = [std::env::var_os("ATOMC_VENV").map(std::path::PathBuf::from), std::env::var_os("ATOMC_CACHE").map(|c| std::path::Path::new(&c).join("venv"))];
    for venv in venvs.into_iter().flatten() {
        let Ok(dirs) = std::fs::read_dir(venv.join("lib")) else { continue };
        for d in dirs.flatten() {
            let p = d.path().join("site-packages/nvidia/cuda_nvcc/bin/ptxas");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Assembles PTX text `ptx` with `ptxas -arch=<gpu>` (the cubin is discarded); the error
/// is ptxas's output.
pub fn run_ptxas(ptxas: &std::path::Path, ptx: &str, gpu: &str) -> std::result::Result<(), String> {
    let dir = std::env::temp_dir().join(format!("atomc-ptxas-{}-{gpu}-{}", std::process::id(), PTXAS_RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let src = dir.join("module.ptx");
    std::fs::write(&src, ptx).map_err(|e| format!("writing {}: {e}", src.display()))?;
    let out = std::process::Command::new(ptxas)
        .arg(format!("-arch={gpu}"))
        .arg(&src)
        .arg("-o")
        .arg(dir.join("module.cubin"))
        .output()
        .map_err(|e| format!("running {}: {e}", ptxas.display()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ptxas -arch={gpu} failed ({}): {}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

/// Distinguishes the scratch folders of [`run_ptxas`] calls in one process.
static PTXAS_RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llvm::tests::{R, aff, buf, bytes, f32s, from_bytes, load, matmul};
    use ir::atom::UnaryFn;
    use ir::kernel::{Body, KGuard};
    use ir::schedule::ScheduleStep;
    use ir::tensor::Tensor;

    fn gpu(block: usize) -> Schedule {
        Schedule { steps: vec![ScheduleStep::GpuThreads { block }] }
    }

    /// The max of a padded window `x[i + j - 1]`, `j < 3` (padding -inf... here 0).
    fn window(n: usize) -> Kernel {
        let guard = KGuard { expr: aff(-1, &[1, 1]), bound: n as i64 };
        Kernel {
            name: "window".into(),
            inputs: vec![buf("x", DType::F32, n)],
            output: buf("y", DType::F32, n),
            out_shape: vec![n],
            red_shape: vec![3],
            store: aff(0, &[1]),
            body: Body::Compute {
                reduce: Some(ReduceFn::Max),
                body: Expr::Load { buf: 0, index: aff(-1, &[1, 1]), guards: vec![guard], pad: 0.0 },
                epilogue: Expr::Acc,
            },
        }
    }

    /// The index of the largest of each row of an `m x n` matrix (i64 output).
    fn argmax(m: usize, n: usize) -> Kernel {
        Kernel {
            name: "argmax".into(),
            inputs: vec![buf("x", DType::F32, m * n)],
            output: buf("i", DType::I64, m),
            out_shape: vec![m],
            red_shape: vec![n],
            store: aff(0, &[1]),
            body: Body::Compute { reduce: Some(ReduceFn::ArgMax), body: load(0, aff(0, &[n as i64, 1])), epilogue: Expr::Acc },
        }
    }

    /// `y[i] = x[pos[i]]` with positions from an i64 input (out of range: a run-time error).
    fn gather(n: usize, extent: usize) -> Kernel {
        Kernel {
            name: "gather".into(),
            inputs: vec![buf("x", DType::F32, extent), buf("pos", DType::I64, n)],
            output: buf("y", DType::F32, n),
            out_shape: vec![n],
            red_shape: vec![],
            store: aff(0, &[1]),
            body: Body::Compute {
                reduce: None,
                body: Expr::Gather { buf: 0, index: aff(0, &[0]), stride: 1, extent: extent as i64, pos: Box::new(load(1, aff(0, &[1]))) },
                epilogue: Expr::Acc,
            },
        }
    }

    /// Runs `k` under `s` emulated on the host and compares it with the evaluator.
    fn check(k: &Kernel, s: &Schedule, inputs: &[Tensor], tol: f64) -> R {
        let j = emulate(k, s)?;
        let data: Vec<Vec<u8>> = inputs.iter().map(bytes).collect();
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let mut out = vec![0u8; k.output.numel * k.output.dtype.size()];
        j.run(&refs, &mut out)?;
        let got = from_bytes(k.output.dtype, &out);
        let trefs: Vec<&Tensor> = inputs.iter().collect();
        let want = k.eval(&trefs)?.to_f64_vec();
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= tol * (1.0 + w.abs()), "'{}' with {s}: [{i}] got {g}, want {w}", k.name);
        }
        Ok(())
    }

    #[test]
    fn the_gpu_mapping_emulated_on_the_host_matches_the_evaluator() -> R {
        for &(m, kk, n) in &[(1, 1, 1), (5, 7, 3), (37, 29, 41)] {
            for block in [1, 32, 256] {
                check(&matmul(m, kk, n), &gpu(block), &[f32s(m * kk, 1), f32s(kk * n, 2)], 1e-5)?;
            }
        }
        for n in [1, 2, 33, 100] {
            check(&window(n), &gpu(32), &[f32s(n, 3)], 0.0)?;
        }
        check(&argmax(7, 13), &gpu(4), &[f32s(91, 4)], 0.0)?;
        let pos = Tensor::from_vec(vec![5], vec![3i64, 0, 1, 7, 2])?;
        check(&gather(5, 8), &gpu(2), &[f32s(8, 5), pos], 0.0)?;
        Ok(())
    }

    #[test]
    fn a_gather_out_of_range_is_a_run_time_error() -> R {
        let k = gather(3, 4);
        let j = emulate(&k, &gpu(32))?;
        let x = bytes(&f32s(4, 1));
        let pos = bytes(&Tensor::from_vec(vec![3], vec![0i64, 9, 1])?);
        let mut out = vec![0u8; 12];
        let e = j.run(&[&x, &pos], &mut out).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("run-time error"), "{e}");
        Ok(())
    }

    #[test]
    fn launches_cover_the_output_with_whole_blocks() -> R {
        assert_eq!(launch(&matmul(37, 29, 41), &gpu(256))?, Launch { grid: 6, block: 256 });
        assert_eq!(launch(&matmul(1, 1, 1), &gpu(32))?, Launch { grid: 1, block: 32 });
        let e = launch(&matmul(4, 4, 4), &Schedule::naive()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("does not map the kernel onto GPU threads"), "{e}");
        assert_eq!(entry_name("k3", "conv/1.relu"), "k3_conv_1_relu");
        Ok(())
    }

    #[test]
    fn ptx_has_one_entry_per_kernel_and_ptxas_accepts_it() -> R {
        let (mm, win, am, ga) = (matmul(37, 29, 41), window(100), argmax(7, 13), gather(5, 8));
        let s = gpu(128);
        let kernels: Vec<GpuKernel<'_>> = [&mm, &win, &am, &ga]
            .iter()
            .enumerate()
            .map(|(i, k)| GpuKernel { entry: entry_name(&format!("k{i}"), &k.name), kernel: k, schedule: &s })
            .collect();
        for gpu in GPUS {
            let m = compile_ptx(&kernels, gpu)?;
            assert_eq!(m.launches.len(), 4);
            for g in &kernels {
                assert!(m.ptx.contains(&format!(".entry {}(", g.entry)), "no entry {} in\n{}", g.entry, m.ptx);
            }
            assert!(m.ptx.contains(&format!(".target {gpu}")));
            assert!(m.ptx.contains("fma.rn.f32"));
            assert!(!m.ptx.contains(".extern"), "{}", m.ptx);
            match find_ptxas() {
                Some(p) => run_ptxas(&p, &m.ptx, gpu)?,
                None if std::env::var("ATOMC_REQUIRE_DATA").is_ok_and(|v| v == "1") => {
                    return Err("ptxas not found (set ATOMC_PTXAS or ATOMC_VENV) and ATOMC_REQUIRE_DATA=1".into());
                }
                None => eprintln!("skipping ptxas: not found (set ATOMC_PTXAS, ATOMC_VENV or ATOMC_CACHE)"),
            }
        }
        Ok(())
    }

    #[test]
    fn device_math_compiles_and_unsupported_dtypes_and_cpu_schedules_are_refused() -> R {
        // asin and f64 erf have device forms (no host helper); f16 is not an LLVM dtype.
        let with = |f: Expr| {
            let mut k = matmul(2, 2, 2);
            if let Body::Compute { epilogue, .. } = &mut k.body {
                *epilogue = f;
            }
            k
        };
        let s = gpu(32);
        let asin = with(Expr::Unary(UnaryFn::Asin, Box::new(Expr::Acc)));
        compile_ptx(&[GpuKernel { entry: "k0".into(), kernel: &asin, schedule: &s }], "sm_80")?;
        let wide = Expr::Cast(DType::F64, Box::new(Expr::Acc));
        let erf = with(Expr::Cast(DType::F32, Box::new(Expr::Unary(UnaryFn::Erf, Box::new(wide)))));
        compile_ptx(&[GpuKernel { entry: "k0".into(), kernel: &erf, schedule: &s }], "sm_80")?;
        let half = with(Expr::Cast(DType::F32, Box::new(Expr::Cast(DType::F16, Box::new(Expr::Acc)))));
        let e = compile_ptx(&[GpuKernel { entry: "k0".into(), kernel: &half, schedule: &s }], "sm_80").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("dtype f16 is not supported"), "{e}");
        let e = compile_ptx(&[GpuKernel { entry: "k0".into(), kernel: &matmul(2, 2, 2), schedule: &s }], "sm_70").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("unknown GPU 'sm_70'"), "{e}");
        Ok(())
    }
}
